"""Attacks on a running preview: the dev server's own file-reading paths, and bombs
inside the container.  The Jupyter server must stay healthy throughout."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import urllib.request

import pytest
from conftest import FIXTURES, JupyterProcess, engine_name, zip_dir
from llm import ThreadedLLM
from test_edits import BUTTON, JOIN_NOW, block
from test_notebook import Kernel
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

pytestmark = pytest.mark.docker

SECRET = "s3cr3t-from-dot-env"


@pytest.fixture
def docker_config(request, docker_client):
    """Small bounds so the bombs hit them quickly; the runtime by parameter."""
    runtime = getattr(request, "param", "runc")
    if runtime == "runsc" and "runsc" not in docker_client.info().get("Runtimes", {}):
        pytest.fail("gVisor is not registered with Docker: see .ci/setup.")
    bounds = {"memory_limit": "256m", "pids_limit": 128}
    return bounds if runtime == "runc" else {**bounds, "runtime": "runsc"}


async def get(url: str):
    r = await AsyncHTTPClient().fetch(url, raise_error=False, request_timeout=30)
    return r.code, r.body or b""


async def test_dev_server_file_probes_are_denied(api, server_url):
    data = zip_dir(
        FIXTURES / "vite-react", extra={".env": f"VITE_NOT_SECRET=1\nSECRET={SECRET}\n".encode()}
    )
    r = await api.upload(data, "shop")
    info = await api.wait(json.loads(r.body)["id"])
    preview = server_url + info["preview_url"]
    probes = [
        "@fs/etc/passwd",
        "@fs/etc/passwd?raw",
        "@fs/etc/passwd?import&raw??",
        "@fs/proc/self/environ?raw??",
        ".env",
        ".env?raw",
        ".env?raw??",
        ".env?import&raw??",
        ".env?url&inline",
        "@fs/project/.env?raw??",
        "src/../.env?raw",
        "%2e%2e/%2e%2e/etc/passwd",
        "node_modules/../.env?raw",
    ]
    for probe in probes:
        code, body = await get(preview + probe)
        assert code in (400, 403, 404), (probe, code, body[:200])
        assert SECRET.encode() not in body and b"root:x:0:0" not in body, probe
    # The app still works: the probes did not break it.
    code, body = await get(preview)
    assert code == 200 and b'<div id="root">' in body


async def test_hmr_websocket_cannot_read_files(api, server_url):
    """Anyone with the link can fetch Vite's socket token from /@vite/client and
    send `vite:invoke`; in the browser environment Vite refuses `fetchModule`, so
    no file is read past its fs checks.  A socket from another site is refused."""
    data = zip_dir(FIXTURES / "vite-react", extra={".env": f"SECRET={SECRET}\n".encode()})
    r = await api.upload(data, "shop")
    info = await api.wait(json.loads(r.body)["id"])
    preview = server_url + info["preview_url"]
    _, client_js = await get(preview + "@vite/client")
    token = re.search(rb'const wsToken = "([^"]+)"', client_js).group(1).decode()
    ws_url = preview.replace("http://", "ws://") + f"?token={token}"

    with pytest.raises(HTTPClientError) as err:
        await websocket_connect(
            _request(ws_url, {"Origin": "https://evil.example"}), subprotocols=["vite-hmr"]
        )
    assert err.value.code == 403

    # The sandboxed page's own socket (Origin: null), and one with no Origin at all
    # (a script, not a browser: the case of GHSA-p9ff-h696-f583, file:// with ?raw).
    targets = (
        "/.env",
        "/@fs/project/.env",
        "/@fs/etc/passwd",
        "/.env?raw??",
        "file:///project/.env?raw",
        "file:///etc/passwd?raw",
        "file:///etc/passwd?inline",
    )
    for headers in ({"Origin": "null"}, {}):
        conn = await websocket_connect(_request(ws_url, headers), subprotocols=["vite-hmr"])
        assert json.loads(await conn.read_message())["type"] == "connected"
        for target in targets:
            invoke = {"name": "fetchModule", "id": f"send:{target}", "data": [target]}
            await conn.write_message(
                json.dumps({"type": "custom", "event": "vite:invoke", "data": invoke})
            )
            reply = await asyncio.wait_for(conn.read_message(), 10)
            assert SECRET not in reply and "root:x:0:0" not in reply, reply[:300]
            assert json.loads(reply)["data"]["data"]["error"], reply[:300]
        conn.close()


def _request(url: str, headers: dict) -> HTTPRequest:
    return HTTPRequest(url, headers=headers, connect_timeout=10, request_timeout=10)


FORK_BOMB = "i=0; while [ $i -lt 400 ]; do sleep 3 & i=$((i+1)); done 2>&1 | tail -1"
MEMORY_BOMB = "exec node -e 'const a = []; for (;;) a.push(Buffer.alloc(32 << 20, 1));'"


@pytest.mark.parametrize("docker_config", ["runc", "runsc"], indirect=True)
async def test_fork_and_memory_bombs_stop_at_the_limits(
    api,
    docker_client,
    owner,
    jp_fetch,
    docker_config,
    server_url,
    projects_dir,
):
    info = await api.upload_running()
    container = docker_client.containers.get(engine_name(owner, projects_dir, "shop"))
    assert container.attrs["HostConfig"]["PidsLimit"] == 128
    assert container.attrs["HostConfig"]["Memory"] == 256 << 20

    async def server_answers() -> None:
        status = json.loads((await jp_fetch("api", "status")).body)
        assert "started" in status

    def run(cmd: str):
        return container.exec_run(["sh", "-c", cmd], demux=False)

    if "runtime" not in docker_config:
        # runc: the bombs fail inside the container's cgroup, which lives on.
        out = (await asyncio.to_thread(run, FORK_BOMB)).output.decode()
        assert "Cannot fork" in out or "Resource temporarily unavailable" in out, out
        await server_answers()
        result = await asyncio.to_thread(run, MEMORY_BOMB)
        assert result.exit_code == 137, result  # SIGKILL from the OOM killer
        await server_answers()
        await asyncio.sleep(4)  # the dev server survived, or is restarted
        assert (await api.wait(info["id"], "running", through=["failed"]))["status"] == "running"
        return

    # gVisor: the whole sandbox is the unit the host bounds, so a bomb ends it (a
    # fork bomb at the pids limit, a memory bomb by the host's OOM killer). The
    # server answers throughout, and its crash watcher starts the preview again.
    for bomb, killed_for_memory in ((FORK_BOMB, False), (MEMORY_BOMB, True)):
        started = container.attrs["State"]["StartedAt"]
        container.exec_run(["sh", "-c", bomb], detach=True)
        for _ in range(240):
            await server_answers()
            container.reload()
            if not container.attrs["State"]["Running"]:
                break
            await asyncio.sleep(0.25)
        state = container.attrs["State"]
        assert not state["Running"] and state["OOMKilled"] is killed_for_memory, state
        for _ in range(240):
            await server_answers()
            container.reload()
            back = container.attrs["State"]
            project = await api.get(info["id"])
            if back["Running"] and back["StartedAt"] != started and project["status"] == "running":
                break
            await asyncio.sleep(0.25)
        else:
            pytest.fail(f"the preview did not come back: {project}")
        code, body = await get(server_url + project["preview_url"])
        assert code == 200 and b'<div id="root">' in body, project


async def test_the_screenshot_browser_reaches_nothing_but_the_preview(
    api, jp_fetch, jp_serverapp, runtime, server_url
):
    """A screenshot for the model (``c.AIEditor.vision``) runs the app's page in a headless
    Chromium on the server's host.  The page calls this host's services (a port on
    loopback, by address and by name; an image; a websocket): in a person's browser
    those calls go out, in the screenshot's browser none does, and the picture is
    still taken (through the server's own preview proxy, its only way out)."""
    from conftest import chromium

    from jupyter_reactbox.ai import vision

    hits: list[str] = []

    async def record(reader, writer):
        hits.append((await reader.readline()).decode(errors="replace").strip())
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(record, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        info = await api.upload_running()
        app = (runtime.store.get("shop").app_dir / "src" / "App.jsx").read_text()
        calls = (
            f"for (const u of ['http://127.0.0.1:{port}/fetch', 'http://localhost:{port}/name'])\n"
            "  fetch(u, { mode: 'no-cors' }).catch(() => {})\n"
            f"try {{ new WebSocket('ws://127.0.0.1:{port}/socket') }} catch {{}}\n\n"
        )
        tried = app.replace("function App() {", calls + "function App() {", 1).replace(
            "<h1>Get started</h1>",
            f'<h1>Get started</h1><img src="http://127.0.0.1:{port}/img" alt="" />',
        )
        await jp_fetch("reactbox", "api", "projects", "shop", "files", "src", "App.jsx",
                       method="PUT", body=tried.encode())  # fmt: skip

        ext = next(iter(jp_serverapp.extension_manager.extension_apps["jupyter_reactbox"]))
        assert ext._own_url() == server_url  # what an edit's screenshot goes through
        browser = vision.find_browser()
        shot = await runtime.views.screenshot("shop", browser, via=ext._own_url())
        assert shot.mime == "image/png" and len(shot.data) > 10_000
        await asyncio.sleep(1)
        assert hits == [], hits  # nothing reached the host's port

        async with chromium() as person:  # the same page, in a person's browser
            page = await person.new_page()
            await page.goto(server_url + info["preview_url"])
            await page.get_by_text("Get started").wait_for()
            for _ in range(40):
                if len(hits) >= 3:
                    break
                await asyncio.sleep(0.25)
        assert {h.split()[1] for h in hits} >= {"/fetch", "/name", "/img"}, hits
    finally:
        listener.close()


def test_secrets_reach_no_container_kernel_browser_or_log(
    tmp_path, owner, package_cache, sandbox_image, docker_client
):
    """The LLM key (given the usual way, as $OPENAI_API_KEY) and Jupyter's token, after
    an upload, an install, a running preview and an applied AI edit."""
    llm = ThreadedLLM()
    llm.start()
    key = f"sk-reactbox-{secrets.token_hex(16)}"
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    server = JupyterProcess(
        tmp_path,
        owner,
        f"--ReactBoxApp.cache_dir={package_cache}",
        f"--DockerBackend.image={sandbox_image}",
        "--AIEditor.model=scripted",
        env={
            "OPENAI_API_KEY": key,
            "OPENAI_BASE_URL": llm.base_url,
            "JUPYTER_RUNTIME_DIR": str(runtime),
        },
    )
    server.runtime_dir = runtime
    server.start()
    kernel = None
    try:
        shop = server.wait(server.upload(zip_dir(FIXTURES / "vite-react"), "shop")["id"])
        llm.answer(block("src/App.jsx", BUTTON, JOIN_NOW))
        edits = "reactbox/api/projects/shop/edits"
        status, body = server.call(
            "POST", edits, json.dumps({"instruction": "Join Now"}).encode(), "application/json"
        )
        assert status == 200 and json.loads(body)["status"] == "applied", body
        assert llm.requests[0]["authorization"] == f"Bearer {key}"  # the key is in use
        hidden = (key, server.token)

        def assert_hidden(where: str, text: str | bytes) -> None:
            text = text.decode(errors="replace") if isinstance(text, bytes) else text
            for secret in hidden:
                assert secret not in text, f"a secret in {where}"

        # Containers: their whole spec, and the environment inside.
        selector = {"label": f"org.jupyter.reactbox.owner={owner}"}
        containers = docker_client.containers.list(all=True, filters=selector)
        assert containers
        for container in containers:
            assert_hidden(f"the spec of {container.name}", json.dumps(container.attrs))
            environ = container.exec_run(["cat", "/proc/1/environ"]).output
            assert b"PATH=" in environ
            assert_hidden(f"the environment of {container.name}", environ)

        # A kernel the server started: its environment and what it can print.
        kernel = Kernel(server)
        status, out, _ = kernel.run("import os, json; print(json.dumps(dict(os.environ)))")
        assert status == "ok", out
        assert "JUPYTER_REACTBOX_URL" in json.loads(out)  # this is the kernel's environment
        assert "OPENAI_API_KEY" not in json.loads(out)
        assert_hidden("the kernel's environment", out)

        # What a browser can get: every API answer, the preview and its scripts.
        api = "reactbox/api/projects"
        for path in (
            api,
            f"{api}/shop",
            f"{api}/shop/logs",
            f"{api}/shop/edits",
            f"{api}/shop/history",
            f"{api}/shop/diff",
            f"{api}/shop/files",
            f"{api}/shop/files/src/App.jsx",
        ):
            status, body = server.call("GET", path)
            assert status == 200, (path, body)
            assert_hidden(path, body)
        page = urllib.request.urlopen(server.url + shop["preview_url"], timeout=30).read()
        scripts = re.findall(rb'src="([^"]+\.js[^"]*)"', page)
        assert scripts
        for src in scripts:
            url = src.decode() if src.startswith(b"http") else server.url + src.decode()
            assert_hidden(src.decode(), urllib.request.urlopen(url, timeout=30).read())
        assert_hidden("the preview page", page)

        # Logs: the install's, the dev server's (above) and the server's own.
        assert_hidden("install.log", (tmp_path / "projects/shop/install.log").read_bytes())
        assert key not in server.log_text()
        ours = [line for line in server.log_text().splitlines() if "ReactBoxApp" in line]
        assert ours and not [line for line in ours if server.token in line]
    finally:
        if kernel is not None:
            kernel.close()
        server.stop()
        llm.stop()
