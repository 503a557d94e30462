"""A real Jupyter server process is killed and started again over its containers."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from conftest import FIXTURES, LABEL, JupyterProcess, engine_name, store_of, zip_dir

pytestmark = pytest.mark.docker


def labels(owner: str, project_id: str, role: str, store: str) -> dict[str, str]:
    return {
        f"{LABEL}.owner": owner,
        f"{LABEL}.project": project_id,
        f"{LABEL}.role": role,
        f"{LABEL}.store": store,
    }


def test_a_restarted_server_reattaches_cleans_up_and_stops_on_shutdown(
    tmp_path, owner, docker_client, package_cache, sandbox_image
):
    projects_dir = tmp_path / "projects"
    common = (f"--ReactBoxApp.cache_dir={package_cache}", f"--DockerBackend.image={sandbox_image}")
    server = JupyterProcess(tmp_path, owner, *common, "--Runtime.on_shutdown=keep").start()
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
            name=engine_name(owner, projects_dir, f"shop-{suffix}"),
            labels=labels(owner, "shop", role, store_of(projects_dir)),
            detach=True,
        )
    # And a container made ahead of an install the crash cut short: still held at
    # its gate, which only the server opens.
    (package_cache / "gates" / engine_name(owner, projects_dir, "held") / "open").unlink()
    before = docker_client.containers.get(engine_name(owner, projects_dir, "shop")).id

    server = JupyterProcess(tmp_path, owner, *common).start()  # on_shutdown: stop
    try:
        again = server.project("shop")
        assert (again["status"], again["preview_url"]) == ("running", shop["preview_url"])
        kept = server.project("paused")
        assert (kept["status"], kept["preview_url"]) == ("stopped", paused["preview_url"])
        selector = {"label": f"{LABEL}.owner={owner}"}
        names = sorted(c.name for c in docker_client.containers.list(all=True, filters=selector))
        assert names == [engine_name(owner, projects_dir, n) for n in ("paused", "shop")]
        assert server.project("held")["status"] == "stopped"
        assert docker_client.containers.get(engine_name(owner, projects_dir, "shop")).id == before
        with urllib.request.urlopen(server.url + shop["preview_url"], timeout=30) as r:
            assert r.status == 200 and b'<div id="root">' in r.read()
    finally:
        server.stop()  # SIGTERM: a clean shutdown

    states = {c.name: c.status for c in docker_client.containers.list(all=True, filters=selector)}
    assert states == {engine_name(owner, projects_dir, n): "exited" for n in ("paused", "shop")}


def page(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Accept": "text/html"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_two_servers_of_one_user_with_two_folders_leave_each_other_alone(
    tmp_path, owner, docker_client, package_cache, sandbox_image
):
    """Two JupyterLabs of one user, started from two folders: the same project name in
    each, and the second killed and started again (its recovery runs) while the
    first's preview is in use."""
    common = (f"--ReactBoxApp.cache_dir={package_cache}", f"--DockerBackend.image={sandbox_image}")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = JupyterProcess(tmp_path / "a", owner, *common).start()
    second = JupyterProcess(tmp_path / "b", owner, *common, "--Runtime.on_shutdown=keep")
    try:
        data = zip_dir(FIXTURES / "vite-react")
        first.upload(data, "shop")
        shop = first.wait("shop")
        second.start()
        second.upload(data, "shop")
        theirs = second.wait("shop")
        assert first.engine_name("shop") != second.engine_name("shop")
        second.stop(signal.SIGKILL)
        second.start()  # recovers: its own preview is re-attached, the first's left alone
        assert second.project("shop")["preview_url"] == theirs["preview_url"]
        for server, info in ((first, shop), (second, theirs)):
            code, body = page(server.url + info["preview_url"])
            assert code == 200 and b'<div id="root">' in body, (server.url, code)
        selector = {"label": f"{LABEL}.owner={owner}", "name": "-shop$"}
        running = docker_client.containers.list(filters=selector)
        assert sorted(c.name for c in running) == sorted(
            s.engine_name("shop") for s in (first, second)
        )
        assert {c.labels[f"{LABEL}.store"] for c in running} == {
            store_of(s.root / "projects") for s in (first, second)
        }
    finally:
        second.stop()
        first.stop()


