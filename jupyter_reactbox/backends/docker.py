"""The Docker backend: one hardened dev-server container per project.

* Install runs in a short-lived container that sees a staging copy of the
  manifest and lockfile only, on the owner's ``internal`` install network,
  whose one way out is the server's registry proxy (``egress.py``); lifecycle
  scripts are off unless configured.  The package cache is a per-owner folder.
* Run is a long-lived container on an ``internal`` network of its own (no
  route out, nothing else on it); the preview proxy reaches it by address.
  It runs as a non-root user with no capabilities, ``no-new-privileges``, a
  read-only root filesystem, a tmpfs ``/tmp``, and pids, memory and CPU limits;
  the project's ``app/`` folder is its only writable mount.
* A new preview takes the owner's *spare*: a run container made ahead for no
  project (``spare_container_kwargs``), blocked on a pipe in its gate, whose
  folder becomes the project's ``app/`` by renames.  The engine cannot change
  a container's labels, so a taken spare's project, link and spec are the
  server's record in that gate, never anything the container can write.
* Everything created carries ownership labels, so ``recover`` can rebuild
  the state of a restarted Jupyter server from the engine alone (and the
  gates the server wrote).
* Its settings are its own traits: ``c.DockerBackend.memory_limit``, ...

Container specs are built by pure functions (``install_container_kwargs``,
``run_container_kwargs``, ``spare_container_kwargs``) that tests compare as
whole dicts.  Every SDK call
runs on a thread pool through ``_call``, which also maps SDK errors to ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import ipaddress
import json
import os
import secrets
import shlex
import shutil
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
from traitlets import Bool, CaselessStrEnum, Float, Int, Unicode, default, validate

from .._version import __version__
from ..errors import EngineUnavailable, SandboxError, TooManyStreams
from ..frameworks import SUPPORT_DIR, AppPlan
from . import egress, hostguard
from .base import Backend, Endpoint, Exit, InstallRun, Isolation, Progress, Record, install_env

LABEL = "org.jupyter.reactbox"
CA_IN_CONTAINER = "/etc/reactbox/ca.pem"
STOP_TIMEOUT = 5
SUPPORT = "/opt/reactbox/support"
"""Where a dev server finds jupyter-reactbox's support scripts (read-only)."""
GATE = "/opt/reactbox/gate"
"""A folder only the server writes (read-only in the container): the dev server
starts once ``open`` is there (``DockerBackend.release``)."""
HELD = (
    f"n=0; until [ -e {GATE}/open ]; do "
    'if [ "$n" -lt 400 ]; then sleep 0.005; else sleep 0.1; fi; n=$((n + 1)); done; '
    'exec "$@"'
)
"""The container's first process: waits at the gate, then becomes the dev server."""
SPARE_HELD = (
    f"[ -e {GATE}/open ] || read _ 2>/dev/null < {GATE}/go || "
    f"until [ -e {GATE}/open ]; do sleep 0.1; done; exec /bin/sh {GATE}/run"
)
"""A spare container's first process: blocks (no CPU) on a pipe only the server
writes, unless the gate is open already (a restart), then runs the script the
server wrote in the gate: the dev server.  Where the pipe cannot be opened
(gVisor opens no host pipes), or its writer is gone (the server died), it looks
for ``open`` ten times a second instead."""
PORT = 8000
"""The dev server's port: every container has a network namespace of its own."""
SYSTEM_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    memory: str = "1g"
    cpus: float = 1.0
    pids: int = 512
    tmpfs_size: str = "256m"


def labels(owner: str, project_id: str, role: str, store: str = "", **extra: str) -> dict[str, str]:
    """Whose a container or network is: the user, the store (projects folder) of
    the server that made it, the project, and its role."""
    out = {
        f"{LABEL}.owner": owner,
        f"{LABEL}.project": project_id,
        f"{LABEL}.role": role,
    }
    if store:
        out[f"{LABEL}.store"] = store
    out.update({f"{LABEL}.{k}": v for k, v in extra.items()})
    return out


def named(owner: str, store: str = "") -> str:
    """What names the containers and networks of one owner's store."""
    return f"reactbox-{owner}-{store}" if store else f"reactbox-{owner}"


def container_name(owner: str, project_id: str, role: str, store: str = "") -> str:
    return f"{named(owner, store)}-{project_id}" + ("" if role == "run" else f"-{role}")


