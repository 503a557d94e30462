"""The Docker backend's plumbing: the SDK's calls off the event loop, and networks.

Every SDK call runs on a thread pool through ``Engine.call``, which also maps
the SDK's errors to ours; a followed log blocks a thread of its own pool until
its container prints, so open follows cannot starve starts, stops and logs.
Networks are made one at a time (the engine lets two concurrent creates make
two networks of one name), in ranges of ``network_pool``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from ...errors import EngineUnavailable, SandboxError
from .. import hostguard
from ..base import Finding, Followers
from .specs import labels

T = TypeVar("T")

NETWORK_PREFIX = 26
"""Each network's range in ``network_pool``: 64 addresses, room for a user's previews."""
_SUBNETS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)
"""Per event loop, held while a network's range is picked and the network made."""


def _subnets() -> asyncio.Lock:
    return _SUBNETS.setdefault(asyncio.get_running_loop(), asyncio.Lock())


def _ipam(subnet: str | None) -> docker.types.IPAMConfig | None:
    """The address range of a network to make (None: the engine picks)."""
    if subnet is None:
        return None
    gateway = str(next(ipaddress.ip_network(subnet).hosts()))  # named, so it is reported
    return docker.types.IPAMConfig(
        pool_configs=[docker.types.IPAMPool(subnet=subnet, gateway=gateway)]
    )


