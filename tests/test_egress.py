"""The install's only way out: the registry proxy on loopback (unit), and from a real
container on the install network (engine)."""

from __future__ import annotations

import asyncio
import json
import socket
from urllib.parse import urlsplit

import pytest
from conftest import FIXTURES, zip_dir

from jupyter_reactbox.backends import egress

PROBE = """
const net = require("net");
const [host, port, proxyHost, proxyPort, other] = process.argv.slice(1);
const direct = () => new Promise((done) => {
  const s = net.connect({ host, port: +port, timeout: 3000 });
  s.on("connect", () => { s.destroy(); done("connected"); });
  s.on("timeout", () => { s.destroy(); done("timeout"); });
  s.on("error", (e) => done(e.code));
});
const connect = (target) => new Promise((done) => {
  if (!proxyHost) return done("no proxy");
  const s = net.connect({ host: proxyHost, port: +proxyPort, timeout: 5000 });
  s.on("connect", () => s.write(`CONNECT ${target} HTTP/1.1\\r\\nHost: ${target}\\r\\n\\r\\n`));
  s.on("data", (d) => { s.destroy(); done(d.toString().split("\\r\\n")[0]); });
  s.on("timeout", () => { s.destroy(); done("timeout"); });
  s.on("error", (e) => done(e.code));
});
(async () => {
  console.log(JSON.stringify({
    direct: await direct(),
    registry: await connect(`${host}:${port}`),
    other: await connect(other),
  }));
})();
"""


async def _echo_server():
    seen: list[str] = []

    async def serve(reader, writer):
        seen.append("connection")
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


async def _ask(address, request: bytes) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(request)
    await writer.drain()
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5), reader, writer


async def test_the_proxy_tunnels_to_the_registry_and_nowhere_else():
    registry, registry_port, registry_seen = await _echo_server()
    other, other_port, other_seen = await _echo_server()
    proxy = egress.RegistryProxy(("127.0.0.1", registry_port))
    address = await proxy.start("127.0.0.1")
    try:
        head, reader, writer = await _ask(
            address, f"CONNECT 127.0.0.1:{registry_port} HTTP/1.1\r\n\r\n".encode()
        )
        assert head.startswith(b"HTTP/1.1 200")
        writer.write(b"through the tunnel")
        assert await asyncio.wait_for(reader.readexactly(18), 5) == b"through the tunnel"
        writer.close()

        for request in (
            f"CONNECT 127.0.0.1:{other_port} HTTP/1.1\r\n\r\n".encode(),  # another port
            f"CONNECT localhost:{registry_port} HTTP/1.1\r\n\r\n".encode(),  # another name
            f"GET http://127.0.0.1:{registry_port}/ HTTP/1.1\r\n\r\n".encode(),  # not CONNECT
            b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nX: " + b"y" * 9000 + b"\r\n\r\n",  # oversized
        ):
            head, _, writer = await _ask(address, request)
            assert head.startswith(b"HTTP/1.1 403"), request[:60]
            writer.close()
        await asyncio.sleep(0.1)
        assert other_seen == [] and registry_seen == ["connection"]
        assert f"127.0.0.1:{other_port}" in proxy.refused
    finally:
        await proxy.close()
        registry.close()
        other.close()


def test_only_an_https_registry_has_a_target():
    assert egress.registry_target("https://npm.example.org/") == ("npm.example.org", 443)
    assert egress.registry_target("https://mirror.local:8443/npm/") == ("mirror.local", 8443)
    with pytest.raises(ValueError):
        egress.registry_target("http://mirror.local:4873/")


@pytest.mark.docker
async def test_an_install_reaches_the_registry_only_through_the_proxy(
    api, runtime, docker_client, sandbox_image, owner
):
    """From the install network: the registry's own address directly, the registry
    through the proxy, and another host through the proxy.  The control is the same
    probe on a network with a route out, as installs had before: there the registry's
    address answers directly."""
    r = await api.upload(zip_dir(FIXTURES / "vite-react"), "shop")
    await api.wait(json.loads(r.body)["id"])  # an install ran (or the cache served it)
    backend = runtime.backend
    proxy, _ = await backend.installs.route()
    network = backend.installs.network
    registry = urlsplit(await backend.installs.default_registry())
    host, port = registry.hostname, registry.port or 443
    address = (await asyncio.to_thread(socket.getaddrinfo, host, port, socket.AF_INET))[0][4][0]
    proxy_host, proxy_port = urlsplit(proxy).hostname, urlsplit(proxy).port

    def probe(network: str, *, target: str, via_proxy: bool = True) -> dict:
        proxy_args = [proxy_host, str(proxy_port)] if via_proxy else ["", ""]
        out = docker_client.containers.run(
            sandbox_image,
            ["node", "-e", PROBE, address, str(port), *proxy_args, target],
            network=network,
            labels={"org.jupyter.reactbox.owner": owner},
            remove=True,
            user="1000:1000",
        )
        return json.loads(out.decode().strip().splitlines()[-1])

    control_net = docker_client.networks.create(
        f"reactbox-{owner}-control", labels={"org.jupyter.reactbox.owner": owner}
    )
    try:
        control = await asyncio.to_thread(
            probe, control_net.name, target="example.invalid:443", via_proxy=False
        )
    finally:
        control_net.remove()
    assert control["direct"] == "connected", control  # the probe can tell

    found = await asyncio.to_thread(probe, network, target=f"example.invalid:{port}")
    assert found["direct"] != "connected", found
    assert found["registry"] == "HTTP/1.1 403 Forbidden", found  # by address: not the name
    assert found["other"] == "HTTP/1.1 403 Forbidden", found
    named = await asyncio.to_thread(probe, network, target=f"{host}:{port}")
    assert named["other"] == "HTTP/1.1 200 Connection established", named
