"""App -> Python -> app: a call over the notebook bridge, against a plain fetch.

One real Jupyter server with the extension, the app's dev server, a kernel the
server started, and chromium showing the preview.  In the page, with the app's
own `reactbox` module: `await call('echo', 1)` (a small call) and a call whose
result is 1 MB of JSON, each against the baseline of a `fetch` of a static file
of the same preview (a small one, and one of 1 MB), no-store, in the same run.
Goal: a small call's median under 20 ms.

    python benchmarks/bridge.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
from pathlib import Path

from harness import FIXTURES, JupyterProcess, app_of, chromium, parse_args, table, zip_dir
from test_notebook import Kernel

TIMED = """async ({what, rounds}) => {
    const { call } = window.reactbox;
    const base = window.__reactbox.base;
    const run = {
        'small call': () => call('echo', 1),
        'small static file': () =>
            fetch(base + 'favicon.svg', {cache: 'no-store'}).then((r) => r.text()),
        '1 MB result': () => call('megabyte'),
        '1 MB static file': () =>
            fetch(base + 'megabyte.json', {cache: 'no-store'}).then((r) => r.json()),
    }[what];
    for (let i = 0; i < 5; i++) await run();  // warm
    const times = [];
    for (let i = 0; i < rounds; i++) {
        const t = performance.now();
        await run();
        times.push((performance.now() - t) / 1000);
    }
    return times;
}"""


async def measure(rounds: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="reactbox-bench-"))
    (tmp / "runtime").mkdir()
    server = JupyterProcess(
        tmp, "benchbridge", "--ReactBoxApp.backend=local",
        env={"JUPYTER_RUNTIME_DIR": str(tmp / "runtime")},
    )  # fmt: skip
    server.runtime_dir = tmp / "runtime"
    server.start()
    kernel = None
    try:
        server.upload(zip_dir(FIXTURES / "bridge-app"), "bench")
        info = server.wait("bench")
        megabyte = '["' + "x" * (1_000_000 - 4) + '"]'
        public = app_of(server.root / "projects", "bench") / "public" / "megabyte.json"
        public.write_text(megabyte)
        kernel = Kernel(server)
        status, out, _ = kernel.run(
            "from jupyter_reactbox.kernel.client import connect\n"
            "shop = connect().project('bench')\n"
            "shop.expose(lambda x: x, name='echo', concurrent=True)\n"
            f"big = [{'x' * (1_000_000 - 4)!r}]\n"
            "shop.expose(lambda: big, name='megabyte', concurrent=True)\n"
        )
        assert status == "ok", out
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(server.url + info["preview_url"])
            await page.wait_for_function(
                "window.reactbox && window.reactbox.connection().connected"
            )
            rows = {}
            for what in ("small static file", "small call", "1 MB static file", "1 MB result"):
                n = rounds if "small" in what else max(10, rounds // 10)
                rows[what] = await page.evaluate(TIMED, {"what": what, "rounds": n})
        table(
            "round trip in the page, app -> server -> (kernel ->) app (ms; ratio to the "
            "small static file)",
            rows,
            baseline="small static file",
        )
        small = statistics.median(rows["small call"]) * 1000
        large = statistics.median(rows["1 MB result"]) / statistics.median(rows["1 MB static file"])
        print(f"\nsmall call median {small:.1f} ms (goal: under 20 ms): "
              f"{'met' if small < 20 else 'NOT met'}; a 1 MB result takes {large:.2f}x "
              "a 1 MB static file")  # fmt: skip
    finally:
        if kernel is not None:
            kernel.close()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    asyncio.run(measure(parse_args(parser).rounds))


if __name__ == "__main__":
    main()
