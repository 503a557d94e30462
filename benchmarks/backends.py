"""The local backend beside the Docker one, in the same run: upload -> rendered
(a lockfile seen before), resume of a stopped preview -> rendered, and file
write -> HMR update through the preview proxy.

Two real Jupyter servers with the extension, one per backend, Debian's
chromium; each server first installs the app once, so "seen before" means the
same here for both (its node_modules comes from the per-user cache).  The
ratios are to the Docker backend.

    python benchmarks/backends.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from harness import (
    FIXTURES,
    chromium,
    jupyter,
    next_update,
    table,
    toggle,
    unique_manifest,
    vite_socket,
    wait_running,
    zip_dir,
)

BACKENDS = ("docker", "local")


async def rendered(page, url: str) -> None:
    await page.goto(url)
    await page.wait_for_selector("text=Get started", timeout=120_000)


async def one_backend(backend: str, rounds: int, rows: dict[str, dict[str, list[float]]]):
    with jupyter(f"--ReactBoxApp.backend={backend}", "--LocalBackend.sandbox=required") as server:
        async with chromium() as browser:
            page = await browser.new_page()
            seen = zip_dir(FIXTURES / "vite-react", extra=unique_manifest(backend))
            server.upload(seen, "warm")
            info = wait_running(server, "warm")
            assert info["backend"] == backend, info
            await rendered(page, server.url + info["preview_url"])
            for i in range(rounds):
                project = f"seen-{i}"
                started = time.perf_counter()
                server.upload(seen, project)
                info = wait_running(server, project)
                await rendered(page, server.url + info["preview_url"])
                rows["upload -> rendered, lockfile seen before (s)"][backend].append(
                    time.perf_counter() - started
                )
                server.call("POST", f"reactbox/api/projects/{project}/stop", b"")
                server.wait(project, "stopped")
                started = time.perf_counter()
                await rendered(page, server.url + info["preview_url"])
                rows["resume: a stopped preview's page load -> rendered (s)"][backend].append(
                    time.perf_counter() - started
                )
                server.call("POST", f"reactbox/api/projects/{project}/stop", b"")
                server.wait(project, "stopped")

            ws = await vite_socket(server.url + wait_running(server, "warm")["preview_url"])
            app_jsx = server.root / "projects" / "warm" / "app" / "src" / "App.jsx"
            for _ in range(30):  # until the dev server's watcher is ready
                toggle(app_jsx)
                try:
                    await asyncio.wait_for(next_update(ws, time.perf_counter()), 2)
                    break
                except asyncio.TimeoutError:
                    continue
            for _ in range(rounds * 4):
                await asyncio.sleep(0.3)
                started = time.perf_counter()
                toggle(app_jsx)
                rows["file write -> HMR update through the proxy (s)"][backend].append(
                    await next_update(ws, started)
                )
            ws.close()


async def measure(rounds: int) -> None:
    rows: dict[str, dict[str, list[float]]] = {
        name: {backend: [] for backend in BACKENDS}
        for name in (
            "upload -> rendered, lockfile seen before (s)",
            "resume: a stopped preview's page load -> rendered (s)",
            "file write -> HMR update through the proxy (s)",
        )
    }
    for backend in BACKENDS:
        await one_backend(backend, rounds, rows)
    for name, by_backend in rows.items():
        unit = "ms" if "HMR" in name else "s"
        table(f"{name.removesuffix(' (s)')}: ratio to Docker", by_backend, "docker", unit=unit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(measure(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