def spec_hash(kwargs: dict[str, Any]) -> str:
    """Names a container spec, so a kept container is reused only if nothing changed."""
    return hashlib.sha256(json.dumps(kwargs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _hardening(limits: Limits, runtime: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = dict(
        read_only=True,
        tmpfs={"/tmp": f"rw,nosuid,nodev,size={limits.tmpfs_size}"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=limits.pids,
        mem_limit=limits.memory,
        memswap_limit=limits.memory,
        nano_cpus=int(limits.cpus * 1e9),
        init=True,
        # What a container prints is kept by the engine, outside any quota: bounded.
        log_config={"type": "json-file", "config": {"max-size": "2m", "max-file": "2"}},
    )
    if runtime:
        spec["runtime"] = runtime
    return spec


def install_container_kwargs(
    *,
    image: str,
    owner: str,
    store: str = "",
    project_id: str,
    app_dir: Path,
    cache_dir: Path,
    user: str,
    argv: list[str],
    network: str,
    limits: Limits,
    runtime: str | None = None,
    ca_file: str | None = None,
    registry: str | None = None,
    settings: dict[str, str] | None = None,
    proxy: str | None = None,
) -> dict[str, Any]:
    env = install_env(cache="/cache", registry=registry, proxy=proxy, settings=settings)
    volumes = {
        str(app_dir): {"bind": "/project", "mode": "rw"},
        str(cache_dir): {"bind": "/cache", "mode": "rw"},
    }
    if ca_file:
        env["NODE_EXTRA_CA_CERTS"] = CA_IN_CONTAINER
        volumes[ca_file] = {"bind": CA_IN_CONTAINER, "mode": "ro"}
    return dict(
        image=image,
        command=argv,
        name=container_name(owner, project_id, "install", store),
        user=user,
        working_dir="/project",
        environment=env,
        labels=labels(owner, project_id, "install", store),
        network=network,
        volumes=volumes,
        detach=True,
        **_hardening(limits, runtime),
    )


def run_container_kwargs(
    *,
    image: str,
    owner: str,
    store: str = "",
    project_id: str,
    app_dir: Path,
    user: str,
    plan: AppPlan,
    base: str,
    token: str,
    network: str,
    limits: Limits,
    gate: Path,
    runtime: str | None = None,
) -> dict[str, Any]:
    argv, env = dev_process(plan, base)
    return _dev_container(
        image=image,
        command=["/bin/sh", "-c", HELD, "held", *argv],
        name=container_name(owner, project_id, "run", store),
        user=user,
        environment=env,
        labels=labels(
            owner,
            project_id,
            "run",
            store,
            framework=plan.framework,
            token=token,
            base=base,
            port=str(PORT),
        ),
        network=network,
        project=app_dir,
        gate=gate,
        limits=limits,
        runtime=runtime,
    )


def _dev_container(
    *,
    image: str,
    command: list[str],
    name: str,
    user: str,
    environment: dict[str, str],
    labels: dict[str, str],
    network: str,
    project: Path,
    gate: Path,
    limits: Limits,
    runtime: str | None,
) -> dict[str, Any]:
    """The sandbox every dev server runs in, a project's or a spare's: its folder
    the only writable mount, the support files and its gate read-only."""
    return dict(
        image=image,
        command=command,
        name=name,
        user=user,
        working_dir="/project",
        environment=environment,
        labels=labels,
        network=network,
        volumes={
            str(project): {"bind": "/project", "mode": "rw"},
            str(SUPPORT_DIR): {"bind": SUPPORT, "mode": "ro"},
            str(gate): {"bind": GATE, "mode": "ro"},
        },
        detach=True,
        **_hardening(limits, runtime),
    )


def dev_process(plan: AppPlan, base: str) -> tuple[list[str], dict[str, str]]:
    """The dev server's argv and environment in a container, under ``base``."""
    where = dict(base=base, host="0.0.0.0", port=PORT, support=SUPPORT)
    env = {"HOME": "/tmp", "NODE_ENV": "development", **plan.dev_env(**where)}
    return plan.dev_argv(**where), env


def spare_container_kwargs(
    *,
    image: str,
    owner: str,
    store: str = "",
    name: str,
    slot: Path,
    user: str,
    network: str,
    limits: Limits,
    runtime: str | None = None,
) -> dict[str, Any]:
    """A dev server's container made before its project exists: the same sandbox,
    no project in it yet.  What it runs comes from its gate (``run_script``)."""
    return _dev_container(
        image=image,
        command=["/bin/sh", "-c", SPARE_HELD],
        name=name,
        user=user,
        environment={"HOME": "/tmp"},
        labels=labels(owner, "", "spare", store),
        network=network,
        project=slot / "app",
        gate=slot / "gate",
        limits=limits,
        runtime=runtime,
    )


def run_script(plan: AppPlan, base: str) -> str:
    """The dev server of ``plan`` under ``base``, as a shell script for a spare."""
    argv, env = dev_process(plan, base)
    lines = ["cd /project"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    lines.append("exec " + shlex.join(argv))
    return "\n".join(lines) + "\n"


@dataclass
class Spare:
    name: str
    slot: Path
    go: int
    """The server's end of the gate's pipe (open until the release; then -1)."""
    address: str


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """Hand the work tree to the sandbox's user: by folder descriptors, never by a
    path a planted link could redirect (the tree may have been written by a preview)."""
    for _, dirnames, filenames, dfd in os.fwalk(root, follow_symlinks=False):
        if "node_modules" in dirnames:
            dirnames.remove("node_modules")
        os.fchown(dfd, uid, gid)
        for name in filenames:
            os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)


class LogFollow:
    """An open follow of a container's log: async-iterate it, then ``close()`` it."""

    def __init__(self, sandbox: DockerBackend, stream: Any):
        self._sandbox, self._stream = sandbox, stream

    def __aiter__(self) -> LogFollow:
        return self

    async def __anext__(self) -> str:
        if self._stream is None:
            raise StopAsyncIteration
        chunk = await self._sandbox._follow(next, self._stream, None)
        if chunk is None:
            raise StopAsyncIteration
        return chunk.decode("utf-8", "replace")

    def close(self) -> None:
        """End the follow; a thread blocked on the stream is released by the close."""
        if self._stream is not None:
            stream, self._stream = self._stream, None
            self._sandbox._following -= 1
            stream.close()


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


class DockerBackend(Backend):
    """Runs projects in containers of one image for one owner (a Jupyter user)."""

    name = "docker"

    image = Unicode(
        f"jupyter-reactbox-sandbox:{__version__}",
        help="""Sandbox image for install and dev-server containers. Build it with
        `jupyter reactbox build-image` (`--offline` needs no registry).""",
    ).tag(config=True)

    runtime = Unicode(
        "",
        help="""OCI runtime for the containers, e.g. 'runsc' for gVisor. Empty: the
        engine's default. It must be registered in /etc/docker/daemon.json.""",
    ).tag(config=True)

    uid = Int(
        help="""Uid the containers run as. Defaults to this server's uid, or 1000 when
        the server runs as root (containers never run as root).""",
    ).tag(config=True)

    @default("uid")
    def _default_uid(self):
        return os.getuid() or 1000

    gid = Int(help="Gid the containers run as (see uid).").tag(config=True)

    @default("gid")
    def _default_gid(self):
        return os.getgid() or 1000

    @validate("uid", "gid")
    def _validate_id(self, proposal):
        if proposal["value"] <= 0:
            raise ValueError(f"DockerBackend.{proposal['trait'].name} must be non-root (> 0)")
        return proposal["value"]

    memory_limit = Unicode("1g", help="Memory limit of a dev-server container.").tag(config=True)
    cpu_limit = Float(1.0, help="CPU limit of a dev-server container, in cores.").tag(config=True)
    pids_limit = Int(512, help="Process limit of a container (stops fork bombs).").tag(config=True)
    tmp_size = Unicode("256m", help="Size of each container's /tmp (tmpfs).").tag(config=True)
    install_memory_limit = Unicode(
        "2g", help="Memory limit of the dependency-install container."
    ).tag(config=True)

    extra_ca_certs = Unicode(
        help="""PEM file of CAs the install container trusts (NODE_EXTRA_CA_CERTS), for
        registries behind a TLS-intercepting proxy or with a private CA. Defaults to
        the host's system CA bundle; empty to trust only Node's built-in CAs.""",
    ).tag(config=True)

    @default("extra_ca_certs")
    def _default_ca(self):
        return next((p for p in SYSTEM_CA_BUNDLES if os.path.isfile(p)), "")

    spare_container = Bool(
        True,
        help="""Keep one dev-server container made ahead, waiting for the next new
        preview (started, no CPU: it blocks on a pipe only the server writes), so a
        start does not wait for the engine to make one.""",
    ).tag(config=True)

    pool_size = Int(4, help="Threads that run blocking Docker SDK calls off the event loop.").tag(
        config=True
    )

    host_guard = CaselessStrEnum(
        ["auto", "on", "off"],
        default_value="auto",
        help="""Refuse connections from this host to the dev servers' network, except
        from this server's own user (one iptables rule per network): without it every
        local user can open any dev server at its address, past the proxy. 'auto': on
        where this server runs as root with iptables (the JupyterHub service), which
        is the one place several users share it; 'on': required.""",
    ).tag(config=True)

    network_pool = Unicode(
        "10.213.0.0/16",
        help="""Addresses for the networks this backend makes (each user's previews' and
        installs' networks, a /26 each), e.g. '10.213.0.0/16': room for 1024, where
        the engine's own default pools run out after about 30 (a class of 15 users on
        one hub). Pick a range no network of your site uses. Empty: the engine's.""",
    ).tag(config=True)

    @validate("network_pool")
    def _validate_network_pool(self, proposal):
        if proposal["value"]:
            pool = ipaddress.ip_network(proposal["value"])  # ValueError: says why
            if pool.version != 4 or pool.prefixlen > NETWORK_PREFIX:
                raise ValueError(f"network_pool is an IPv4 range of /{NETWORK_PREFIX} or more")
        return proposal["value"]

    def __init__(
        self, client_factory: Callable[[], docker.DockerClient] = docker.from_env, **kwargs
    ):
        super().__init__(**kwargs)
        self._pool = ThreadPoolExecutor(self.pool_size, thread_name_prefix="reactbox-docker")
        # A followed log blocks a thread until its container prints: never one of the
        # pool's, so open follows cannot starve starts, stops and logs.
        self._followers = ThreadPoolExecutor(
            self.max_log_followers, thread_name_prefix="reactbox-logs"
        )
        self._following = 0
        self._egress: egress.RegistryProxy | None = None
        self._registry_default: str | None = None
        self._install_network = ""
        self._route_lock = asyncio.Lock()
        self._client_factory = client_factory
        self._client: docker.DockerClient | None = None
        self._network_lock = asyncio.Lock()
        self._guarded: set[str] = set()
        self._waiting: Spare | None = None
        self._making_spare: asyncio.Task | None = None
        self._closing = False
        self._claimed: dict[str, Spare] = {}
        self._go: dict[str, Spare] = {}

    @classmethod
    def available(cls) -> str | None:
        try:
            client = docker.from_env(timeout=5)
            try:
                client.ping()
            finally:
                client.close()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            return f"no Docker engine answers ({exc})"
        return None

    def isolation(self) -> Isolation:
        runtime = f", under {self.runtime}" if self.runtime else ""
        return Isolation(
            backend=self.name,
            sandboxed=True,
            how=f"a hardened container per preview on an internal network{runtime}",
        )

    @property
    def run_limits(self) -> Limits:
        return Limits(self.memory_limit, self.cpu_limit, self.pids_limit, self.tmp_size)

    @property
    def install_limits(self) -> Limits:
        return Limits(
            self.install_memory_limit, max(self.cpu_limit, 1.0), self.pids_limit, self.tmp_size
        )

    @property
    def ca_file(self) -> str | None:
        return self.extra_ca_certs or None

    # -- plumbing ---------------------------------------------------------

    @property
    def user(self) -> str:
        return f"{self.uid}:{self.gid}"

    def _name(self, project_id: str, role: str) -> str:
        return container_name(self.owner, project_id, role, self.store)

    @property
    def _mine(self) -> dict[str, list[str]]:
        """The engine's filter for this owner's containers of this store."""
        mine = [f"{LABEL}.owner={self.owner}"]
        if self.store:
            mine.append(f"{LABEL}.store={self.store}")
        return {"label": mine}

    def _docker(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = self._client_factory()
            except docker.errors.DockerException as exc:
                raise EngineUnavailable(
                    f"Cannot reach the Docker engine ({exc}). Start dockerd, or set DOCKER_HOST; "
                    "`jupyter reactbox doctor` checks the setup."
                ) from exc
        return self._client

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
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

    async def _client_call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """``await self._client_call("containers.get", name)`` runs client.containers.get."""

        def call():
            target: Any = self._docker()
            for part in method.split("."):
                target = getattr(target, part)
            return target(*args, **kwargs)

        return await self._call(call)

    async def _create(self, **kwargs: Any):
        """``containers.run``, and the container read back (its address), whole: if the
        caller is cancelled (a stop, a delete) while the engine makes the container, the
        engine finishes on its thread anyway; the container is then removed before the
        cancellation goes on, so no container is ever left running that the server
        does not know."""

        async def make():
            container = await self._client_call("containers.run", **kwargs)
            await self._call(container.reload)
            return container

        making = asyncio.ensure_future(make())
        try:
            return await asyncio.shield(making)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await making
            with contextlib.suppress(Exception):
                await self._remove_container(kwargs["name"])
            raise

    async def _get_container(self, name: str):
        try:
            return await self._client_call("containers.get", name)
        except docker.errors.NotFound:
            return None

    async def _remove_container(self, name: str) -> None:
        container = await self._get_container(name)
        if container is None:
            return
        try:
            await self._call(container.remove, force=True, v=True)
            self.log.info("Removed container %s (%s)", name, container.id[:7])
        except docker.errors.APIError as exc:
            # 404: already gone; 409: removal already in progress.
            if exc.status_code not in (404, 409):
                raise

    async def _ensure_network(self, name: str, *, internal: bool, project_id: str) -> None:
        # One at a time: the engine lets two concurrent creates make two networks of
        # one name, and then no container can join "it".
        async with self._network_lock:
            try:
                await self._client_call("networks.get", name)
            except docker.errors.NotFound:
                await self._create_network(name, internal=internal, project_id=project_id)
            if name == self.network:
                await self._guard(name)

    async def _create_network(self, name: str, *, internal: bool, project_id: str) -> None:
        async with _subnets():  # one process's backends (the hub's users) take turns
            for subnet in await self._free_subnets():
                try:
                    await self._client_call(
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
        for network in await self._client_call("networks.list"):
            for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
                with contextlib.suppress(KeyError, ValueError):
                    taken.append(ipaddress.ip_network(config["Subnet"]))
        pool = ipaddress.ip_network(self.network_pool)
        return [
            str(subnet)
            for subnet in pool.subnets(new_prefix=NETWORK_PREFIX)
            if not any(subnet.overlaps(t) for t in taken)
        ][:64]

    async def _guard(self, name: str) -> None:
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
        attrs = (await self._client_call("networks.get", name)).attrs
        for config in attrs["IPAM"]["Config"]:
            await asyncio.to_thread(hostguard.guard, config["Subnet"], name)
        self._guarded.add(name)

    async def _install_route(self) -> tuple[str | None, str]:
        """(the proxy an install must use, the registry): installs run on an
        ``internal`` network whose only way out is the registry proxy on its gateway.
        A registry that is not https keeps the older route out (and says so in the log)."""
        async with self._route_lock:
            registry = self.registry or await self._default_registry()
            try:
                target = egress.registry_target(registry)
            except ValueError:
                self.log.warning(
                    "The registry %s is not https: installs keep a route out to reach it.",
                    registry,
                )
                network = f"{named(self.owner, self.store)}-install"
                await self._ensure_network(network, internal=False, project_id="")
                self._install_network = network
                return None, registry
            network = f"{named(self.owner, self.store)}-fetch"
            await self._ensure_network(network, internal=True, project_id="")
            attrs = (await self._client_call("networks.get", network)).attrs
            gateway = attrs["IPAM"]["Config"][0]["Gateway"]
            if (
                self._egress is None
                or self._egress.address is None
                or (self._egress.address[0] != gateway or self._egress.allowed != target)
            ):
                if self._egress is not None:
                    await self._egress.close()
                self._egress = egress.RegistryProxy(target, self.log)
                await self._egress.start(gateway)
            self._install_network = network
            return self._egress.url, registry

    async def _default_registry(self) -> str:
        """The registry npm in the image uses when none is configured (asked once)."""
        if self._registry_default is None:
            out = await self._client_call(
                "containers.run",
                self.image,
                ["npm", "config", "get", "registry"],
                network_mode="none",
                remove=True,
                user=self.user,
                environment={"HOME": "/tmp"},
            )
            self._registry_default = out.decode().strip()
        return self._registry_default

    @property
    def network(self) -> str:
        """The owner's ``internal`` network of dev servers; icc off, so they cannot
        reach each other, and one network per owner, not per project, so the engine's
        address pools do not cap how many previews run."""
        return f"{named(self.owner, self.store)}-previews"

    # -- the Backend verbs ------------------------------------------------------

    def _tree_owner(self) -> tuple[int, int] | None:
        # A root server hands the files to the unprivileged container user.
        return (self.uid, self.gid) if os.geteuid() == 0 and self.uid != 0 else None

    def _hand_over(self, path: Path) -> None:
        if owner := self._tree_owner():
            _chown_tree(path, *owner)

    async def _install_once(
        self, run: InstallRun, progress: Progress | None
    ) -> tuple[int | None, str]:
        name = self._name(run.project_id, "install")
        await self._remove_container(name)
        kwargs = install_container_kwargs(
            image=self.image,
            owner=self.owner,
            store=self.store,
            project_id=run.project_id,
            app_dir=run.staging,
            cache_dir=run.cache,
            user=self.user,
            argv=run.argv,
            network=self._install_network,
            limits=self.install_limits,
            runtime=self.runtime or None,
            ca_file=self.ca_file,
            registry=run.registry,
            settings=run.env,
            proxy=run.proxy,
        )
        return await self._run_install(run.project_id, kwargs, run.staging, progress)

    async def _run_install(
        self,
        project_id: str,
        kwargs: dict[str, Any],
        staging: Path,
        progress: Progress | None,
    ) -> tuple[int | None, str]:
        """One install container, to its end: (exit code, None if it timed out; output)."""
        name = kwargs["name"]
        try:
            container = await self._create(**kwargs)
            self.log.info(
                "Installing %s with %s in %s", project_id, kwargs["command"][:2], container.id[:7]
            )
            waiting = asyncio.ensure_future(
                self._call(container.wait, timeout=self.install_timeout)
            )
            if progress is not None:
                await self.report_install(staging, waiting, progress)
            try:
                code = (await waiting).get("StatusCode", 1)
            except requests.exceptions.ReadTimeout:
                code = None
            output = (await self._call(container.logs)).decode("utf-8", "replace")
        finally:
            # Also when cancelled (a stop, a shutdown): no install is left running.
            await asyncio.shield(self._remove_container(name))
        return code, output

    def _run_kwargs(self, project_id: str, app_dir: Path, plan: AppPlan, base: str, token: str):
        kwargs = self._run_spec(project_id, app_dir, plan, base, token)
        kwargs["labels"][f"{LABEL}.spec"] = self._spec(project_id, app_dir, plan)
        return kwargs

    def _spec(self, project_id: str, app_dir: Path, plan: AppPlan) -> str:
        """The hash of the project's dev-server container as it would be made now,
        its link aside: a kept one labelled (or recorded) otherwise is out of date."""
        return spec_hash(self._run_spec(project_id, app_dir, plan, "{base}", "{token}"))

    def _run_spec(self, project_id: str, app_dir: Path, plan: AppPlan, base: str, token: str):
        return run_container_kwargs(
            image=self.image,
            owner=self.owner,
            store=self.store,
            project_id=project_id,
            app_dir=app_dir,
            user=self.user,
            plan=plan,
            base=base,
            token=token,
            network=self.network,
            limits=self.run_limits,
            gate=self._gate(project_id),
            runtime=self.runtime or None,
        )

    # -- the gate: a container made while its dependencies install ------------------

    launches_ahead = True

    def _gate(self, project_id: str) -> Path:
        return Path(self.cache_dir, "gates", self._name(project_id, "run"))

    async def _set_gate(self, project_id: str, *, open: bool) -> None:
        def set_gate() -> None:
            gate = self._gate(project_id)
            gate.mkdir(parents=True, exist_ok=True)
            gate.chmod(0o755)  # whatever the umask: the sandbox's user looks in it
            if open:
                (gate / "open").touch()
            else:
                (gate / "open").unlink(missing_ok=True)

        await asyncio.to_thread(set_gate)

    def _still_held(self, container, project_id: str) -> bool:
        gated = any(m.get("Destination") == GATE for m in container.attrs.get("Mounts", []))
        return gated and not (self._gate(project_id) / "open").exists()

    async def release(self, project_id: str) -> None:
        await self._set_gate(project_id, open=True)
        spare = self._go.pop(project_id, None)
        if spare is not None and spare.go >= 0:  # a spare, blocked on its pipe
            try:
                os.write(spare.go, b"go\n")
            finally:
                os.close(spare.go)
                spare.go = -1

    # -- spares: a container made before its project ----------------------------------

    SPARE_CONTAINER_DELAY = 1.0
    """Seconds after a start is over (``started``) before the next spare is made:
    its first page is loading then, not the moment after."""

    def _slots(self) -> Path:
        return Path(self.cache_dir, "slots")

    SPARE_SUFFIX = ".spare"
    """A waiting spare's name ends so (no project id has a dot); a taken one has its
    project's run name."""

    @property
    def _run_prefix(self) -> str:
        """What every run container's name of this owner's store starts with."""
        return self._name("", "run")

    def _spare_name(self, slot: str) -> str:
        return f"{self._run_prefix}{slot}{self.SPARE_SUFFIX}"

    def _slot_of(self, spare_name: str) -> Path:
        """The folder of a waiting spare, from its name (``_spare_name``)."""
        slot = spare_name.removeprefix(self._run_prefix).removesuffix(self.SPARE_SUFFIX)
        return self._slots() / slot

    def _project_of(self, name: str) -> str | None:
        """The project whose run container has this name (a leading '/' as the
        engine lists it is ignored); None for a waiting spare or another's."""
        prefix = self._run_prefix
        name = name.lstrip("/")
        if not name.startswith(prefix) or name.endswith(self.SPARE_SUFFIX):
            return None
        return name[len(prefix) :]

    def _make_spare_later(self, delay: float) -> None:
        if self.boxed or not self.spare_container or self._waiting or self._making_spare:
            return
        if self._closing:
            return

        async def make() -> None:
            await asyncio.sleep(delay)
            try:
                self._waiting = await self._make_spare()
            except Exception as exc:  # a start just makes its own container
                self.log.warning("Could not make a spare dev-server container: %s", exc)
            finally:
                self._making_spare = None

        self._making_spare = asyncio.create_task(make())

    async def _make_spare(self) -> Spare:
        await self._ensure_network(self.network, internal=True, project_id="")
        name = self._spare_name(secrets.token_hex(4))
        slot = self._slot_of(name)

        def prepare() -> int:
            try:
                (slot / "app").mkdir(parents=True)
                (slot / "gate").mkdir()
                (slot / "gate").chmod(0o755)
                os.mkfifo(slot / "gate" / "go")
                (slot / "gate" / "go").chmod(0o644)  # the sandbox's user reads it
                self._hand_over(slot / "app")
                # Open here first: the container's read then never waits for a writer.
                return os.open(slot / "gate" / "go", os.O_RDWR | os.O_NONBLOCK)
            except OSError:
                shutil.rmtree(slot, ignore_errors=True)
                raise

        go = await asyncio.to_thread(prepare)
        try:
            kwargs = spare_container_kwargs(
                image=self.image,
                owner=self.owner,
                store=self.store,
                name=name,
                slot=slot,
                user=self.user,
                network=self.network,
                limits=self.run_limits,
                runtime=self.runtime or None,
            )
            container = await self._create(**kwargs)
            return Spare(name, slot, go, self._address(container))
        except BaseException:
            os.close(go)
            await self._remove_container(name)
            await asyncio.to_thread(shutil.rmtree, slot, True)
            raise

    def started(self, project_id: str) -> None:
        self._make_spare_later(self.SPARE_CONTAINER_DELAY)

    async def prepare_launch(self, project_id: str, app_dir: Path) -> None:
        """Before a start's install: move the project's files into the spare's folder
        (which becomes ``app_dir``), so ``launch`` takes the spare, not a new one."""
        if (given := self._claimed.pop(project_id, None)) is not None:
            await self._drop_spare(given)  # to a start cancelled before its launch
        spare, self._waiting = self._waiting, None
        if spare is None:
            return
        try:
            await asyncio.to_thread(_move_in, app_dir, spare.slot / "app")
        except OSError as exc:
            self.log.warning("Could not give %s the spare container: %s", project_id, exc)
            if exc.errno == errno.EXDEV:  # cache_dir and projects_dir: never one filesystem
                self.spare_container = False
            await self._drop_spare(spare)
            return
        self._claimed[project_id] = spare

    async def _abandon(self, spare: Spare, project_id: str) -> None:
        """Undo a spare's taking that did not finish: nothing of it is left."""
        self._go.pop(project_id, None)
        await self._drop_spare(spare)
        await self._remove_container(self._name(project_id, "run"))
        await asyncio.to_thread(_remove_gate, self._gate(project_id))

    async def _drop_spare(self, spare: Spare) -> None:
        if spare.go >= 0:
            os.close(spare.go)
            spare.go = -1
        await self._remove_container(spare.name)
        await asyncio.to_thread(shutil.rmtree, spare.slot, True)

    async def _adopt(
        self,
        spare: Spare,
        project_id: str,
        app_dir: Path,
        plan: AppPlan,
        base: str,
        token: str,
        held: bool,
    ) -> Endpoint:
        name = self._name(project_id, "run")
        await self._remove_container(name)
        gate = self._gate(project_id)
        spec = self._spec(project_id, app_dir, plan)
        record = {"project": project_id, "framework": plan.framework, "token": token,
                  "base": base, "spec": spec}  # fmt: skip

        def write() -> None:
            _remove_gate(gate)
            gate.parent.mkdir(parents=True, exist_ok=True)
            (spare.slot / "gate" / "run").write_text(run_script(plan, base))
            (spare.slot / "gate" / "run").chmod(0o644)
            (spare.slot / "gate" / "record.json").write_text(json.dumps(record))
            os.symlink(spare.slot / "gate", gate)

        await asyncio.to_thread(write)
        container = await self._client_call("containers.get", spare.name)
        await self._call(container.rename, name)
        self._go[project_id] = spare
        self.log.info("Started dev server of %s in the spare %s", project_id, container.id[:7])
        if not held:
            await self.release(project_id)
        return Endpoint(spare.address, PORT)

    async def kept(self, project_id: str) -> bool:
        return await self._get_container(self._name(project_id, "run")) is not None

    # -- dev servers ----------------------------------------------------------------

    async def launch(
        self,
        project_id: str,
        app_dir: Path,
        plan: AppPlan,
        *,
        base: str,
        token: str,
        held: bool = False,
    ) -> Endpoint:
        spare = self._claimed.pop(project_id, None)
        if spare is not None:
            try:
                return await self._adopt(spare, project_id, app_dir, plan, base, token, held)
            except Exception as exc:  # gone meanwhile (removed by hand): make one
                self.log.warning("Could not start %s in the spare: %s", project_id, exc)
                await asyncio.shield(self._abandon(spare, project_id))
            except BaseException:
                await asyncio.shield(self._abandon(spare, project_id))
                raise
        await self._ensure_network(self.network, internal=True, project_id="")
        name = self._name(project_id, "run")
        await self._remove_container(name)
        await self._set_gate(project_id, open=not held)
        kwargs = self._run_kwargs(project_id, app_dir, plan, base, token)
        container = await self._create(**kwargs)
        self.log.info("Started dev server of %s in %s", project_id, container.id[:7])
        return Endpoint(self._address(container), PORT)

    async def resume(self, project_id: str, app_dir: Path, plan: AppPlan) -> Record | None:
        """Start the kept container of a project again, if its spec is still current."""
        container = await self._get_container(self._name(project_id, "run"))
        if container is None:
            return None
        if self._labels(container).get(f"{LABEL}.spec") != self._spec(project_id, app_dir, plan):
            self.log.info("The kept dev server of %s is out of date; replacing it", project_id)
            await self._remove_container(container.name)
            return None
        # Resumed once its dependencies are in place: a start that was stopped while
        # they installed waits at the gate no longer.
        await self.release(project_id)
        if container.status == "paused":
            await self._unpause(container)
            await self._call(container.reload)
        elif container.status != "running":
            await self._ensure_network(self.network, internal=True, project_id="")
            await self._call(container.start)
            await self._call(container.reload)
            self.log.info("Resumed dev server of %s in %s", project_id, container.id[:7])
        return self._record(container)

    def _address(self, container) -> str:
        networks = container.attrs["NetworkSettings"]["Networks"]
        address = (networks.get(self.network) or {}).get("IPAddress")
        if not address:
            raise SandboxError(f"Container {container.name} has no address on {self.network}.")
        return address

    def _labels(self, container) -> dict[str, str]:
        """A container's labels; a taken spare's (made before its project) with what
        the server wrote in its gate when it gave it to the project."""
        lab = container.labels
        project_id = self._project_of(container.name)
        if lab.get(f"{LABEL}.role") != "spare" or project_id is None:
            return lab
        lab = dict(lab)
        with contextlib.suppress(OSError, ValueError):
            record = json.loads((self._gate(project_id) / "record.json").read_text())
            lab.update({f"{LABEL}.{k}": str(v) for k, v in record.items()})
            lab.update({f"{LABEL}.port": str(PORT), f"{LABEL}.role": "run"})
        return lab

    def _record(self, container) -> Record:
        lab = self._labels(container)
        running = container.status == "running"
        endpoint = None
        if running:
            try:
                endpoint = Endpoint(self._address(container), int(lab[f"{LABEL}.port"]))
            except (KeyError, SandboxError):
                endpoint = None
        return Record(
            project_id=lab[f"{LABEL}.project"],
            framework=lab.get(f"{LABEL}.framework", ""),
            token=lab.get(f"{LABEL}.token", ""),
            base=lab.get(f"{LABEL}.base", ""),
            endpoint=endpoint,
        )

    async def poll(self, project_id: str) -> Exit | None:
        """None while the dev server runs; how it ended otherwise."""
        container = await self._get_container(self._name(project_id, "run"))
        if container is None:
            return Exit(code=None, why="its container is gone")
        state = container.attrs.get("State", {})
        if state.get("Running"):
            return None
        if state.get("OOMKilled"):
            why = "was killed for using too much memory (c.DockerBackend.memory_limit)"
            return Exit(code=state.get("ExitCode"), why=why)
        return Exit(code=state.get("ExitCode"))

    async def running(self) -> set[str]:
        """Projects whose dev server runs now: one engine call for all of them."""
        containers = await self._client_call("containers.list", sparse=True, filters=self._mine)
        out = set()
        for c in containers:
            role = c.attrs["Labels"].get(f"{LABEL}.role")
            if role == "run":
                out.add(c.attrs["Labels"][f"{LABEL}.project"])
            elif role == "spare" and (project_id := self._project_of(c.attrs["Names"][0])):
                out.add(project_id)  # a taken spare has its project's name
        return out

    async def freeze(self, project_id: str) -> bool:
        """Pause the container (the cgroup freezer): its memory stays, its CPU is 0."""
        container = await self._get_container(self._name(project_id, "run"))
        if container is None or container.status != "running":
            return False
        try:
            await self._call(container.pause)
        except docker.errors.APIError as exc:
            self.log.warning("Could not freeze the dev server of %s: %s", project_id, exc)
            return False
        return True

    async def thaw(self, project_id: str) -> None:
        container = await self._get_container(self._name(project_id, "run"))
        if container is not None and container.status == "paused":
            await self._unpause(container)

    async def _unpause(self, container) -> None:
        try:
            await self._call(container.unpause)
        except docker.errors.APIError as exc:
            if exc.status_code not in (404, 409):  # gone, or not paused (any more)
                raise

    async def stop(self, project_id: str) -> None:
        """Stop the dev server and keep its container, so a start is fast."""
        container = await self._get_container(self._name(project_id, "run"))
        if container is None or container.status not in ("running", "restarting", "paused"):
            return
        if container.status == "paused":  # else SIGTERM waits for the thaw: a stop timeout
            await self._unpause(container)
        try:
            await self._call(container.stop, timeout=STOP_TIMEOUT)
            self.log.info("Stopped dev server of %s (%s)", project_id, container.id[:7])
        except docker.errors.APIError as exc:
            if exc.status_code not in (304, 404):
                raise

    async def discard(self, project_id: str) -> None:
        """Remove the dev server's container: the next start makes a new one."""
        spare = self._claimed.pop(project_id, None)
        if spare is not None:  # given to a start that never launched
            await self._drop_spare(spare)
        await self._remove_container(self._name(project_id, "run"))
        await asyncio.to_thread(_remove_gate, self._gate(project_id))

    async def remove(self, project_id: str) -> None:
        await self._remove_container(self._name(project_id, "install"))
        await self.discard(project_id)

    async def recover(self, known: set[str]) -> list[Record]:
        """The dev-server containers of this owner's ``known`` projects (running ones
        first); containers of deleted projects, interrupted installs and second
        containers of one project are removed."""
        containers = await self._client_call("containers.list", all=True, filters=self._mine)
        await self._leave_older(known)
        if containers:  # running ones are reached at once: guard their network first
            with contextlib.suppress(docker.errors.NotFound):
                await self._guard(self.network)
        for container in containers:  # frozen by the server before: this one starts afresh
            if container.status == "paused":
                await self._unpause(container)
                await self._call(container.reload)
        live = self._waiting.name if self._waiting else None
        for container in [c for c in containers if c.name.endswith(self.SPARE_SUFFIX)]:
            if container.name == live:
                continue
            self.log.info("Removing container %s: a spare of an earlier run", container.name)
            await self._remove_container(container.name)
            await asyncio.to_thread(shutil.rmtree, self._slot_of(container.name), True)
        containers = [c for c in containers if not c.name.endswith(self.SPARE_SUFFIX)]
        found = [(c, self._record(c)) for c in containers if f"{LABEL}.project" in c.labels]
        # Serving ones first: a running dev server with its link beats a stray one.
        found.sort(key=lambda f: (f[1].endpoint is None, not f[1].token))
        kept: dict[str, Record] = {}
        for container, record in found:
            project_id = record.project_id
            why = None
            if project_id not in known:
                why = "its project is gone"
            elif self._labels(container).get(f"{LABEL}.role") != "run":
                why = "an interrupted install"
            elif project_id in kept:
                why = "a second dev server of the project"
            elif record.endpoint and self._still_held(container, project_id):
                why = "a start whose dependencies were never released to it"
            if why:
                self.log.warning("Removing container %s: %s", container.name, why)
                await self._remove_container(container.name)
                continue
            kept[project_id] = record
        return list(kept.values())

    async def _leave_older(self, known: set[str]) -> None:
        """Containers of this owner from a release that named no store: one that runs
        a project of this store is removed (the project starts afresh); any other is
        left alone, as it may be another server's."""
        if not self.store:
            return
        listed = await self._client_call(
            "containers.list", all=True, filters={"label": f"{LABEL}.owner={self.owner}"}
        )
        for container in listed:
            if f"{LABEL}.store" in container.labels:
                continue
            project_id = container.labels.get(f"{LABEL}.project", "")
            if project_id in known and container.name == container_name(
                self.owner, project_id, "run"
            ):
                self.log.warning(
                    "Removing container %s: made by an earlier release for %s",
                    container.name,
                    project_id,
                )
                await self._remove_container(container.name)
            else:
                self.log.info("Leaving container %s alone: it names no store", container.name)

    async def logs(self, project_id: str, *, tail: int = 500) -> str:
        container = await self._get_container(self._name(project_id, "run"))
        if container is None:
            return ""
        data = await self._call(container.logs, tail=tail)
        return data.decode("utf-8", "replace")

    async def follow_logs(self, project_id: str) -> LogFollow:
        """The dev server's output from now on.  Each follow has a thread of its own
        (never one of the pool's, so open follows cannot starve starts and stops), at
        most ``max_log_followers`` at once; ``close()`` frees it at once."""
        if self._following >= self.max_log_followers:
            raise TooManyStreams(
                f"{self._following} followed logs are open already; close one (or wait for "
                "its client to leave) and try again."
            )
        container = await self._get_container(self._name(project_id, "run"))
        if container is None:
            return LogFollow(self, None)
        self._following += 1
        try:
            stream = await self._follow(container.logs, stream=True, follow=True, tail=0)
        except BaseException:
            self._following -= 1
            raise
        return LogFollow(self, stream)

    async def _follow(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.wrap_future(self._followers.submit(fn, *args, **kwargs))

    async def close(self) -> None:
        self._closing = True  # a start that ends from now on makes no spare
        await super().close()
        if (making := self._making_spare) is not None:
            making.cancel()  # and waited for: one the engine is making is removed
            await asyncio.wait([making], timeout=30)
        spares = [self._waiting, *self._claimed.values()]
        self._waiting, self._claimed = None, {}
        for spare in spares:
            if spare is not None:
                await self._drop_spare(spare)
        if self._egress is not None:
            await self._egress.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._followers.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()


def _move_in(app_dir: Path, slot_app: Path) -> None:
    """Make ``slot_app`` (a spare's empty folder) the project's ``app_dir``: its
    entries moved in by renames, then the folder renamed; a link is left where the
    spare's folder was, which the engine mounts again when the container restarts.
    OSError, with the project's folder as it was, if that cannot be done (another
    filesystem)."""
    app_dir = Path(os.path.abspath(app_dir))
    if os.stat(app_dir).st_dev != os.stat(slot_app).st_dev:
        raise OSError(errno.EXDEV, "the spare's folder is on another filesystem")
    moved: list[str] = []
    try:
        for entry in os.listdir(app_dir):
            os.rename(app_dir / entry, slot_app / entry)
            moved.append(entry)
        old = app_dir.with_name(f".{app_dir.name}-old-{secrets.token_hex(4)}")
        os.rename(app_dir, old)
    except OSError:
        for entry in moved:
            os.rename(slot_app / entry, app_dir / entry)
        raise
    try:
        os.rename(slot_app, app_dir)
    except OSError:
        os.rename(old, app_dir)
        for entry in moved:
            os.rename(slot_app / entry, app_dir / entry)
        raise
    os.symlink(app_dir, slot_app)
    for entry in os.listdir(old):  # written meanwhile (a window of a few renames)
        with contextlib.suppress(OSError):
            os.rename(old / entry, app_dir / entry)
    shutil.rmtree(old, ignore_errors=True)


def _remove_gate(gate: Path) -> None:
    """A gate folder, or a taken spare's link to its slot (and the slot)."""
    if gate.is_symlink():
        slot = Path(os.readlink(gate)).parent
        gate.unlink()
        shutil.rmtree(slot, ignore_errors=True)
    else:
        shutil.rmtree(gate, ignore_errors=True)