class Engine:
    """One owner's Docker client, with the settings its calls need."""

    def __init__(
        self,
        *,
        client_factory: Callable[[], docker.DockerClient],
        image: str,
        owner: str,
        store: str,
        network_pool: str,
        host_guard: str,
        pool_size: int,
        followers: Followers,
        log,
    ):
        self._client_factory = client_factory
        self.image = image
        self.owner = owner
        self.store = store
        self.network_pool = network_pool
        self.host_guard = host_guard
        self.log = log
        self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix="reactbox-docker")
        self.followers = followers
        # A followed log blocks a thread until its container prints: never one of the
        # pool's, so open follows cannot starve starts, stops and logs.
        self._following = ThreadPoolExecutor(followers.most, thread_name_prefix="reactbox-logs")
        self._client: docker.DockerClient | None = None
        self._network_lock = asyncio.Lock()
        self._guarded: set[str] = set()

    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = self._client_factory()
            except docker.errors.DockerException as exc:
                raise EngineUnavailable(
                    f"Cannot reach the Docker engine ({exc}). Start dockerd, or set DOCKER_HOST; "
                    "`jupyter reactbox doctor` checks the setup."
                ) from exc
        return self._client

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking SDK call on the pool, mapping its errors to ours."""
        try:
            return await asyncio.wrap_future(self._pool.submit(fn, *args, **kwargs))
        except docker.errors.ImageNotFound as exc:
            raise EngineUnavailable(
                f"The sandbox image {self.image!r} is missing. Build it with "
                "`jupyter reactbox build-image` (add --offline on hosts with no registry)."
            ) from exc
        except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
            if isinstance(exc, docker.errors.APIError):
                raise
            raise EngineUnavailable(f"The Docker engine did not answer: {exc}.") from exc

    async def client_call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """``await self.client_call("containers.get", name)`` runs client.containers.get."""

        def call():
            target: Any = self.client()
            for part in method.split("."):
                target = getattr(target, part)
            return target(*args, **kwargs)

        return await self.call(call)

    async def create(self, **kwargs: Any):
        """``containers.run``, and the container read back (its address), whole: if the
        caller is cancelled (a stop, a delete) while the engine makes the container, the
        engine finishes on its thread anyway; the container is then removed before the
        cancellation goes on, so no container is ever left running that the server
        does not know."""

        async def make():
            container = await self.client_call("containers.run", **kwargs)
            await self.call(container.reload)
            return container

        making = asyncio.ensure_future(make())
        try:
            return await asyncio.shield(making)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await making
            with contextlib.suppress(Exception):
                await self.remove(kwargs["name"])
            raise

    async def get(self, name: str):
        try:
            return await self.client_call("containers.get", name)
        except docker.errors.NotFound:
            return None

    async def remove(self, name: str) -> None:
        container = await self.get(name)
        if container is None:
            return
        try:
            await self.call(container.remove, force=True, v=True)
            self.log.info("Removed container %s (%s)", name, container.id[:7])
        except docker.errors.APIError as exc:
            # 404: already gone; 409: removal already in progress.
            if exc.status_code not in (404, 409):
                raise

    async def ensure_network(
        self, name: str, *, internal: bool, project_id: str = "", guard: bool = False
    ) -> None:
        """The network ``name``, made if missing; ``guard``: only this server's user
        may connect to what is on it (``guard``)."""
        # One at a time: the engine lets two concurrent creates make two networks of
        # one name, and then no container can join "it".
        async with self._network_lock:
            try:
                await self.client_call("networks.get", name)
            except docker.errors.NotFound:
                await self._create_network(name, internal=internal, project_id=project_id)
            if guard:
                await self.guard(name)

    async def _create_network(self, name: str, *, internal: bool, project_id: str) -> None:
        async with _subnets():  # one process's backends (the hub's users) take turns
            for subnet in await self._free_subnets():
                try:
                    await self.client_call(
                        "networks.create",
                        name,
                        driver="bridge",
                        internal=internal,
                        check_duplicate=True,
                        labels=labels(self.owner, project_id, "network", self.store),
                        # icc off: containers on it cannot reach each other, only the
                        # host them.
                        options={"com.docker.network.bridge.enable_icc": "false"},
                        ipam=_ipam(subnet),
                    )
                    self.log.info("Created network %s (internal=%s)", name, internal)
                    return
                except docker.errors.APIError as exc:
                    if exc.status_code == 409:  # made meanwhile by another server process
                        return
                    if subnet is None or "overlap" not in str(exc).lower():
                        raise
                    # Another process took that range meanwhile: the next one.
        raise SandboxError(
            f"No room left in c.DockerBackend.network_pool ({self.network_pool}) for "
            "another network: remove unused ones (docker network prune), or give a larger "
            "range."
        )

    async def _free_subnets(self) -> list[str | None]:
        """The ranges of ``network_pool`` no network of the engine uses, first free
        first ([None]: the engine picks, from its own pools)."""
        if not self.network_pool:
            return [None]
        taken = []
        for network in await self.client_call("networks.list"):
            for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
                with contextlib.suppress(KeyError, ValueError):
                    taken.append(ipaddress.ip_network(config["Subnet"]))
        pool = ipaddress.ip_network(self.network_pool)
        return [
            str(subnet)
            for subnet in pool.subnets(new_prefix=NETWORK_PREFIX)
            if not any(subnet.overlaps(t) for t in taken)
        ][:64]

    async def guard(self, name: str) -> None:
        """Only this server's user may connect to the network's dev servers (see
        ``hostguard``); once per network and process."""
        if name in self._guarded or self.host_guard == "off":
            return
        if not hostguard.available():
            if self.host_guard == "on":
                raise SandboxError(
                    "c.DockerBackend.host_guard is 'on', but only root with iptables can "
                    "keep other local users from the dev servers' network."
                )
            return
        attrs = (await self.client_call("networks.get", name)).attrs
        for config in attrs["IPAM"]["Config"]:
            await asyncio.to_thread(hostguard.guard, config["Subnet"], name)
        self._guarded.add(name)

    async def doctor(self, runtime: str) -> list[Finding]:
        """What ``jupyter reactbox doctor`` says of the engine: whether it answers, has the
        sandbox image (with today's layout) and knows the OCI ``runtime``."""
        from ... import image as images

        try:
            info = await self.call(self.client().info)
        except Exception as exc:  # EngineUnavailable, or what the SDK raised
            return [
                Finding(
                    False, f"Docker engine unreachable ({exc}). Start dockerd or set DOCKER_HOST."
                )
            ]
        found = [Finding(True, f"Docker engine {info.get('ServerVersion')} reachable")]
        layout = await asyncio.to_thread(images.layout, self.client(), self.image)
        if layout is None:
            found.append(
                Finding(
                    False,
                    f"image {self.image} is missing. Run `jupyter reactbox build-image` "
                    "(add --offline on hosts with no container registry).",
                )
            )
        elif layout != images.LAYOUT:
            found.append(
                Finding(
                    False,
                    f"image {self.image} has an older layout (without today's package "
                    "managers). Run `jupyter reactbox build-image` again.",
                )
            )
        else:
            found.append(Finding(True, f"image {self.image} present"))
        if runtime:
            runtimes = sorted(info.get("Runtimes", {}))
            if runtime in runtimes:
                found.append(Finding(True, f"runtime {runtime} registered"))
            else:
                found.append(
                    Finding(
                        False,
                        f"runtime {runtime!r} is unknown to the engine (it has "
                        f'{", ".join(runtimes)}). Register it under "runtimes" in '
                        "/etc/docker/daemon.json and restart dockerd.",
                    )
                )
        return found

    async def unpause(self, container) -> None:
        try:
            await self.call(container.unpause)
        except docker.errors.APIError as exc:
            if exc.status_code not in (404, 409):  # gone, or not paused (any more)
                raise

    async def follow(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A call that may block until a container prints, on a thread of its own."""
        return await asyncio.wrap_future(self._following.submit(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._following.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()


class LogFollow:
    """An open follow of a container's log: async-iterate it, then ``close()`` it."""

    def __init__(self, engine: Engine, stream: Any):
        self._engine, self._stream = engine, stream

    def __aiter__(self) -> LogFollow:
        return self

    async def __anext__(self) -> str:
        if self._stream is None:
            raise StopAsyncIteration
        chunk = await self._engine.follow(next, self._stream, None)
        if chunk is None:
            raise StopAsyncIteration
        return chunk.decode("utf-8", "replace")

    def close(self) -> None:
        """End the follow; a thread blocked on the stream is released by the close."""
        if self._stream is not None:
            stream, self._stream = self._stream, None
            self._engine.followers.give_back()
            stream.close()
