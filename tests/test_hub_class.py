"""A class on a real JupyterHub while its parts fail: the service restarts with a
start under way and another in line, the Docker engine restarts, a dev server is
OOM-killed, a user's server is culled, the disk fills.  After each, every preview
comes back (or says why), no project's files or history are lost, no container or
network is left over, and queued work goes on.  Two users (Alice and Bob, real
Unix users) stand for the class; benchmarks/classroom.py is the class at size."""

from __future__ import annotations

import asyncio
import errno
import json
import shutil
import subprocess
import time

import pytest
from conftest import FIXTURES, LABEL, remove_owned, zip_dir
from test_attacks import MEMORY_BOMB
from test_classroom import SLOW_START
from test_faults import start_engine
from test_hub import DOCKER_ARGS, Hub, dev_server, fetch

pytestmark = [pytest.mark.docker, pytest.mark.browser, pytest.mark.hub]

CLASS_ARGS = (
    *DOCKER_ARGS,
    "--Admission.max_starts=1",
    "--Runtime.max_running=3",
    "--Runtime.max_restarts=10",
    "--ReactBoxApp.disk_limits=check",
)
MARK = "Edited before the faults"


@pytest.fixture
def class_hub(tmp_path, hub_python, sandbox_image, docker_client, hub_llm, request):
    """A hub whose service keeps its data on a disk of its own (a 2 GiB tmpfs), so
    that it can be filled."""
    if not shutil.which("configurable-http-proxy"):
        pytest.fail("These tests need configurable-http-proxy")
    data = tmp_path / "reactbox"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g", "tmpfs", str(data)], check=True)
    h = Hub(tmp_path, hub_python, sandbox_image, hub_llm, service_args=CLASS_ARGS)
    yield h
    if getattr(request.node, "rep_call", None) and request.node.rep_call.failed:
        print(h.logs())
    h.stop()
    for user in (h.alice, h.bob):
        remove_owned(docker_client, user)
    subprocess.run(["umount", "--lazy", str(data)], check=False)


