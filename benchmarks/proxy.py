"""Preview proxy throughput: direct vs stock jupyter-server-proxy vs ours, one run.

One Jupyter server with the extension (and jupyter-server-proxy's own
``/proxy/<host>:<port>/`` route allowed to reach the container), one Vite dev
server in Docker, and ``wrk`` (Debian's package) asking for the same Vite
module — ``src/App.jsx``, transformed — through each path in turn, for
``--rounds`` rounds (interleaved, so a noisy moment of the machine falls on all
alike): straight to the dev server, through stock jupyter-server-proxy, through
ours (which answers the module from memory while the dev server says it is
unchanged), and through ours on a second server with that cache off
(``preview_cache=0``: every request to its dev server).  Prints the median
req/s and p50/p99 latency of each path, and the ratios of ours to stock (the
goal is >= 3x).

    python benchmarks/proxy.py [--rounds 3] [--seconds 5] [--connections 16]
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import docker

from jupyter_reactbox.backends.docker import PORT

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import (  # noqa: E402
    FIXTURES,
    engine_name,
    free_port,
    remove_owned,
    server_argv,
    zip_dir,
)
from harness import parse_args  # noqa: E402


def call(url: str, token: str, method: str = "GET", body: bytes | None = None, ctype=None):
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Authorization", f"token {token}")
    if ctype:
        request.add_header("Content-Type", ctype)
    with urllib.request.urlopen(request, timeout=60) as r:
        return r.status, r.read()


def wrk(url: str, seconds: int, connections: int, headers: dict[str, str]) -> dict:
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise SystemExit(f"{url} answered errors:\n{out}")

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": ms("50%"),
        "p99": ms("99%"),
    }


def start(tmp: Path, *extra: str) -> tuple[subprocess.Popen, int, str, str, dict]:
    """A Jupyter server with the fixture's preview running: (process, port, token,
    owner, project info)."""
    port, token, owner = free_port(), secrets.token_hex(16), f"bench{secrets.token_hex(3)}"
    (tmp / owner).mkdir()
    server = subprocess.Popen(
        server_argv(port, token, tmp / owner, owner, f"--config={tmp / 'config.py'}", *extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/reactbox/api/projects"
    for _ in range(100):
        try:
            call(api, token)
            break
        except OSError:
            time.sleep(0.2)
    call(f"{api}?name=bench", token, "POST", zip_dir(FIXTURES / "vite-react"), "application/zip")
    while (info := json.loads(call(f"{api}/bench", token)[1]))["status"] not in (
        "running",
        "failed",
    ):
        time.sleep(0.2)
    assert info["status"] == "running", info
    return server, port, token, owner, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    args = parse_args(parser)
    if not shutil.which("wrk"):
        raise SystemExit("needs wrk: apt-get install -y wrk")

    tmp = Path(tempfile.mkdtemp(prefix="reactbox-proxy-bench-"))
    (tmp / "config.py").write_text(
        # Let stock jupyter-server-proxy reach Docker's bridge addresses.
        "c.ServerProxy.host_allowlist = lambda handler, host: host.count('.') == 3\n"
    )
    client = docker.from_env()
    servers: list[tuple[subprocess.Popen, str]] = []
    try:
        server, port, token, owner, info = start(tmp)
        servers.append((server, owner))
        # The same proxy with its response cache off: every request to the dev server.
        uncached = start(tmp, "--Runtime.preview_cache=0")
        servers.append((uncached[0], uncached[3]))
        container = client.containers.get(engine_name(owner, tmp / owner / "projects", "bench"))
        networks = container.attrs["NetworkSettings"]["Networks"]
        ip = networks[engine_name(owner, tmp / owner / "projects", "previews")]["IPAddress"]
        dev = PORT
        module = f"{info['preview_url']}src/App.jsx"
        paths = {
            "direct to the dev server": (f"http://{ip}:{dev}{module}", {}),
            "stock jupyter-server-proxy": (
                f"http://127.0.0.1:{port}/proxy/{ip}:{dev}{module}",
                {"Authorization": f"token {token}"},
            ),
            "jupyter-reactbox proxy": (f"http://127.0.0.1:{port}{module}", {}),
            "ours, preview_cache=0": (
                f"http://127.0.0.1:{uncached[1]}{uncached[4]['preview_url']}src/App.jsx",
                {},
            ),
        }
        for url, headers in paths.values():  # warm up: Vite transforms once, then caches
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60).read()
        runs: dict[str, list[dict]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, (url, h) in paths.items():
                runs[name].append(wrk(url, args.seconds, args.connections, h))
        results = {
            name: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99")}
            for name, rs in runs.items()
        }
        print(
            f"GET {module.rsplit('/', 1)[-1]} (a transformed Vite module), "
            f"{args.connections} connections, median of {args.rounds} rounds of "
            f"{args.seconds} s each"
        )
        print(f"{'':30}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
        for name, r in results.items():
            print(f"{name:30}{r['rps']:>9.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}")
        stock = results["stock jupyter-server-proxy"]
        for name, label in (
            ("jupyter-reactbox proxy", "ours/stock"),
            ("ours, preview_cache=0", "ours without its cache/stock"),
        ):
            ours = results[name]
            per_round = [
                o["rps"] / s["rps"]
                for o, s in zip(runs[name], runs["stock jupyter-server-proxy"], strict=True)
            ]
            print(
                f"ratio {label}: {ours['rps'] / stock['rps']:.2f}x req/s "
                f"(rounds: {', '.join(f'{r:.2f}x' for r in per_round)}), "
                f"{stock['p50'] / ours['p50']:.2f}x lower p50 (goal: >= 3x req/s)"
            )
    finally:
        for server, owner in servers:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
            remove_owned(client, owner)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
