"""Upload -> first page rendered in headless Chromium, and stop -> rendered again.

One real Jupyter server with the extension, real Docker, Debian's chromium.
Three paths, side by side in one run; the ratios are to the first:

* new lockfile: a package.json no install has seen (npm ci runs, with the
  per-user package cache warm, as for any user after their first upload);
* seen-before lockfile: the same app uploaded again under a new name (its
  node_modules is copied from the cache; no install runs);
* resume: a stopped preview's page is loaded again (its kept container starts).

Goals on the 2-core reference machine: seen-before <= 1.5 s median, resume <= 1 s.

    python benchmarks/startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from harness import FIXTURES, chromium, jupyter, table, unique_manifest, wait_running, zip_dir


async def rendered(page, url: str) -> None:
    await page.goto(url)
    await page.wait_for_selector("text=Get started", timeout=120_000)


async def measure(rounds: int) -> None:
    rows: dict[str, list[float]] = {"new lockfile": [], "seen-before lockfile": [], "resume": []}
    with jupyter() as server:
        async with chromium() as browser:
            page = await browser.new_page()
            seen = zip_dir(FIXTURES / "vite-react", extra=unique_manifest("startup"))
            server.upload(seen, "warm")  # the lockfile that will be "seen before"
            await rendered(page, server.url + wait_running(server, "warm")["preview_url"])
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
                    await rendered(page, server.url + info["preview_url"])
                    rows[name].append(time.perf_counter() - started)
                    server.call("POST", f"reactbox/api/projects/{project}/stop", b"")
                    server.wait(project, "stopped")
                # Resume: load the page of a stopped preview (its container is kept).
                project = f"seen-before-{i}"
                url = server.url + server.project(project)["preview_url"]
                started = time.perf_counter()
                await rendered(page, url)
                rows["resume"].append(time.perf_counter() - started)
                server.call("POST", f"reactbox/api/projects/{project}/stop", b"")
                server.wait(project, "stopped")
    table(
        "upload (or page load) -> app rendered in chromium (s; ratio to a new lockfile)",
        rows,
        baseline="new lockfile",
        unit="s",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(measure(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
