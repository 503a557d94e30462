"""How well and how fast model answers become a hot-reloaded preview.

Part 1, the corpus (tests/edit_corpus.py: recorded answers with the usual
flaws): the share our applier gets right, the share it refuses correctly, and
the share it applies wrongly (must be 0), side by side with a baseline that
only accepts an exact, fenced, well-formed answer (``str.replace`` of SEARCH).

Part 2, answer -> HMR update: a real Jupyter server with the extension, a
real Vite dev server in Docker, the scripted OpenAI-compatible server; the
time from POSTing an instruction (the model answers at once) to the HMR
``update`` message on the preview's websocket through our proxy, median and
p95, side by side with a plain file write -> HMR update on the same server.

    python benchmarks/edit_apply.py [--rounds 20] [--corpus-only]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import docker  # noqa: E402
from conftest import FIXTURES, app_of, free_port, remove_owned, server_argv, zip_dir  # noqa: E402
from edit_corpus import CASES, outcome  # noqa: E402
from harness import next_update, parse_args, pct, toggle, vite_socket  # noqa: E402
from llm import ScriptedLLM  # noqa: E402
from tornado.httpclient import AsyncHTTPClient  # noqa: E402


def baseline(case) -> tuple[str, str | None]:
    """An exact-match applier: the answer's first block, SEARCH replaced verbatim."""
    m = re.search(
        r"^(\S+)\n```\w*\n<<<<<<< SEARCH\n(.*?)\n=======\n(.*?)\n>>>>>>> REPLACE\n```",
        case.answer,
        flags=re.S | re.M,
    )
    if not m or case.original is None or m.group(1) != case.path:
        return "refused", None
    search, replace = m.group(2), m.group(3)
    if case.original.count(search) != 1:
        return "refused", None
    return "applied", case.original.replace(search, replace, 1)


def score(results) -> dict:
    should_apply = [(c, r) for c, r in results if c.expected is not None]
    should_refuse = [(c, r) for c, r in results if c.expected is None]
    right = sum(1 for c, (kind, out) in should_apply if kind == "applied" and out == c.expected)
    refused = sum(1 for c, (kind, _) in should_refuse if kind == "refused")
    wrong = sum(
        1
        for c, (kind, out) in results
        if kind == "applied" and (c.expected is None or out != c.expected)
    )
    return {
        "applied correctly": right / len(should_apply),
        "refused correctly": refused / len(should_refuse),
        "applied wrongly": wrong / len(results),
    }


def corpus() -> None:
    ours, base = [], []
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            ours.append((case, outcome(case, Path(tmp))))
        base.append((case, baseline(case)))
    a, b = score(ours), score(base)
    print(
        f"corpus: {len(CASES)} recorded answers "
        f"({sum(c.expected is not None for c in CASES)} to apply, "
        f"{sum(c.expected is None for c in CASES)} to refuse)"
    )
    print(f"{'':22}{'ours':>8}{'exact-match baseline':>24}{'ratio':>8}")
    for key in a:
        ratio = f"{a[key] / b[key]:.2f}x" if b[key] else "-"
        print(f"{key:22}{a[key]:>8.0%}{b[key]:>24.0%}{ratio:>8}")
    assert a["applied wrongly"] == 0, "a wrong application is a bug"


async def hmr_timing(rounds: int) -> None:
    llm = ScriptedLLM()
    llm.start()
    port, token = free_port(), secrets.token_hex(16)
    tmp = Path(tempfile.mkdtemp(prefix="reactbox-bench-"))
    owner = f"bench{secrets.token_hex(3)}"
    server = await asyncio.create_subprocess_exec(
        *server_argv(
            port,
            token,
            tmp,
            owner,
            "--ServerApp.base_url=/a%40b/",
            f"--AIEditor.base_url={llm.base_url}",
            "--AIEditor.api_key=bench",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    http = AsyncHTTPClient()
    base = f"http://127.0.0.1:{port}/a%40b/reactbox/api/projects"
    auth = {"Authorization": f"token {token}"}
    try:
        for _ in range(100):
            try:
                if (await http.fetch(base, headers=auth, raise_error=False)).code == 200:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.2)
        await http.fetch(
            f"{base}?name=bench",
            method="POST",
            headers={**auth, "Content-Type": "application/zip"},
            body=zip_dir(FIXTURES / "vite-react"),
        )
        while True:
            info = json.loads((await http.fetch(f"{base}/bench", headers=auth)).body)
            if info["status"] in ("running", "failed"):
                break
            await asyncio.sleep(0.2)
        assert info["status"] == "running", info
        ws = await vite_socket(f"http://127.0.0.1:{port}{info['preview_url']}")
        app_jsx = app_of(tmp / "projects", "bench") / "src" / "App.jsx"
        words = ("Count is", "Join Now")

        def until_update(started: float):
            return next_update(ws, started)

        # Warm-up, not measured: the dev server answers HTTP before its file
        # watcher is ready; write until a first update comes through.
        for _ in range(30):
            toggle(app_jsx, words)
            try:
                await asyncio.wait_for(until_update(time.perf_counter()), 2)
                break
            except asyncio.TimeoutError:
                continue
        await asyncio.sleep(0.3)
        ai, direct = [], []
        for i in range(rounds):
            # Baseline: a plain write of the same change.
            text = app_jsx.read_text()
            old, new = (words[0], words[1]) if words[0] in text else (words[1], words[0])
            started = time.perf_counter()
            app_jsx.write_text(text.replace(old, new))
            direct.append(await until_update(started))
            await asyncio.sleep(0.3)
            # Ours: instruction -> model answer -> parse, check, write, commit, compile.
            old, new = new, old
            line = next(ln for ln in app_jsx.read_text().splitlines() if old in ln)
            llm.answer(
                f"src/App.jsx\n```jsx\n<<<<<<< SEARCH\n{line}\n=======\n"
                f"{line.replace(old, new)}\n>>>>>>> REPLACE\n```"
            )
            started = time.perf_counter()
            update = asyncio.ensure_future(until_update(started))
            r = await http.fetch(
                f"{base}/bench/edits",
                method="POST",
                headers=auth,
                body=json.dumps({"instruction": f"round {i}"}),
            )
            assert json.loads(r.body)["status"] == "applied", r.body
            ai.append(await update)
            await asyncio.sleep(0.3)
        print(f"\nanswer -> HMR update through the proxy, {rounds} rounds (ms)")
        print(f"{'':28}{'median':>8}{'p95':>8}")
        for name, xs in (("AI edit (ours)", ai), ("plain file write (baseline)", direct)):
            print(f"{name:28}{statistics.median(xs) * 1000:>8.0f}{pct(xs, 95) * 1000:>8.0f}")
        ratio = statistics.median(ai) / statistics.median(direct)
        print(f"ratio ours/baseline (median): {ratio:.2f}x")
        ws.close()
        await http.fetch(f"{base}/bench", method="DELETE", headers=auth)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        await server.wait()
        llm.stop()
        remove_owned(docker.from_env(), owner)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--corpus-only", action="store_true")
    args = parse_args(parser)
    corpus()
    if not args.corpus_only:
        asyncio.run(hmr_timing(args.rounds))


if __name__ == "__main__":
    main()