def test_a_second_server_of_one_folder_relays_to_the_first(
    tmp_path, owner, docker_client, package_cache, sandbox_image
):
    """Two servers of one user on one projects folder: the first manages it; the
    second (same base URL) shows the same projects and previews by relaying to it,
    runs nothing itself, and a third with another base URL says where they are."""
    common = (f"--ReactBoxApp.cache_dir={package_cache}", f"--DockerBackend.image={sandbox_image}")
    first = JupyterProcess(tmp_path, owner, *common).start()
    for name in ("second", "third"):  # the same folder, by another path
        (tmp_path / name).mkdir()
        (tmp_path / name / "projects").symlink_to(tmp_path / "projects")
    second = JupyterProcess(tmp_path / "second", owner, *common)
    third = JupyterProcess(tmp_path / "third", owner, *common, "--ServerApp.base_url=/x/")
    try:
        data = zip_dir(FIXTURES / "vite-react")
        first.upload(data, "shop")
        first.wait("shop")
        second.start()
        assert "managed by another Jupyter server" in second.log_text()
        # Seen from the second: the first's project, and an upload the first runs.
        listed = json.loads(second.call("GET", "reactbox/api/projects")[1])["projects"]
        assert [p["id"] for p in listed] == ["shop"]
        second.upload(data, "cart")
        cart = second.wait("cart")
        assert first.project("cart")["preview_url"] == cart["preview_url"]
        code, body = page(second.url + cart["preview_url"])  # relayed, link and all
        assert code == 200 and b'<div id="root">' in body
        selector = {"label": f"{LABEL}.owner={owner}"}
        names = sorted(c.name for c in docker_client.containers.list(filters=selector))
        assert [n for n in names if not n.endswith(".spare")] == [
            first.engine_name("cart"),
            first.engine_name("shop"),
        ]
        # Stopping the second stops nothing of the first's.
        second.stop()
        assert first.project("cart")["status"] == "running"
        assert page(first.url + cart["preview_url"])[0] == 200
        # Another base URL cannot be relayed to: it says where the projects are.
        third.url += "/x"
        third.start()
        code, body = third.call("GET", "reactbox/api/projects")
        assert code == 503
        message = json.loads(body)["message"]
        assert f"managed by the Jupyter server at {first.url}/" in message
    finally:
        third.stop()
        second.stop()
        first.stop()


def test_a_server_stopped_as_its_hub_stops_it_stops_its_previews_and_its_line_goes_on(
    tmp_path, owner, docker_client, package_cache, sandbox_image
):
    """JupyterHub's local spawner stops a server with SIGINT, then SIGTERM after
    ``interrupt_timeout`` (10 s), then SIGKILL after ``term_timeout`` (5 s): the
    server's previews stop as ``on_shutdown`` says before that.  A start that was
    under way, or waiting in line, goes on when the server comes back."""
    from test_classroom import SLOW_START

    args = (
        f"--ReactBoxApp.cache_dir={package_cache}",
        f"--DockerBackend.image={sandbox_image}",
        "--Admission.max_starts=1",
        "--Runtime.max_running=0",
    )
    server = JupyterProcess(tmp_path, owner, *args).start()
    selector = {"label": f"{LABEL}.owner={owner}"}
    try:
        server.upload(zip_dir(FIXTURES / "vite-react"), "shop")
        server.wait("shop")
        server.upload(
            zip_dir(FIXTURES / "vite-react", extra={"vite.config.js": SLOW_START}), "slow"
        )
        server.upload(zip_dir(FIXTURES / "vite-react"), "next")
        deadline = time.monotonic() + 60
        while (server.project("next")["queue"] or {}).get("kind") != "start":
            assert time.monotonic() < deadline, server.project("next")
            time.sleep(0.1)
        assert server.project("slow")["status"] == "starting"
    finally:
        began = time.monotonic()
        server.proc.send_signal(signal.SIGINT)  # as the spawner does
        try:
            server.proc.wait(10)
            took = "SIGINT"
        except subprocess.TimeoutExpired:
            server.proc.send_signal(signal.SIGTERM)
            server.proc.wait(5)  # else the spawner kills it: a failure here
            took = "SIGTERM"
        server.log.close()
    stopped = time.monotonic() - began
    print(f"stopped by {took} in {stopped:.1f} s")
    states = {c.name: c.status for c in docker_client.containers.list(all=True, filters=selector)}
    assert states and set(states.values()) == {"exited"}, states  # stopped, none left running

    server = JupyterProcess(tmp_path, owner, *args).start()
    try:
        # Nobody asks: the start under way and the one in line go on by themselves.
        for name in ("slow", "next"):
            assert server.wait(name, timeout=180)["queue"] is None
        assert server.project("shop")["status"] == "stopped"  # it ran: nobody asked again
        names = sorted(c.name for c in docker_client.containers.list(all=True, filters=selector))
        assert names == [server.engine_name(n) for n in ("next", "shop", "slow")]  # none leaked
    finally:
        server.stop()
