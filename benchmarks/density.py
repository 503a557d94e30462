"""How many idle previews one machine holds: memory per preview, N reached, and
the CPU idle previews use, running and frozen.

One real Jupyter server (max_running off) starts previews of the fixture app
one after another, each rendered once over HTTP, until --max or until a start
fails.  Memory is each container's cgroup usage less its inactive file cache
(what `docker stats` shows), side by side with a baseline container of the
same image and limits running an idle `node` and nothing else.  CPU is the
cgroups' CPU time over a window of --window seconds: first of the previews
still running, then once the server froze them all (freeze_timeout, here
--freeze seconds after their last use).

    python benchmarks/density.py [--max 16] [--freeze 60] [--window 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
import urllib.request

import docker
from harness import FIXTURES, jupyter, parse_args, zip_dir

from jupyter_reactbox.backends.docker import LABEL
from jupyter_reactbox.cli import DEFAULT_TAG


def memory(container) -> int:
    stats = container.stats(stream=False, one_shot=True)["memory_stats"]
    return stats["usage"] - stats.get("stats", {}).get("inactive_file", 0)


def cpu_seconds(containers) -> float:
    total = 0
    for c in containers:
        total += c.stats(stream=False, one_shot=True)["cpu_stats"]["cpu_usage"]["total_usage"]
    return total / 1e9


def cpu_use(containers, window: float) -> float:
    """Cores the containers used together over ``window`` seconds."""
    before = cpu_seconds(containers)
    time.sleep(window)
    return (cpu_seconds(containers) - before) / window


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=16)
    parser.add_argument("--freeze", type=float, default=60)
    parser.add_argument("--window", type=float, default=10)
    args = parse_args(parser)
    client = docker.from_env()
    data = zip_dir(FIXTURES / "vite-react")
    with jupyter(
        "--Runtime.max_running=0",
        "--Runtime.idle_timeout=0",
        f"--Runtime.freeze_timeout={args.freeze}",
    ) as server:
        reached, why, started = 0, f"--max {args.max}", time.perf_counter()
        for i in range(args.max):
            server.upload(data, f"p{i}")
            try:
                info = server.wait(f"p{i}", timeout=120)
            except AssertionError as exc:
                why = f"start {i + 1} failed: {exc}"
                break
            urllib.request.urlopen(server.url + info["preview_url"], timeout=60).read()
            reached = i + 1
        elapsed = time.perf_counter() - started
        time.sleep(3)  # let the dev servers settle to idle
        # By name: a preview that took the spare container has no project label.
        names = [server.engine_name(f"p{i}") for i in range(reached)]
        containers = [client.containers.get(name) for name in names]
        previews = [memory(c) for c in containers]
        awake = [c for i, c in enumerate(containers) if not server.project(f"p{i}")["frozen"]]
        running_cpu = cpu_use(awake, args.window)
        deadline = time.monotonic() + args.freeze + 60
        while not all(server.project(f"p{i}")["frozen"] for i in range(reached)):
            assert time.monotonic() < deadline, "the idle previews were not frozen"
            time.sleep(1)
        frozen_cpu = cpu_use(containers, args.window)
        frozen_memory = statistics.median(memory(c) for c in containers)
        baseline = client.containers.run(
            DEFAULT_TAG,
            ["node", "-e", "setInterval(() => {}, 1e9)"],
            labels={f"{LABEL}.owner": server.owner},
            read_only=True,
            user="1000:1000",
            init=True,
            detach=True,
        )
        time.sleep(2)
        bare = memory(baseline)
    per = statistics.median(previews)
    with open("/proc/meminfo") as f:
        available = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemAvailable"))
    print(f"\nidle previews: {reached} running ({why}); started in {elapsed:.1f} s")
    print(f"{'':34}{'memory':>10}{'ratio':>8}")
    print(f"{'idle node, nothing else (baseline)':34}{mib(bare):>10}{1:>7.2f}x")
    print(f"{'idle Vite preview (median)':34}{mib(per):>10}{per / bare:>7.2f}x")
    print(f"{'all previews together':34}{mib(sum(previews)):>10}")
    print(f"{'idle Vite preview, frozen (median)':34}{mib(frozen_memory):>10}")
    print(
        f"CPU of idle previews over {args.window:g} s: {len(awake)} running used "
        f"{running_cpu * 100:.2f}% of a core together "
        f"({running_cpu * 100 / max(len(awake), 1):.3f}% each); all {len(containers)} "
        f"frozen: {frozen_cpu * 100:.2f}%"
    )
    print(
        f"memory available now: {mib(available)}, room for about {int(available // per)} more "
        "at this size (each is capped by c.DockerBackend.memory_limit, 1 GiB by default)"
    )


if __name__ == "__main__":
    main()
