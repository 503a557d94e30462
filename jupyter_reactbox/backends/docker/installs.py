"""Where the Docker backend's installs run, and their one way out.

An install runs in a short-lived container on the owner's ``internal`` fetch
network, whose only way out is the registry proxy on its gateway
(``egress.py``): it reaches the package registry and nothing else.  A registry
that is not https keeps the older route out, a network with one (and says so
in the log).  The shared install steps (``install.py``) call ``run_once`` and
``route``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests.exceptions

from .. import egress
from ..install import InstallRun, Progress, report_progress
from .specs import install_container_kwargs, named

if TYPE_CHECKING:
    from .backend import DockerBackend


class Installs:
    """The installs of one Docker backend."""

    def __init__(self, backend: DockerBackend):
        self.b = backend
        self.engine = backend.engine
        self.egress: egress.RegistryProxy | None = None
        self._default: str | None = None
        self.network = ""
        """The network installs run on (``route`` picks it)."""
        self._lock = asyncio.Lock()

    async def route(self) -> tuple[str | None, str]:
        """(the proxy an install must use, the registry): installs run on an
        ``internal`` network whose only way out is the registry proxy on its gateway.
        A registry that is not https keeps the older route out (and says so in the log)."""
        async with self._lock:
            registry = self.b.registry or await self.default_registry()
            try:
                target = egress.registry_target(registry)
            except ValueError:
                self.b.log.warning(
                    "The registry %s is not https: installs keep a route out to reach it.",
                    registry,
                )
                network = f"{named(self.b.owner, self.b.store)}-install"
                await self.engine.ensure_network(network, internal=False)
                self.network = network
                return None, registry
            network = f"{named(self.b.owner, self.b.store)}-fetch"
            await self.engine.ensure_network(network, internal=True)
            attrs = (await self.engine.client_call("networks.get", network)).attrs
            gateway = attrs["IPAM"]["Config"][0]["Gateway"]
            if (
                self.egress is None
                or self.egress.address is None
                or (self.egress.address[0] != gateway or self.egress.allowed != target)
            ):
                if self.egress is not None:
                    await self.egress.close()
                self.egress = egress.RegistryProxy(target, self.b.log)
                await self.egress.start(gateway)
            self.network = network
            return self.egress.url, registry

    async def default_registry(self) -> str:
        """The registry npm in the image uses when none is configured (asked once)."""
        if self._default is None:
            out = await self.engine.client_call(
                "containers.run",
                self.b.image,
                ["npm", "config", "get", "registry"],
                network_mode="none",
                remove=True,
                user=self.b.user,
                environment={"HOME": "/tmp"},
            )
            self._default = out.decode().strip()
        return self._default

    async def run_once(self, run: InstallRun, progress: Progress | None) -> tuple[int | None, str]:
        name = self.b.name_of(run.project_id, "install")
        await self.engine.remove(name)
        kwargs = install_container_kwargs(
            image=self.b.image,
            owner=self.b.owner,
            store=self.b.store,
            project_id=run.project_id,
            app_dir=run.staging,
            cache_dir=run.cache,
            user=self.b.user,
            argv=run.argv,
            network=self.network,
            limits=self.b.install_limits,
            runtime=self.b.runtime or None,
            ca_file=self.b.ca_file,
            registry=run.registry,
            settings=run.env,
            proxy=run.proxy,
        )
        return await self._run(run.project_id, kwargs, run.staging, progress)

    async def _run(
        self,
        project_id: str,
        kwargs: dict[str, Any],
        staging: Path,
        progress: Progress | None,
    ) -> tuple[int | None, str]:
        """One install container, to its end: (exit code, None if it timed out; output)."""
        name = kwargs["name"]
        try:
            container = await self.engine.create(**kwargs)
            self.b.log.info(
                "Installing %s with %s in %s", project_id, kwargs["command"][:2], container.id[:7]
            )
            waiting = asyncio.ensure_future(
                self.engine.call(container.wait, timeout=self.b.install_timeout)
            )
            if progress is not None:
                await report_progress(staging, waiting, progress)
            try:
                code = (await waiting).get("StatusCode", 1)
            except requests.exceptions.ReadTimeout:
                code = None
            output = (await self.engine.call(container.logs)).decode("utf-8", "replace")
        finally:
            # Also when cancelled (a stop, a shutdown): no install is left running.
            await asyncio.shield(self.engine.remove(name))
        return code, output

    async def close(self) -> None:
        if self.egress is not None:
            await self.egress.close()
