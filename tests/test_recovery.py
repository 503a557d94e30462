"""A real Jupyter server process is killed and started again over its containers."""

from __future__ import annotations

import shutil
import signal
import time
import urllib.request

import pytest
from conftest import FIXTURES, LABEL, JupyterProcess, zip_dir

pytestmark = pytest.mark.docker


def labels(owner: str, project_id: str, role: str) -> dict[str, str]:
    return {f"{LABEL}.owner": owner, f"{LABEL}.project": project_id, f"{LABEL}.role": role}


def test_a_restarted_server_reattaches_cleans_up_and_stops_on_shutdown(
    tmp_path, owner, docker_client, package_cache, sandbox_image
):
    common = (f"--ReactBoxApp.cache_dir={package_cache}", f"--DockerBackend.image={sandbox_image}")
    server = JupyterProcess(tmp_path, owner, *common, "--ReactBoxApp.on_shutdown=keep").start()
    try:
        data = zip_dir(FIXTURES / "vite-react")
        for name in ("shop", "paused", "gone", "held"):
            server.upload(data, name)
        shop = server.wait("shop")
        paused = server.wait("paused")
        server.wait("gone")
        server.wait("held")
        server.call("POST", "reactbox/api/projects/paused/stop", b"")
        server.wait("paused", "stopped")
    finally:
        server.stop(signal.SIGKILL)  # a crash: the server cleans up nothing

    # Debris a crash or a second server can leave: a project deleted behind the
    # server's back, a second dev server for one project, an interrupted install.
    gone = tmp_path / "projects" / "gone"
    for _ in range(50):  # its dev server may still write (Vite re-optimizes as files go)
        shutil.rmtree(gone, ignore_errors=True)
        if not gone.exists():
            break
        time.sleep(0.1)
    for suffix, role in (("dup", "run"), ("install", "install")):
        docker_client.containers.run(
            sandbox_image,
            ["sleep", "600"],
            name=f"reactbox-{owner}-shop-{suffix}",
            labels=labels(owner, "shop", role),
            detach=True,
        )
    # And a container made ahead of an install the crash cut short: still held at
    # its gate, which only the server opens.
    (package_cache / "gates" / f"reactbox-{owner}-held" / "open").unlink()
    before = docker_client.containers.get(f"reactbox-{owner}-shop").id

    server = JupyterProcess(tmp_path, owner, *common).start()  # on_shutdown: stop
    try:
        again = server.project("shop")
        assert (again["status"], again["preview_url"]) == ("running", shop["preview_url"])
        kept = server.project("paused")
        assert (kept["status"], kept["preview_url"]) == ("stopped", paused["preview_url"])
        selector = {"label": f"{LABEL}.owner={owner}"}
        names = sorted(c.name for c in docker_client.containers.list(all=True, filters=selector))
        assert names == [f"reactbox-{owner}-paused", f"reactbox-{owner}-shop"]
        assert server.project("held")["status"] == "stopped"
        assert docker_client.containers.get(f"reactbox-{owner}-shop").id == before
        with urllib.request.urlopen(server.url + shop["preview_url"], timeout=30) as r:
            assert r.status == 200 and b'<div id="root">' in r.read()
    finally:
        server.stop()  # SIGTERM: a clean shutdown

    states = {c.name: c.status for c in docker_client.containers.list(all=True, filters=selector)}
    assert states == {f"reactbox-{owner}-paused": "exited", f"reactbox-{owner}-shop": "exited"}
