"""The project folder and the container's output are hostile: files planted from inside a
running preview must not hang, bloat or stall the Jupyter server.  Throughout each
attack the server answers ``/api/status`` within a second."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time

import pytest
from test_attacks import get
from tornado.httpclient import HTTPClientError

pytestmark = pytest.mark.docker


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
    api, jp_fetch, runtime, docker_client, owner
):
    await api.upload_running()
    name = f"reactbox-{owner}-shop"
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
    api, jp_fetch, docker_client, owner, server_url
):
    info = await api.upload_running()
    container = docker_client.containers.get(f"reactbox-{owner}-shop")
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
    api, jp_fetch, docker_client, owner
):
    await api.upload_running()
    container = docker_client.containers.get(f"reactbox-{owner}-shop")
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
