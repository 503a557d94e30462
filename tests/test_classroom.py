"""A server under a class's load: starts wait their turn in line and say where they
stand, one past the line's end is a 429 with a Retry-After that the kernel's
client waits out on its own, and a start short of memory stops a preview nobody
uses first.  A real Jupyter server, real Vite dev servers in Docker.  Fairness
across users is in test_admission.py; a whole class on a hub is
benchmarks/classroom.py."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
import uuid

import pytest
from conftest import FIXTURES, LABEL, remove_owned, zip_dir
from tornado.httpclient import HTTPClientError

from jupyter_reactbox.backends.docker import DockerBackend
from jupyter_reactbox.kernel.client import ReactBoxClient

pytestmark = pytest.mark.docker

SLOW_START = b"""import react from '@vitejs/plugin-react'
import { defineConfig } from 'vite'

// Its dev server takes 8 s to listen (as a big app's first compile does).
const slow = {
  name: 'slow-start',
  async configureServer() {
    await new Promise((resolve) => setTimeout(resolve, 8000))
  },
}

export default defineConfig({ plugins: [react(), slow] })
"""


@pytest.mark.parametrize(
    "reactbox_config", [{"max_starts": 1, "max_queued": 2, "max_running": 0, "start_memory": ""}]
)
async def test_starts_wait_their_turn_and_one_past_the_line_is_told_when_to_come_back(
    api, jp_fetch, jp_serverapp, jp_base_url, server_url
):
    slow = zip_dir(FIXTURES / "vite-react", extra={"vite.config.js": SLOW_START})
    assert (await api.upload(slow, "first")).code == 201
    await api.wait("first", "starting")  # holds the one place to start
    for name in ("second", "third"):
        assert (await api.upload(zip_dir(FIXTURES / "vite-react"), name)).code == 201

    async def queued(name: str, position: int) -> dict:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = await api.get(name)
            if (info["queue"] or {}).get("position") == position:
                return info
            await asyncio.sleep(0.1)
        pytest.fail(f"{name} was never {position} in line: {info}")

    second, third = await queued("second", 1), await queued("third", 2)
    assert second["status"] == third["status"] == "starting"
    assert third["queue"] == {"kind": "start", "position": 2, "waiting": 2}
    assert third["detail"] == "waiting to start: 2nd of 2 in line"

    # One more: the line is full.  Nothing is made, and the answer says when to retry.
    with pytest.raises(HTTPClientError) as busy:
        await api.upload(zip_dir(FIXTURES / "vite-react"), "fourth")
    assert busy.value.code == 429
    assert 1 <= int(busy.value.response.headers["Retry-After"]) <= 120
    assert "2 are already waiting to start" in json.loads(busy.value.response.body)["message"]
    listed = json.loads((await jp_fetch("reactbox", "api", "projects")).body)["projects"]
    assert "fourth" not in [p["id"] for p in listed]

    # The kernel's client waits it out, and its upload goes through once there is room.
    client = ReactBoxClient(
        server_url + jp_base_url, jp_serverapp.identity_provider.token, timeout=30
    )
    fourth = await asyncio.to_thread(client.upload, zip_dir(FIXTURES / "vite-react"), "fourth")
    assert fourth.id == "fourth"

    for name in ("first", "second", "third", "fourth"):
        info = await api.wait(name, timeout=180)
        assert info["queue"] is None and "in line" not in (info["detail"] or "")


@pytest.mark.parametrize("reactbox_config", [{"max_running": 0, "start_memory": "300m"}])
async def test_a_start_short_of_memory_stops_an_unused_preview_first_then_waits(api, runtime):
    await api.upload_running(name="idle")  # no page has it open: unused
    memory = runtime.admission.memory
    host = memory.available()
    memory.per_start = host  # a start that would leave less than the reserve

    assert (await api.upload(zip_dir(FIXTURES / "vite-react"), "next")).code == 201
    idle = await api.wait("idle", "stopped", timeout=30)
    assert idle["detail"] == "Stopped to free memory for another preview's start."
    deadline = time.monotonic() + 30
    while not ((info := await api.get("next"))["queue"] or {}).get("kind") == "start":
        assert time.monotonic() < deadline, info
        await asyncio.sleep(0.1)
    assert info["status"] == "starting"
    assert "more memory free for it" in info["detail"], info

    memory.per_start = 300 << 20  # as much as a start takes: it goes on
    running = await api.wait("next", timeout=120)
    assert running["queue"] is None


async def test_a_class_worth_of_networks_fits_where_the_engines_own_pools_run_out(
    docker_client, tmp_path, sandbox_image
):
    """Each user has a network for previews and one for installs; the engine's default
    address pools hold about 30 networks, 15 users.  The backend makes its networks
    in its own range (``network_pool``), and 20 users' 40 fit, apart."""
    owners = [f"net{uuid.uuid4().hex[:6]}" for _ in range(20)]
    backends = [
        DockerBackend(owner=o, image=sandbox_image, cache_dir=str(tmp_path / o)) for o in owners
    ]
    try:
        for backend in backends:
            for role in ("previews", "fetch"):
                await backend.engine.ensure_network(
                    f"reactbox-{backend.owner}-{role}", internal=True
                )
        subnets = []
        for owner in owners:
            for network in docker_client.networks.list(filters={"label": f"{LABEL}.owner={owner}"}):
                network.reload()
                subnets += [
                    ipaddress.ip_network(c["Subnet"]) for c in network.attrs["IPAM"]["Config"]
                ]
        pool = ipaddress.ip_network(DockerBackend.network_pool.default_value)
        assert len(subnets) == 40 and all(s.subnet_of(pool) for s in subnets)
        assert len(set(subnets)) == 40  # none shared
    finally:
        for backend in backends:
            await backend.close()
        for owner in owners:
            remove_owned(docker_client, owner)
