"""File write -> HMR update, through our proxy and straight from the dev server.

One real Jupyter server with the extension and one Vite dev server in Docker.
Two HMR websockets are open at once, one through our preview proxy and one
to the container's own address (the baseline: no proxy at all); each round
writes a change to src/App.jsx and times the update's arrival on both.
Goal: median through our proxy <= 100 ms.

    python benchmarks/hmr.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import docker
from harness import (
    FIXTURES,
    app_of,
    jupyter,
    next_update,
    parse_args,
    table,
    toggle,
    vite_socket,
    wait_running,
    zip_dir,
)

from jupyter_reactbox.backends.docker import PORT


async def measure(rounds: int) -> None:
    with jupyter() as server:
        server.upload(zip_dir(FIXTURES / "vite-react"), "hmr")
        info = wait_running(server, "hmr")
        container = docker.from_env().containers.get(server.engine_name("hmr"))
        ip = container.attrs["NetworkSettings"]["Networks"][server.engine_name("previews")][
            "IPAddress"
        ]
        port = PORT
        ours = await vite_socket(server.url + info["preview_url"])
        direct = await vite_socket(f"http://{ip}:{port}{info['preview_url']}")
        app_jsx = app_of(server.root / "projects", "hmr") / "src" / "App.jsx"

        # Warm-up, not measured: the dev server answers HTTP before its file
        # watcher is ready; write until a first update comes through.
        for _ in range(30):
            toggle(app_jsx)
            try:
                await asyncio.wait_for(next_update(ours, time.perf_counter()), 2)
                await asyncio.wait_for(next_update(direct, time.perf_counter()), 2)
                break
            except asyncio.TimeoutError:
                continue
        rows: dict[str, list[float]] = {"direct from the dev server": [], "through our proxy": []}
        for _ in range(rounds):
            await asyncio.sleep(0.3)
            started = time.perf_counter()
            toggle(app_jsx)
            a, b = await asyncio.gather(next_update(direct, started), next_update(ours, started))
            rows["direct from the dev server"].append(a)
            rows["through our proxy"].append(b)
        table(
            f"file write -> HMR update received, {rounds} rounds (ms; ratio to direct)",
            rows,
            baseline="direct from the dev server",
        )
        ours.close()
        direct.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    asyncio.run(measure(parse_args(parser).rounds))


if __name__ == "__main__":
    main()
