"""Where the Kubernetes backend's installs run, and their way out.

An install runs in a pod of its own that idles while the package manager runs
in it by exec; its staging folder is sent in, and ``node_modules`` comes back
as a tar, unpacked here with checks (``unpack_modules``).  The registry is
reached through the service's registry proxy when ``proxy_address`` (or the
pod's own address) is known: the install pod's NetworkPolicy allows only it.
The shared install steps (``install.py``) call ``run_once`` and ``route``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import SandboxError
from .. import egress
from ..install import InstallRun, Progress, install_env
from .objects import PROJECT, install_pod, network_policy, pod_name
from .transfer import unpack_modules

if TYPE_CHECKING:
    from .backend import KubernetesBackend


class Installs:
    """The installs of one Kubernetes backend."""

    def __init__(self, backend: KubernetesBackend):
        self.b = backend
        self.egress: egress.RegistryProxy | None = None
        self._default: str | None = None

    async def route(self) -> tuple[str | None, str]:
        registry = self.b.registry or await self.default_registry()
        host = self.b.proxy_address or os.environ.get("POD_IP", "")
        if not host:
            return None, registry
        target = egress.registry_target(registry)
        if self.egress is None or self.egress.allowed != target:
            if self.egress is not None:
                await self.egress.close()
            self.egress = egress.RegistryProxy(target, self.b.log)
            await self.egress.start(host)
        return self.egress.url, registry

    async def default_registry(self) -> str:
        """The registry npm in the image uses when none is configured (asked once, in
        a short-lived pod)."""
        if self._default is None:
            name = pod_name(self.b.owner, "registry-probe", "install")
            pod = install_pod(
                image=self.b.image,
                owner=self.b.owner,
                project_id="registry-probe",
                limits=self.b.limits(self.b.memory_limit),
                placement=self.b.placement(),
                deadline=120,
                uid=self.b.uid,
            )
            policy = network_policy(
                owner=self.b.owner, project_id="registry-probe", role="install", ingress_from=[]
            )
            try:
                await self.b.cluster.create(pod, policy)
                await self.b.cluster.wait_pod(name, self.b.cluster.is_running, self.b.start_timeout)
                code, out = await self.b.cluster.exec(name, ["npm", "config", "get", "registry"])
                if code != 0:
                    raise SandboxError(f"npm config get registry failed: {out.decode()[-300:]}")
                self._default = out.decode().strip()
            finally:
                await asyncio.shield(self.b.cluster.delete(name, policy=True))
        return self._default

    async def run_once(self, run: InstallRun, progress: Progress | None) -> tuple[int | None, str]:
        name = pod_name(self.b.owner, run.project_id, "install")
        pod = install_pod(
            image=self.b.image,
            owner=self.b.owner,
            project_id=run.project_id,
            limits=self.b.limits(self.b.install_memory_limit),
            placement=self.b.placement(),
            deadline=int(self.b.install_timeout) + 120,
            uid=self.b.uid,
            ca_map=await self.b.ensure_ca(),
            cache_claim=await self.b.ensure_cache(),
        )
        proxy = None
        if run.proxy:
            host, port = run.proxy.removeprefix("http://").rsplit(":", 1)
            proxy = (host, int(port))
        policy = network_policy(
            owner=self.b.owner,
            project_id=run.project_id,
            role="install",
            ingress_from=[],
            registry_proxy=proxy,
        )
        env = install_env(cache="/cache", registry=run.registry, proxy=run.proxy, settings=run.env)
        try:
            await self.b.cluster.create(pod, policy)
            await self.b.cluster.wait_pod(name, self.b.cluster.is_running, self.b.start_timeout)
            staged = [p.name for p in run.staging.iterdir()]
            await self.b.send(name, run.staging, staged)
            argv = ["env", *(f"{k}={v}" for k, v in sorted(env.items())), *run.argv]
            try:
                code, output = await self.b.cluster.exec(
                    name,
                    ["sh", "-c", 'cd /project && exec "$@" 2>&1', "install", *argv],
                    timeout=self.b.install_timeout,
                )
            except asyncio.TimeoutError:
                return None, ""
            text = output.decode("utf-8", "replace")
            if code == 0:
                await self._fetch_modules(name, run.staging, run.members)
            return code, text
        finally:
            await asyncio.shield(self.b.cluster.delete(name, policy=True))

    async def _fetch_modules(self, pod: str, staging: Path, members: tuple[str, ...] = ()) -> None:
        """``node_modules`` of the install pod (and of its workspace members, where
        it made one) into ``staging`` (``unpack_modules``)."""
        trees = ["node_modules", *(f"{m}/node_modules" for m in members)]
        with tempfile.TemporaryFile(prefix="reactbox-modules-") as f:
            code, err = await self.b.cluster.exec(
                pod,
                ["tar", "-c", "--ignore-failed-read", "-C", PROJECT, "--", *trees],
                stdout=f,
                timeout=600,
            )
            if code != 0:
                raise SandboxError(f"Could not fetch node_modules: {err.decode()[-500:]}")
            f.seek(0)
            # What the store assembled there was sent to the pod, and is in the archive.
            await asyncio.to_thread(shutil.rmtree, staging / "node_modules", True)
            await asyncio.to_thread(unpack_modules, f, staging, members)

    async def close(self) -> None:
        if self.egress is not None:
            await self.egress.close()
