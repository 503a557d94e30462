"""An agent's call of an MCP tool, against the same call of the REST API.

One real Jupyter server with the extension; the `mcp` SDK's own client, over
streamable HTTP (`reactbox/mcp`) and over stdio (`jupyter reactbox mcp`).  Each
tool call is timed against the REST call it makes (a file read; a file write,
which is one commit), from the same machine, in the same run.  What a tool adds
is the JSON-RPC round and the loopback call of the API.

    python benchmarks/mcp_tools.py [--rounds 100]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests
from harness import JupyterProcess, parse_args, table, zip_dir
from test_mcp import SMALL_APP, over_http, over_stdio


async def timed(rounds: int, run) -> list[float]:
    for _ in range(3):  # warm
        await run(0)
    times = []
    for n in range(rounds):
        t = time.perf_counter()
        await run(n)
        times.append(time.perf_counter() - t)
    return times


async def measure(rounds: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="reactbox-bench-"))
    app = tmp / "app"
    for path, text in SMALL_APP.items():
        (app / path).parent.mkdir(parents=True, exist_ok=True)
        (app / path).write_text(text)
    server = JupyterProcess(tmp, "benchmcp", "--ReactBoxApp.backend=local").start()
    try:
        server.upload(zip_dir(app), "bench")
        server.wait("bench")
        server.call("POST", "reactbox/api/projects/bench/stop")  # quiet while timed
        rest = requests.Session()
        rest.headers["Authorization"] = f"token {server.token}"
        files = f"{server.url}/reactbox/api/projects/bench/files/src/App.jsx"

        def text(n: int) -> str:
            return f"export default function App() {{\n  return <h1>Round {n}</h1>\n}}\n"

        def note(n: int) -> str:
            """Writes go round ten files: two writes of one file are spaced 150 ms
            apart (worktree.WATCH_GAP, for Vite's watcher), which is not the cost."""
            return f"src/Note{n % 10}.jsx"

        def write(n: int) -> dict:
            return {"project": "bench", "path": note(n), "content": text(n)}

        async def rest_get(n):
            r = await asyncio.to_thread(rest.get, files)
            assert r.status_code == 200

        async def rest_put(n):
            url = files.replace("src/App.jsx", note(n))
            r = await asyncio.to_thread(rest.put, url, data=text(n).encode())
            assert r.status_code == 200, r.text

        rows = {"REST: GET the file": await timed(rounds, rest_get)}
        writes = {"REST: PUT the file (a commit)": await timed(rounds, rest_put)}
        url = f"{server.url}/reactbox/mcp"
        async with over_http(url, server.token) as http:
            rows["MCP read_file, streamable HTTP"] = await timed(
                rounds,
                lambda n: http.call_tool("read_file", {"project": "bench", "path": "src/App.jsx"}),
            )
            writes["MCP write_file, streamable HTTP"] = await timed(
                rounds, lambda n: http.call_tool("write_file", write(-n))
            )
        async with over_stdio(server.url + "/", server.token, cwd=tmp) as stdio:
            rows["MCP read_file, stdio"] = await timed(
                rounds,
                lambda n: stdio.call_tool("read_file", {"project": "bench", "path": "src/App.jsx"}),
            )
            writes["MCP write_file, stdio"] = await timed(
                rounds, lambda n: stdio.call_tool("write_file", write(n + 1000))
            )
        table("a file read (ms; ratio to the REST call)", rows, "REST: GET the file")
        table("a file write, one commit each (ms; ratio to the REST call)", writes,
              "REST: PUT the file (a commit)")  # fmt: skip
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    args = parse_args(parser)
    sys.exit(asyncio.run(measure(args.rounds)))


if __name__ == "__main__":
    main()
