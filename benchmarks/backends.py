"""The local and Kubernetes backends beside the Docker one, in the same run:
upload -> rendered (a lockfile seen before), resume of a stopped preview ->
rendered, and a file written through the files API -> HMR update through the
preview proxy.

Real Jupyter servers with the extension, one per backend, Debian's chromium;
each server first installs the app once, so "seen before" means the same here
for all (its node_modules comes from the per-user cache).  The Kubernetes one
runs its pods on the single-node cluster of `.ci/kube` (skipped, and said so,
when that cluster is not up).  The ratios are to the Docker backend.

    python benchmarks/backends.py [--rounds 5] [--backends docker,local,kubernetes]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import subprocess
import time
from pathlib import Path

from harness import (
    FIXTURES,
    app_of,
    chromium,
    jupyter,
    next_update,
    parse_args,
    table,
    unique_manifest,
    vite_socket,
    wait_running,
    zip_dir,
)

BACKENDS = ("docker", "local", "kubernetes")
KUBECONFIG = Path("/var/lib/reactbox-kube/admin.kubeconfig")
KUBECTL = ["/var/cache/reactbox-kube/bin/kubectl", f"--kubeconfig={KUBECONFIG}"]


@contextlib.contextmanager
def backend_args(backend: str):
    """The server's options for ``backend`` (a namespace of its own on Kubernetes)."""
    if backend != "kubernetes":
        yield [f"--ReactBoxApp.backend={backend}", "--LocalBackend.sandbox=required"]
        return
    namespace = f"reactbox-bench-{secrets.token_hex(3)}"
    subprocess.run([*KUBECTL, "create", "namespace", namespace], check=True, capture_output=True)
    try:
        for _ in range(60):  # pods wait for the namespace's default service account
            got = [*KUBECTL, "get", "serviceaccount", "default", "-n", namespace]
            if subprocess.run(got, capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        yield [
            "--ReactBoxApp.backend=kubernetes",
            f"--KubernetesBackend.namespace={namespace}",
            f"--KubernetesBackend.kubeconfig={KUBECONFIG}",
            "--KubernetesBackend.pull_policy=Never",
            "--KubernetesBackend.proxy_address=10.244.0.1",
        ]
    finally:
        subprocess.run(
            [*KUBECTL, "delete", "namespace", namespace, "--wait=false"], capture_output=True
        )


def write_through_api(server, project: str, path: str) -> None:
    """Swap one word of a source file by the files API (where an edit writes)."""
    text = (app_of(server.root / "projects", project) / path).read_text()
    old, new = ("Count is", "Join Now") if "Count is" in text else ("Join Now", "Count is")
    body = text.replace(old, new).encode()
    server.call("PUT", f"reactbox/api/projects/{project}/files/{path}", body)


async def rendered(page, url: str) -> None:
    await page.goto(url)
    await page.wait_for_selector("text=Get started", timeout=120_000)


async def one_backend(backend: str, rounds: int, rows: dict[str, dict[str, list[float]]]):
    with backend_args(backend) as args, jupyter(*args) as server:
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
            for _ in range(30):  # until the dev server's watcher is ready
                write_through_api(server, "warm", "src/App.jsx")
                try:
                    await asyncio.wait_for(next_update(ws, time.perf_counter()), 2)
                    break
                except asyncio.TimeoutError:
                    continue
            else:
                raise SystemExit(f"{backend}: no HMR update reached the page's socket in 60 s")
            for _ in range(rounds * 4):
                await asyncio.sleep(0.3)
                started = time.perf_counter()
                write_through_api(server, "warm", "src/App.jsx")
                rows["file write -> HMR update through the proxy (s)"][backend].append(
                    await next_update(ws, started)
                )
            ws.close()


async def measure(rounds: int, backends: tuple[str, ...] = BACKENDS) -> None:
    rows: dict[str, dict[str, list[float]]] = {
        name: {backend: [] for backend in BACKENDS}
        for name in (
            "upload -> rendered, lockfile seen before (s)",
            "resume: a stopped preview's page load -> rendered (s)",
            "file write -> HMR update through the proxy (s)",
        )
    }
    cluster = await asyncio.to_thread(KUBECONFIG.exists)
    for backend in backends:
        if backend == "kubernetes" and not cluster:
            print("kubernetes: no cluster here (bash .ci/kube up makes one); not measured")
            continue
        await one_backend(backend, rounds, rows)
    for name, by_backend in rows.items():
        by_backend = {backend: xs for backend, xs in by_backend.items() if xs}
        unit = "ms" if "HMR" in name else "s"
        table(f"{name.removesuffix(' (s)')}: ratio to Docker", by_backend, "docker", unit=unit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="which to measure, Docker first (default: all three)",
    )
    args = parse_args(parser)
    chosen = tuple(b for b in args.backends.split(",") if b)
    if chosen[:1] != ("docker",) or not set(chosen) <= set(BACKENDS):
        parser.error(f"--backends: docker first, then any of {', '.join(BACKENDS[1:])}")
    asyncio.run(measure(args.rounds, chosen))


if __name__ == "__main__":
    main()
