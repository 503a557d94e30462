"""Attacks on a running preview: the dev server's own file-reading paths, and bombs
inside the container.  The Jupyter server must stay healthy throughout."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from conftest import FIXTURES, zip_dir
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

pytestmark = pytest.mark.docker

SECRET = "s3cr3t-from-dot-env"


@pytest.fixture
def reactbox_config():
    # Small bounds so the bombs hit them quickly.
    return {"memory_limit": "256m", "pids_limit": 128}


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

    conn = await websocket_connect(_request(ws_url, {"Origin": "null"}), subprotocols=["vite-hmr"])
    assert json.loads(await conn.read_message())["type"] == "connected"
    for target in ("/.env", "/@fs/project/.env", "/@fs/etc/passwd", "/.env?raw??"):
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


async def test_fork_and_memory_bombs_stop_at_the_limits(api, docker_client, owner, jp_fetch):
    info = await api.upload_running()
    container = docker_client.containers.get(f"reactbox-{owner}-shop")

    def run(cmd: str):
        return container.exec_run(["sh", "-c", cmd], demux=False)

    # Fork bomb (bounded in time): forks fail at the pids limit.
    result = await asyncio.to_thread(
        run, "i=0; while [ $i -lt 400 ]; do sleep 3 & i=$((i+1)); done 2>&1 | tail -1"
    )
    out = result.output.decode()
    assert "Cannot fork" in out or "Resource temporarily unavailable" in out, out
    assert container.attrs["HostConfig"]["PidsLimit"] == 128
    status = json.loads((await jp_fetch("api", "status")).body)
    assert "started" in status  # the Jupyter server answers

    # Memory bomb: the kernel's OOM killer ends it inside the container's cgroup.
    bomb = "const a = []; for (;;) a.push(Buffer.alloc(32 << 20, 1));"
    result = await asyncio.to_thread(run, f"exec node -e '{bomb}'")
    assert result.exit_code == 137, result  # SIGKILL from the OOM killer
    status = json.loads((await jp_fetch("api", "status")).body)
    assert "started" in status
    # The preview runs again (the dev server survived, or was restarted).
    await asyncio.sleep(4)
    assert (await api.wait(info["id"], "running", through=["failed"]))["status"] == "running"
