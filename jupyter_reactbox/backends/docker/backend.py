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
* A start makes its container while the dependencies install, held at a gate,
  in the owner's spare container when one waits (``spares.py``).
* Everything created carries ownership labels, so ``recover`` can rebuild
  the state of a restarted Jupyter server from the engine alone (and the
  gates the server wrote).
* Its settings are its own traits: ``c.DockerBackend.memory_limit``, ...

Beside it: the container specs as pure functions (``specs.py``), the SDK's
calls and the networks (``engine.py``), the gates and the spare (``spares.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import docker
import docker.errors
import requests.exceptions
from traitlets import Bool, CaselessStrEnum, Float, Int, Unicode, default, validate

from ..._version import __version__
from ...errors import SandboxError
from ...frameworks import AppPlan
from ..base import (
    BUILD_OUTPUT,
    Backend,
    BuildRun,
    Endpoint,
    Exit,
    Finding,
    Installer,
    Isolation,
    Record,
    left_over,
    under,
)
from ..install import hand_over, system_ca_bundle
from .engine import NETWORK_PREFIX, Engine, LogFollow
from .installs import Installs
from .spares import DockerStart, Spares, _remove_gate
from .specs import (
    LABEL,
    PORT,
    Limits,
    build_container_kwargs,
    container_name,
    named,
    run_container_kwargs,
    spec_hash,
)

STOP_TIMEOUT = 5


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
        return system_ca_bundle() or ""

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
        self.engine = Engine(
            client_factory=client_factory,
            image=self.image,
            owner=self.owner,
            store=self.store,
            network_pool=self.network_pool,
            host_guard=self.host_guard,
            pool_size=self.pool_size,
            followers=self.followers,
            log=self.log,
        )
        self.spares = Spares(self)
        self.installs = Installs(self)

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

    async def doctor(self) -> list[Finding]:
        """The engine, the sandbox image (with today's layout), the OCI runtime."""
        return await self.engine.doctor(self.runtime)

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

    def name_of(self, project_id: str, role: str) -> str:
        """The name of the project's container of ``role`` ("run", "install")."""
        return container_name(self.owner, project_id, role, self.store)

    @property
    def _mine(self) -> dict[str, list[str]]:
        """The engine's filter for this owner's containers of this store."""
        mine = [f"{LABEL}.owner={self.owner}"]
        if self.store:
            mine.append(f"{LABEL}.store={self.store}")
        return {"label": mine}

    @property
    def network(self) -> str:
        """The owner's ``internal`` network of dev servers; icc off, so they cannot
        reach each other, and one network per owner, not per project, so the engine's
        address pools do not cap how many previews run."""
        return f"{named(self.owner, self.store)}-previews"

    async def ensure_previews_network(self) -> None:
        await self.engine.ensure_network(self.network, internal=True, guard=True)

    # -- installs ------------------------------------------------------------------

    @property
    def tree_owner(self) -> tuple[int, int] | None:
        """Who owns the trees the containers write: a root server hands them to the
        unprivileged container user."""
        return (self.uid, self.gid) if os.geteuid() == 0 and self.uid != 0 else None

    @cached_property
    def installer(self) -> Installer:
        return self._installer(
            run=self.installs.run_once, route=self.installs.route, owner=self.tree_owner
        )

    def _run_kwargs(self, project_id: str, app_dir: Path, plan: AppPlan, base: str, token: str):
        kwargs = self._run_spec(project_id, app_dir, plan, base, token)
        kwargs["labels"][f"{LABEL}.spec"] = self.spec_of(project_id, app_dir, plan)
        return kwargs

    def spec_of(self, project_id: str, app_dir: Path, plan: AppPlan) -> str:
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
            gate=self.spares.gate(project_id),
            runtime=self.runtime or None,
        )

    # -- dev servers ----------------------------------------------------------------

    def start(self, project_id, app_dir, plan, *, fresh, link) -> DockerStart:
        """A start that makes the container while the dependencies install."""
        return DockerStart(self, project_id, app_dir, plan, fresh=fresh, link=link)

    SPARE_CONTAINER_DELAY = 1.0
    """Seconds after a start is over (``started``) before the next spare is made:
    its first page is loading then, not the moment after."""

    def started(self, project_id: str) -> None:
        self.spares.make_later(self.SPARE_CONTAINER_DELAY)

    async def kept(self, project_id: str) -> bool:
        """Whether the project has a container (``resume`` would start it)."""
        return await self.engine.get(self.name_of(project_id, "run")) is not None

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
        """A new container (the spare the start took, if it did); ``held``: its dev
        server waits at the gate until ``Spares.release``."""
        spare = self.spares.claimed.pop(project_id, None)
        if spare is not None:
            try:
                return await self.spares.adopt(spare, project_id, app_dir, plan, base, token, held)
            except Exception as exc:  # gone meanwhile (removed by hand): make one
                self.log.warning("Could not start %s in the spare: %s", project_id, exc)
                await asyncio.shield(self.spares.abandon(spare, project_id))
            except BaseException:
                await asyncio.shield(self.spares.abandon(spare, project_id))
                raise
        await self.ensure_previews_network()
        name = self.name_of(project_id, "run")
        await self.engine.remove(name)
        await self.spares.set_gate(project_id, open=not held)
        kwargs = self._run_kwargs(project_id, app_dir, plan, base, token)
        container = await self.engine.create(**kwargs)
        self.log.info("Started dev server of %s in %s", project_id, container.id[:7])
        return Endpoint(self.address(container), PORT)

    async def resume(self, project_id: str, app_dir: Path, plan: AppPlan) -> Record | None:
        """Start the kept container of a project again, if its spec is still current."""
        container = await self.engine.get(self.name_of(project_id, "run"))
        if container is None:
            return None
        spec = self.spares.labels(container).get(f"{LABEL}.spec")
        if spec != self.spec_of(project_id, app_dir, plan):
            self.log.info("The kept dev server of %s is out of date; replacing it", project_id)
            await self.engine.remove(container.name)
            return None
        # Resumed once its dependencies are in place: a start that was stopped while
        # they installed waits at the gate no longer.
        await self.spares.release(project_id)
        if container.status == "paused":
            await self.engine.unpause(container)
            await self.engine.call(container.reload)
        elif container.status != "running":
            await self.ensure_previews_network()
            await self.engine.call(container.start)
            await self.engine.call(container.reload)
            self.log.info("Resumed dev server of %s in %s", project_id, container.id[:7])
        return self._record(container)

    def address(self, container) -> str:
        networks = container.attrs["NetworkSettings"]["Networks"]
        address = (networks.get(self.network) or {}).get("IPAddress")
        if not address:
            raise SandboxError(f"Container {container.name} has no address on {self.network}.")
        return address

    def _record(self, container) -> Record:
        lab = self.spares.labels(container)
        running = container.status == "running"
        endpoint = None
        if running:
            try:
                endpoint = Endpoint(self.address(container), int(lab[f"{LABEL}.port"]))
            except (KeyError, SandboxError):
                endpoint = None
        return Record.kept(under(f"{LABEL}.", lab), endpoint)

    async def poll(self, project_id: str) -> Exit | None:
        """None while the dev server runs; how it ended otherwise."""
        container = await self.engine.get(self.name_of(project_id, "run"))
        if container is None:
            return Exit(code=None, why="its container is gone")
        state = container.attrs.get("State", {})
        if state.get("Running"):
            return None
        return Exit.of(
            state.get("ExitCode"),
            out_of_memory=bool(state.get("OOMKilled")),
            limit="c.DockerBackend.memory_limit",
        )

    async def running(self) -> set[str]:
        """Projects whose dev server runs now: one engine call for all of them."""
        containers = await self.engine.client_call(
            "containers.list", sparse=True, filters=self._mine
        )
        out = set()
        for c in containers:
            role = c.attrs["Labels"].get(f"{LABEL}.role")
            if role == "run":
                out.add(c.attrs["Labels"][f"{LABEL}.project"])
            elif role == "spare" and (project_id := self.spares.project_of(c.attrs["Names"][0])):
                out.add(project_id)  # a taken spare has its project's name
        return out

    async def freeze(self, project_id: str) -> bool:
        """Pause the container (the cgroup freezer): its memory stays, its CPU is 0."""
        container = await self.engine.get(self.name_of(project_id, "run"))
        if container is None or container.status != "running":
            return False
        try:
            await self.engine.call(container.pause)
        except docker.errors.APIError as exc:
            self.log.warning("Could not freeze the dev server of %s: %s", project_id, exc)
            return False
        return True

    async def thaw(self, project_id: str) -> None:
        container = await self.engine.get(self.name_of(project_id, "run"))
        if container is not None and container.status == "paused":
            await self.engine.unpause(container)

    async def stop(self, project_id: str) -> None:
        """Stop the dev server and keep its container, so a start is fast."""
        container = await self.engine.get(self.name_of(project_id, "run"))
        if container is None or container.status not in ("running", "restarting", "paused"):
            return
        if container.status == "paused":  # else SIGTERM waits for the thaw: a stop timeout
            await self.engine.unpause(container)
        try:
            await self.engine.call(container.stop, timeout=STOP_TIMEOUT)
            self.log.info("Stopped dev server of %s (%s)", project_id, container.id[:7])
        except docker.errors.APIError as exc:
            if exc.status_code not in (304, 404):
                raise

    async def discard(self, project_id: str) -> None:
        """Remove the dev server's container: the next start makes a new one."""
        spare = self.spares.claimed.pop(project_id, None)
        if spare is not None:  # given to a start that never launched
            await self.spares.drop(spare)
        await self.engine.remove(self.name_of(project_id, "run"))
        await asyncio.to_thread(_remove_gate, self.spares.gate(project_id))

    async def remove(self, project_id: str) -> None:
        await self.engine.remove(self.name_of(project_id, "install"))
        await self.discard(project_id)

    async def recover(self, known: set[str]) -> list[Record]:
        """The dev-server containers of this owner's ``known`` projects (running ones
        first); containers of deleted projects, interrupted installs and second
        containers of one project are removed."""
        containers = await self.engine.client_call("containers.list", all=True, filters=self._mine)
        await self._leave_older(known)
        if containers:  # running ones are reached at once: guard their network first
            with contextlib.suppress(docker.errors.NotFound):
                await self.engine.guard(self.network)
        for container in containers:  # frozen by the server before: this one starts afresh
            if container.status == "paused":
                await self.engine.unpause(container)
                await self.engine.call(container.reload)
        containers = await self.spares.forget_earlier(containers)
        found = [(c, self._record(c)) for c in containers if f"{LABEL}.project" in c.labels]
        # Serving ones first: a running dev server with its link beats a stray one.
        found.sort(key=lambda f: (f[1].endpoint is None, not f[1].token))
        kept: dict[str, Record] = {}
        for container, record in found:
            project_id = record.project_id
            role = self.spares.labels(container).get(f"{LABEL}.role", "")
            why = left_over(record, role, known, kept)
            if why is None and record.endpoint and self.spares.still_held(container, project_id):
                why = "a start whose dependencies were never released to it"
            if why:
                self.log.warning("Removing container %s: %s", container.name, why)
                await self.engine.remove(container.name)
                continue
            kept[project_id] = record
        return list(kept.values())

    async def _leave_older(self, known: set[str]) -> None:
        """Containers of this owner from a release that named no store: one that runs
        a project of this store is removed (the project starts afresh); any other is
        left alone, as it may be another server's."""
        if not self.store:
            return
        listed = await self.engine.client_call(
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
                await self.engine.remove(container.name)
            else:
                self.log.info("Leaving container %s alone: it names no store", container.name)

    async def build(self, run: BuildRun) -> tuple[int | None, str]:
        """The build in a container as the dev server's, with no network at all (not
        even the previews' internal one), at the install's memory limit."""
        name = self.name_of(run.project_id, "build")
        await self.engine.remove(name)
        await asyncio.to_thread(hand_over, run.out, self.tree_owner)
        kwargs = build_container_kwargs(
            image=self.image,
            owner=self.owner,
            store=self.store,
            project_id=run.project_id,
            app_dir=run.app_dir,
            out=run.out,
            user=self.user,
            plan=run.plan,
            base=run.base,
            limits=self.install_limits,
            runtime=self.runtime or None,
        )
        try:
            container = await self.engine.create(**kwargs)
            self.log.info("Building %s in %s", run.project_id, container.id[:7])
            try:
                status = await self.engine.call(container.wait, timeout=run.timeout)
                code: int | None = status.get("StatusCode", 1)
            except requests.exceptions.ReadTimeout:
                code = None
            logs = await self.engine.call(container.logs, tail=2000)
        finally:
            # Also when cancelled (too much output, a stop): nothing is left running.
            await asyncio.shield(self.engine.remove(name))
        output = logs.decode("utf-8", "replace")[-BUILD_OUTPUT:]
        return code, f"[jupyter-reactbox] {self.isolation().how}; no network\n{output}"

    async def logs(self, project_id: str, *, tail: int = 500) -> str:
        container = await self.engine.get(self.name_of(project_id, "run"))
        if container is None:
            return ""
        data = await self.engine.call(container.logs, tail=tail)
        return data.decode("utf-8", "replace")

    async def follow_logs(self, project_id: str) -> LogFollow:
        """The dev server's output from now on.  Each follow has a thread of its own
        (never one of the pool's, so open follows cannot starve starts and stops), at
        most ``max_log_followers`` at once; ``close()`` frees it at once."""
        self.followers.take()
        try:
            container = await self.engine.get(self.name_of(project_id, "run"))
            if container is None:
                self.followers.give_back()
                return LogFollow(self.engine, None)
            stream = await self.engine.follow(container.logs, stream=True, follow=True, tail=0)
        except BaseException:
            self.followers.give_back()
            raise
        return LogFollow(self.engine, stream)

    async def close(self) -> None:
        await super().close()
        await self.spares.close()
        await self.installs.close()
        self.engine.close()