class Student:
    def __init__(self, hub: Hub, name: str, token: str):
        self.hub, self.name, self.token = hub, name, token

    def url(self, *parts: str) -> str:
        return f"{self.hub.url}/user/{self.name}/reactbox/api/" + "/".join(parts)

    async def call(self, method: str, *parts: str, body=None, ctype="application/json"):
        r = await fetch(
            self.url(*parts),
            method=method,
            body=body,
            headers={"Authorization": f"token {self.token}", "Content-Type": ctype},
            allow_nonstandard_methods=True,
        )
        return r.code, (json.loads(r.body) if r.body and ctype != "text/plain" else r.body)

    async def upload(self, name: str, extra: dict[str, bytes] | None = None) -> int:
        data = zip_dir(FIXTURES / "vite-react", extra=extra)
        r = await fetch(
            self.url("projects") + f"?name={name}",
            method="POST",
            body=data,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/zip"},
        )
        return r.code

    async def info(self, name: str) -> dict:
        return (await self.call("GET", "projects", name))[1]

    async def until(self, name: str, check, what: str, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                info = await self.info(name)
            except (OSError, ValueError):  # the service restarting
                info = None
            if info and check(info):
                return info
            await asyncio.sleep(0.25)
        raise AssertionError(f"{self.name}'s {name} never {what}: {info}")

    async def running(self, name: str, timeout: float = 180) -> dict:
        return await self.until(name, lambda i: i["status"] == "running", "ran", timeout)

    async def page(self, name: str, timeout: float = 180) -> int:
        """The status of the preview's page once it answers 200, as a person's reload
        gets it (a dev server gone with its engine answers 502 until the service's
        watcher has seen it and started it again); the last status otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            info = await self.running(name, timeout)
            r = await fetch(self.hub.url + info["preview_url"], headers={"Accept": "text/html"})
            if r.code == 200 or time.monotonic() > deadline:
                return r.code
            await asyncio.sleep(1)

    async def kept(self, name: str) -> tuple[str, int]:
        """(App.jsx as it is, how many changes its timeline holds)."""
        code, text = await self.call(
            "GET", "projects", name, "files", "src/App.jsx", ctype="text/plain"
        )
        assert code == 200, text
        code, history = await self.call("GET", "projects", name, "history")
        return text.decode(), len(history["commits"])


def fill(path) -> None:
    """Write ``path`` until its disk is full."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (4 << 20))
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def engine_objects(docker_client, owners) -> tuple[set[str], set[str]]:
    """The names of the containers and networks of these owners; each owner's spare
    (a container made ahead for their next start, at most one) is left out."""
    containers, networks = set(), set()
    for owner in owners:
        selector = {"label": f"{LABEL}.owner={owner}"}
        names = {c.name for c in docker_client.containers.list(all=True, filters=selector)}
        spares = {n for n in names if n.endswith(".spare")}
        assert len(spares) <= 1, spares
        containers |= names - spares
        networks |= {n.name for n in docker_client.networks.list(filters=selector)}
    return containers, networks


async def test_a_class_on_the_hub_keeps_everything_through_its_faults(class_hub, docker_client):
    hub = class_hub
    await hub.ready()
    alice = Student(hub, hub.alice, await hub.start_server(hub.alice))
    bob = Student(hub, hub.bob, await hub.start_server(hub.bob))
    class_ = (alice, bob)
    for s in class_:
        assert await s.upload("shop") == 201
    for s in class_:
        await s.running("shop")
        text = (await s.kept("shop"))[0].replace("Get started", f"{MARK} by {s.name}")
        code, _ = await s.call(
            "PUT", "projects", "shop", "files", "src/App.jsx", body=text, ctype="text/plain"
        )
        assert code == 200
    kept = {s.name: await s.kept("shop") for s in class_}

    # 1. The service restarts with Alice's start under way and Bob's waiting in line.
    assert await alice.upload("slow", {"vite.config.js": SLOW_START}) == 201
    await alice.until("slow", lambda i: i["status"] == "starting" and not i["queue"], "started")
    assert await bob.upload("blog") == 201
    await bob.until("blog", lambda i: (i["queue"] or {}).get("kind") == "start", "waited")
    await hub.restart_service()
    for s, name in ((alice, "slow"), (bob, "blog"), (alice, "shop"), (bob, "shop")):
        assert await s.page(name) == 200, name  # nobody asked again
    objects = engine_objects(docker_client, (hub.alice, hub.bob))
    assert len(objects[0]) == 4, objects  # one container per project, nothing else

    # 2. The Docker engine restarts: the dev servers die with it and come back.
    await asyncio.to_thread(subprocess.run, ["pkill", "-KILL", "-x", "dockerd"], check=True)
    await asyncio.to_thread(start_engine, docker_client)
    for s, name in ((alice, "slow"), (bob, "blog"), (alice, "shop"), (bob, "shop")):
        assert await s.page(name) == 200, name
    assert engine_objects(docker_client, (hub.alice, hub.bob)) == objects

    # 3. Bob's dev server is the one the OOM killer takes: it is started again.
    container = await asyncio.to_thread(dev_server, docker_client, hub.bob, "shop")
    before = (await bob.info("shop"))["restarts"]
    since = time.time()
    # (Every process of the container but the bomb first in the OOM killer's line.)
    first = 'for p in /proc/[0-9]*; do [ "$p" = /proc/$$ ] || echo 1000 >$p/oom_score_adj; done; '
    ran = await asyncio.to_thread(container.exec_run, ["sh", "-c", first + MEMORY_BOMB])
    await bob.until(
        "shop", lambda i: i["restarts"] > before and i["status"] == "running", "restarted"
    )
    happened = await asyncio.to_thread(
        lambda: {
            e["status"]
            for e in docker_client.events(
                since=since, until=time.time(), filters={"container": container.id}, decode=True
            )
        }
    )
    assert {"oom", "die"} <= happened, (ran, happened)  # the dev server's container died of it
    assert await bob.page("shop") == 200
    assert await alice.page("shop") == 200

    # 4. The hub culls Bob's server: his previews are the service's, and wait for him.
    code, _ = await hub.api("DELETE", f"users/{hub.bob}/server")
    assert code in (202, 204)
    for _ in range(120):
        _, user = await hub.api("GET", f"users/{hub.bob}")
        if not user["servers"]:
            break
        await asyncio.sleep(0.5)
    bob.token = await hub.start_server(hub.bob)
    assert await bob.page("shop") == 200

    # 5. The disk fills: an upload and an edit are refused with 507, nothing is lost,
    # and with room again both work.
    filler = hub.data_dir / "filler"
    await asyncio.to_thread(fill, filler)
    try:
        assert await alice.upload("more") == 507
        text = (await alice.kept("shop"))[0]
        code, body = await alice.call(
            "PUT",
            "projects",
            "shop",
            "files",
            "src/App.jsx",
            body=text + "\n// more",
            ctype="text/plain",
        )
        assert code == 507, body
    finally:
        filler.unlink()
    assert await alice.upload("more") == 201
    assert await alice.page("more") == 200

    # Through it all: every file and every change kept, nothing left over.
    for s in class_:
        assert await s.kept("shop") == kept[s.name]
        assert f"{MARK} by {s.name}" in kept[s.name][0]
    containers, networks = engine_objects(docker_client, (hub.alice, hub.bob))
    assert containers == objects[0] | {c for c in containers if c.endswith("-more")}
    assert len(containers) == 5 and networks == objects[1], (containers, networks)
