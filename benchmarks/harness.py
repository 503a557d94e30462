"""What the benchmarks share: a Jupyter server process with the extension, a
Vite HMR websocket, and printing figures with their ratio to a baseline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import docker  # noqa: E402
from conftest import (  # noqa: E402
    FIXTURES,
    JupyterProcess,
    app_of,
    chromium,
    free_port,
    quiet_interfaces,
    remove_owned,
    zip_dir,
)
from tornado.httpclient import AsyncHTTPClient, HTTPRequest  # noqa: E402
from tornado.websocket import WebSocketClientConnection, websocket_connect  # noqa: E402

__all__ = ["FIXTURES", "JupyterProcess", "app_of", "chromium", "free_port", "zip_dir"]


@contextlib.contextmanager
def jupyter(*extra: str, port: int | None = None) -> Iterator[JupyterProcess]:
    """A fresh server (own folder, own owner label), everything removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="reactbox-bench-"))
    server = JupyterProcess(tmp, f"bench{secrets.token_hex(3)}", *extra, port=port)
    try:
        with quiet_interfaces():
            yield server.start()
    finally:
        server.stop()
        remove_owned(docker.from_env(), server.owner)
        shutil.rmtree(tmp, ignore_errors=True)


def unique_manifest(note: str) -> dict[str, bytes]:
    """The fixture's package.json made unique: a lockfile-fingerprint no cache has seen."""
    manifest = json.loads((FIXTURES / "vite-react" / "package.json").read_text())
    manifest["description"] = f"{note} {secrets.token_hex(4)}"
    return {"package.json": json.dumps(manifest, indent=2).encode()}


def wait_running(server: JupyterProcess, project_id: str, poll: float = 0.02) -> dict:
    while (info := server.project(project_id))["status"] not in ("running", "failed"):
        time.sleep(poll)
    assert info["status"] == "running", info
    return info


async def vite_socket(preview: str, headers: dict | None = None) -> WebSocketClientConnection:
    """The HMR websocket of the Vite dev server at ``preview`` (an http URL of its
    base), after loading the app's modules as a browser would (Vite only sends
    updates for modules a client imported)."""
    http = AsyncHTTPClient()
    for module in ("src/main.jsx", "src/App.jsx"):
        await http.fetch(preview + module, headers=headers)
    client_js = (await http.fetch(f"{preview}@vite/client", headers=headers)).body.decode()
    ws_token = re.search(r'const wsToken = "([^"]+)"', client_js).group(1)
    return await websocket_connect(
        HTTPRequest(
            preview.replace("http://", "ws://") + f"?token={ws_token}",
            headers={"Sec-WebSocket-Protocol": "vite-hmr", **(headers or {})},
        ),
        subprotocols=["vite-hmr"],
    )


async def next_update(ws: WebSocketClientConnection, started: float, timeout: float = 30) -> float:
    """Seconds from ``started`` (perf_counter) to the next HMR update on ``ws``."""

    while True:
        try:
            raw = await asyncio.wait_for(ws.read_message(), timeout)
        except asyncio.TimeoutError:
            raise asyncio.TimeoutError(f"no HMR update within {timeout:g} s") from None
        if raw is None:
            raise ConnectionError("the HMR socket closed")
        msg = json.loads(raw)
        if msg.get("type") in ("update", "full-reload"):
            return time.perf_counter() - started


def toggle(path: Path, words: tuple[str, str] = ("Count is", "Join Now")) -> None:
    """Swap one word of a source file for another: a change every time."""
    text = path.read_text()
    old, new = words if words[0] in text else words[::-1]
    path.write_text(text.replace(old, new))


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def table(title: str, rows: dict[str, list[float]], baseline: str, unit: str = "ms") -> None:
    """Median and p95 of each row (seconds in, ``unit`` out) and each median's ratio
    to the baseline row's."""
    scale, digits = (1000, 0) if unit == "ms" else (1, 2)
    print(f"\n{title}")
    print(f"{'':38}{'n':>4}{'median':>9}{'p95':>9}{'ratio':>8}")
    base = statistics.median(rows[baseline])
    for name, xs in rows.items():
        med = statistics.median(xs)
        print(
            f"{name:38}{len(xs):>4}{med * scale:>9.{digits}f}{pct(xs, 95) * scale:>9.{digits}f}"
            f"{med / base:>7.2f}x"
        )


def parse_args(parser) -> object:
    """The arguments, and when any is smaller than its default (as CI runs them, to
    stay within its time), a line that says how to run the benchmark in full."""
    args = parser.parse_args()
    changed = [
        f"--{a.dest.replace('_', '-')} {getattr(args, a.dest)}"
        for a in parser._actions
        if a.dest != "help" and a.default is not None and getattr(args, a.dest) != a.default
    ]
    if changed:
        script = Path(sys.argv[0]).name
        print(
            f"(a smaller run: {' '.join(changed)}; in full: python benchmarks/{script})",
            flush=True,
        )
    return args
