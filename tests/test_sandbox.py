"""Probes run inside a real project container: who it runs as and what it can reach."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import FIXTURES, engine_name, zip_dir
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from jupyter_reactbox.backends.docker import PORT

pytestmark = pytest.mark.docker

CONNECT = """
const net = require('net');
const [host, port] = process.argv.slice(1);
const s = net.connect({host, port: Number(port), timeout: 3000});
s.on('connect', () => { console.log('CONNECTED'); process.exit(0); });
s.on('timeout', () => { console.log('TIMEOUT'); process.exit(1); });
s.on('error', (e) => { console.log('ERROR ' + e.code); process.exit(1); });
"""


def run(container, *argv: str) -> tuple[int, str]:
    code, out = container.exec_run(list(argv))
    return code, out.decode(errors="replace").strip()


def connect(container, host: str, port: int) -> str:
    return run(container, "node", "-e", CONNECT, host, str(port))[1]


@pytest.fixture(params=["runc", "runsc"])
def docker_config(request, docker_client):
    """The same probes under Docker's default runtime and under gVisor."""
    if request.param == "runsc" and "runsc" not in docker_client.info().get("Runtimes", {}):
        pytest.fail(
            "gVisor is not registered with Docker: apt-get install runsc and add it to "
            "/etc/docker/daemon.json (`.ci/setup` does both)"
        )
    return {} if request.param == "runc" else {"runtime": "runsc"}


async def test_container_is_hardened_and_isolated(
    api, docker_client, owner, jp_http_port, projects_dir
):
    await api.upload_running(name="shop")
    await api.upload_running(name="other")
    shop = docker_client.containers.get(engine_name(owner, projects_dir, "shop"))
    other = docker_client.containers.get(engine_name(owner, projects_dir, "other"))

    assert run(shop, "id", "-u") == (0, "1000")
    code, status = run(shop, "grep", "-E", "^Cap(Eff|Prm|Bnd):", "/proc/self/status")
    assert [line.split()[1] for line in status.splitlines()] == ["0000000000000000"] * 3
    if shop.attrs["HostConfig"]["Runtime"] == "runsc":  # gVisor's /proc has no such line
        assert "no-new-privileges" in " ".join(shop.attrs["HostConfig"]["SecurityOpt"])
    else:
        assert run(shop, "grep", "NoNewPrivs", "/proc/self/status")[1].split()[1] == "1"
    code, out = run(shop, "touch", "/usr/local/bin/evil")
    assert code != 0 and ("Read-only file system" in out or "Permission denied" in out), out
    root_mount = next(
        line.split()
        for line in run(shop, "cat", "/proc/mounts")[1].splitlines()
        if line.split()[1] == "/"
    )
    assert "ro" in root_mount[3].split(","), root_mount  # the root itself is read-only
    assert run(shop, "touch", "/project/src/written-by-the-sandbox")[0] == 0

    host_config = shop.attrs["HostConfig"]
    assert host_config["Memory"] == 1 << 30
    assert host_config["PidsLimit"] == 512
    assert host_config["NanoCpus"] == 1_000_000_000
    assert host_config["Privileged"] is False
    mounts = sorted((m["Destination"], m["RW"]) for m in shop.attrs["Mounts"])
    # The app's folder; jupyter-reactbox's own launcher scripts and the gate the
    # server opens once the dependencies are in place, read-only.
    assert mounts == [
        ("/opt/reactbox/gate", False),
        ("/opt/reactbox/support", False),
        ("/project", True),
    ]
    for path in ("/opt/reactbox/support/vite-plugin.mjs", "/opt/reactbox/gate/open"):
        code, out = run(shop, "touch", path)
        assert code != 0 and ("Read-only file system" in out or "Permission denied" in out), out

    # No route out: not the Internet, not the metadata service, not the host's Jupyter.
    network = docker_client.networks.get(engine_name(owner, projects_dir, "previews"))
    assert network.attrs["Internal"] is True
    gateway = network.attrs["IPAM"]["Config"][0]["Gateway"]
    for host, port in (("1.1.1.1", 443), ("169.254.169.254", 80), (gateway, jp_http_port)):
        assert connect(shop, host, port) != "CONNECTED", (host, port)
    # Nor another project's dev server: one network per owner, with icc off.
    other_ip = other.attrs["NetworkSettings"]["Networks"][
        engine_name(owner, projects_dir, "previews")
    ]["IPAddress"]
    port = PORT
    assert connect(other, other_ip, port) == "CONNECTED"  # the probe itself works
    assert connect(shop, other_ip, port) != "CONNECTED"


async def test_a_dev_server_made_ahead_waits_at_its_gate_until_released(
    runtime, docker_client, owner, projects_dir
):
    """A start makes the container while the dependencies install: it runs nothing of
    the project (nothing of the app's may run before the installed tree is checked)
    and cannot let itself through; released, its dev server starts."""
    backend = runtime.backend
    project = runtime.store.import_zip(zip_dir(FIXTURES / "vite-react"), "ahead")
    plan = project.plan()
    await backend.install("ahead", project.app_dir, plan, project.install_log)
    start = backend.start("ahead", project.app_dir, plan, fresh=False, link=lambda: ("t", "/x/"))
    await start.__aenter__()
    endpoint = await start.launched()
    container = docker_client.containers.get(engine_name(owner, projects_dir, "ahead"))
    assert container.status == "running"

    http = AsyncHTTPClient()
    url = f"http://{endpoint.host}:{endpoint.port}/x/"

    async def answers() -> bool:
        try:
            await http.fetch(url, connect_timeout=1, request_timeout=5)
        except (OSError, HTTPClientError):
            return False
        return True

    await asyncio.sleep(1.5)
    assert not await answers()
    code, commands = run(
        container, "sh", "-c", 'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " <"$f"; echo; done'
    )
    assert code == 0 and "until [ -e /opt/reactbox/gate/open ]" in commands, commands
    # The waiting shell holds the dev server's command line; no process runs it yet.
    assert not any(line.startswith("node ") for line in commands.splitlines()), commands
    code, out = run(container, "touch", "/opt/reactbox/gate/open")
    assert code != 0 and ("Read-only file system" in out or "Permission denied" in out), out
    assert not await answers()

    record = await start.ready()
    assert (record.token, record.base, record.endpoint) == ("t", "/x/", endpoint)
    deadline = time.monotonic() + 60
    while not await answers():
        assert time.monotonic() < deadline, container.logs().decode()
        await asyncio.sleep(0.1)

    await start.__aexit__(None, None, None)
    await backend.discard("ahead")
    assert (
        docker_client.containers.list(
            all=True, filters={"name": f"^/{engine_name(owner, projects_dir, 'ahead')}$"}
        )
        == []
    )
    assert not backend.spares.gate("ahead").exists()
