"""Upload -> first page rendered in headless Chromium, and page loads of a
running, a frozen and a stopped preview -> rendered.

One real Jupyter server with the extension, real Docker, Debian's chromium.
Two tables, each with its baseline from the same run:

* uploads, against a new lockfile: a package.json no install has seen (npm ci
  runs, with the per-user package cache warm, as for any user after their
  first upload); a seen-before lockfile is the same app uploaded again under a
  new name (its node_modules is copied from the cache; no install runs);
* page loads, against a load of the running preview: of a frozen preview (it
  was unused for ``freeze_timeout``: its container is paused and wakes with
  the request) and of a stopped one (its kept container starts again).

Goals on the 2-core reference machine: seen-before <= 1.2 s median; a page load
of a frozen preview <= 1.3x one of a running preview.

    python benchmarks/startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from harness import FIXTURES, chromium, jupyter, table, unique_manifest, wait_running, zip_dir

FREEZE = 2
"""freeze_timeout (s) of the server under test: short, so the rounds are too."""


async def rendered(page, url: str) -> None:
    await page.goto(url)
    await page.wait_for_selector("text=Get started", timeout=120_000)


async def timed(page, url: str) -> float:
    started = time.perf_counter()
    await rendered(page, url)
    return time.perf_counter() - started


def until(server, project: str, ok, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ok(server.project(project)):
        assert time.monotonic() < deadline, server.project(project)
        time.sleep(0.05)


async def measure(rounds: int) -> None:
    uploads: dict[str, list[float]] = {"new lockfile": [], "seen-before lockfile": []}
    loads: dict[str, list[float]] = {
        "running preview": [],
        "frozen preview (wakes)": [],
        "stopped preview (resumes)": [],
    }
    with jupyter(f"--ReactBoxApp.freeze_timeout={FREEZE}") as server:
        async with chromium() as browser:
            page = await browser.new_page()
            seen = zip_dir(FIXTURES / "vite-react", extra=unique_manifest("startup"))
            server.upload(seen, "warm")  # the lockfile that will be "seen before"
            await rendered(page, server.url + wait_running(server, "warm")["preview_url"])
            server.call("POST", "reactbox/api/projects/warm/stop", b"")
            for i in range(rounds):
                for name, data in (
                    (
                        "new lockfile",
                        zip_dir(FIXTURES / "vite-react", extra=unique_manifest("new")),
                    ),
                    ("seen-before lockfile", seen),
                ):
                    project = f"{name.split()[0]}-{i}"
                    started = time.perf_counter()
                    server.upload(data, project)
                    info = wait_running(server, project)
                    url = server.url + info["preview_url"]
                    await rendered(page, url)
                    uploads[name].append(time.perf_counter() - started)
                    if name == "new lockfile":
                        server.call("POST", f"reactbox/api/projects/{project}/stop", b"")
                        server.wait(project, "stopped")
                        continue
                    # The same page loaded again: running, then frozen, then stopped.
                    loads["running preview"].append(await timed(page, url))
                    until(server, project, lambda p: p["frozen"])
                    loads["frozen preview (wakes)"].append(await timed(page, url))
                    server.call("POST", f"reactbox/api/projects/{project}/stop", b"")
                    server.wait(project, "stopped")
                    loads["stopped preview (resumes)"].append(await timed(page, url))
                    server.call("POST", f"reactbox/api/projects/{project}/stop", b"")
                    server.wait(project, "stopped")
    table(
        "upload -> app rendered in chromium (s; ratio to a new lockfile; goal: seen-before "
        "<= 1.2 s)",
        uploads,
        baseline="new lockfile",
        unit="s",
    )
    table(
        "page load -> app rendered in chromium (s; ratio to a running preview; goal: "
        "frozen <= 1.3x)",
        loads,
        baseline="running preview",
        unit="s",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(measure(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
