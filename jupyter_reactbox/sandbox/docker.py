"""The Docker backend: one hardened dev-server container per project.

* Install runs in a short-lived container on the owner's install network,
  which can reach the package registry; lifecycle scripts are off unless
  configured.  The package cache is a per-owner folder under the projects root.
* Run is a long-lived container on an ``internal`` network of its own (no
  route out, nothing else on it); the preview proxy reaches it by address.
  It runs as a non-root user with no capabilities, ``no-new-privileges``, a
  read-only root filesystem, a tmpfs ``/tmp``, and pids, memory and CPU limits;
  the project's ``app/`` folder is its only writable mount.
* Everything created carries ownership labels, so ``find_running`` can
  rebuild the state of a restarted Jupyter server from the engine alone.

Container specs are built by pure functions (``install_container_kwargs``,
``run_container_kwargs``) that tests compare as whole dicts.  Every SDK call
runs on a thread pool through ``_call``, which also maps SDK errors to ours.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from ..errors import EngineUnavailable, SandboxError, UserError
from ..frameworks import AppPlan
from .base import Endpoint, RunningPreview

LABEL = "org.jupyter.reactbox"
CA_IN_CONTAINER = "/etc/reactbox/ca.pem"
INSTALL_MARKER = ".reactbox-installed"
T = TypeVar("T")


class InstallFailed(UserError):
    """The app's dependencies did not install (its lockfile, a missing package, ...)."""

    status = 422


@dataclass(frozen=True)
class Limits:
    memory: str = "1g"
    cpus: float = 1.0
    pids: int = 512
    tmpfs_size: str = "256m"


def labels(owner: str, project_id: str, role: str, **extra: str) -> dict[str, str]:
    out = {
        f"{LABEL}.owner": owner,
        f"{LABEL}.project": project_id,
        f"{LABEL}.role": role,
    }
    out.update({f"{LABEL}.{k}": v for k, v in extra.items()})
    return out


def container_name(owner: str, project_id: str, role: str) -> str:
    return f"reactbox-{owner}-{project_id}" + ("" if role == "run" else f"-{role}")


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
    )
    if runtime:
        spec["runtime"] = runtime
    return spec


def install_container_kwargs(
    *,
    image: str,
    owner: str,
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
) -> dict[str, Any]:
    env = {
        "HOME": "/tmp",
        "CI": "true",
        "npm_config_cache": "/cache/npm",
        "npm_config_update_notifier": "false",
        "COREPACK_HOME": "/cache/corepack",
        "COREPACK_ENABLE_DOWNLOAD_PROMPT": "0",
        "YARN_CACHE_FOLDER": "/cache/yarn",
        "npm_config_store_dir": "/cache/pnpm",
    }
    volumes = {
        str(app_dir): {"bind": "/project", "mode": "rw"},
        str(cache_dir): {"bind": "/cache", "mode": "rw"},
    }
    if ca_file:
        env["NODE_EXTRA_CA_CERTS"] = CA_IN_CONTAINER
        volumes[ca_file] = {"bind": CA_IN_CONTAINER, "mode": "ro"}
    if registry:
        env["npm_config_registry"] = registry
        env["COREPACK_NPM_REGISTRY"] = registry.rstrip("/")
    return dict(
        image=image,
        command=argv,
        name=container_name(owner, project_id, "install"),
        user=user,
        working_dir="/project",
        environment=env,
        labels=labels(owner, project_id, "install"),
        network=network,
        volumes=volumes,
        detach=True,
        **_hardening(limits, runtime),
    )


def run_container_kwargs(
    *,
    image: str,
    owner: str,
    project_id: str,
    app_dir: Path,
    user: str,
    plan: AppPlan,
    base: str,
    token: str,
    network: str,
    limits: Limits,
    runtime: str | None = None,
) -> dict[str, Any]:
    env = {"HOME": "/tmp", "NODE_ENV": "development", **plan.dev_env(base)}
    return dict(
        image=image,
        command=plan.dev_argv(base),
        name=container_name(owner, project_id, "run"),
        user=user,
        working_dir="/project",
        environment=env,
        labels=labels(
            owner,
            project_id,
            "run",
            framework=plan.framework,
            token=token,
            base=base,
            port=str(plan.port),
        ),
        network=network,
        volumes={str(app_dir): {"bind": "/project", "mode": "rw"}},
        detach=True,
        **_hardening(limits, runtime),
    )


def install_fingerprint(app_dir: Path, argv: list[str]) -> str:
    """What decides the content of node_modules: manifest, lockfiles and command."""
    h = hashlib.sha256(" ".join(argv).encode())
    for name in (
        "package.json",
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
    ):
        path = app_dir / name
        if path.is_file():
            h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        if "node_modules" in dirnames:
            dirnames.remove("node_modules")
        os.chown(dirpath, uid, gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


class DockerSandbox:
    """Runs projects in containers of one image for one owner (a Jupyter user)."""

    def __init__(
        self,
        *,
        image: str,
        owner: str,
        uid: int,
        gid: int,
        cache_dir: Path,
        run_limits: Limits,
        install_limits: Limits,
        runtime: str | None = None,
        ca_file: str | None = None,
        registry: str | None = None,
        ignore_scripts: bool = True,
        install_timeout: float = 900,
        pool_size: int = 4,
        log: logging.Logger | None = None,
        client_factory: Callable[[], docker.DockerClient] = docker.from_env,
    ):
        self.image = image
        self.owner = owner
        self.uid, self.gid = uid, gid
        self.cache_dir = Path(cache_dir)
        self.run_limits = run_limits
        self.install_limits = install_limits
        self.runtime = runtime
        self.ca_file = ca_file
        self.registry = registry
        self.ignore_scripts = ignore_scripts
        self.install_timeout = install_timeout
        self.log = log or logging.getLogger(__name__)
        self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix="reactbox-docker")
        self._client_factory = client_factory
        self._client: docker.DockerClient | None = None

    # -- plumbing ---------------------------------------------------------

    @property
    def user(self) -> str:
        return f"{self.uid}:{self.gid}"

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
        try:
            await self._client_call("networks.get", name)
            return
        except docker.errors.NotFound:
            pass
        try:
            await self._client_call(
                "networks.create",
                name,
                driver="bridge",
                internal=internal,
                labels=labels(self.owner, project_id, "network"),
                options={"com.docker.network.bridge.enable_icc": "false"} if not internal else {},
            )
            self.log.info("Created network %s (internal=%s)", name, internal)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # created meanwhile by a concurrent call
                raise

    async def _remove_network(self, name: str) -> None:
        try:
            network = await self._client_call("networks.get", name)
            await self._call(network.remove)
        except docker.errors.NotFound:
            pass

    def _network(self, project_id: str) -> str:
        return f"reactbox-{self.owner}-{project_id}"

    # -- the Sandbox protocol -------------------------------------------------

    def _prepare_install(self, app_dir: Path, argv: list[str]) -> str | None:
        """The fingerprint to install for, or None when node_modules is up to date.

        Blocking file work; runs on a thread.
        """
        fingerprint = install_fingerprint(app_dir, argv)
        marker = app_dir / "node_modules" / INSTALL_MARKER
        if marker.is_file() and marker.read_text() == fingerprint:
            return None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0 and self.uid != 0:
            # A root server: hand the files to the unprivileged container user.
            _chown_tree(app_dir, self.uid, self.gid)
            os.chown(self.cache_dir, self.uid, self.gid)
        return fingerprint

    async def install(self, project_id: str, app_dir: Path, plan: AppPlan, log: Path) -> None:
        argv = plan.install_argv(ignore_scripts=self.ignore_scripts)
        fingerprint = await asyncio.to_thread(self._prepare_install, app_dir, argv)
        if fingerprint is None:
            self.log.info("Dependencies of %s are up to date; not installing", project_id)
            return
        network = f"reactbox-{self.owner}-install"
        await self._ensure_network(network, internal=False, project_id="")
        name = container_name(self.owner, project_id, "install")
        await self._remove_container(name)
        kwargs = install_container_kwargs(
            image=self.image,
            owner=self.owner,
            project_id=project_id,
            app_dir=app_dir,
            cache_dir=self.cache_dir,
            user=self.user,
            argv=argv,
            network=network,
            limits=self.install_limits,
            runtime=self.runtime,
            ca_file=self.ca_file,
            registry=self.registry,
        )
        container = await self._client_call("containers.run", **kwargs)
        self.log.info("Installing %s with %s in %s", project_id, argv[:2], container.id[:7])
        try:
            result = await self._call(container.wait, timeout=self.install_timeout)
            code = result.get("StatusCode", 1)
        except requests.exceptions.ReadTimeout:
            code = None
        output = (await self._call(container.logs)).decode("utf-8", "replace")
        await asyncio.to_thread(log.write_text, f"$ {' '.join(argv)}\n{output}")
        await self._remove_container(name)
        if code != 0:
            tail = "\n".join(output.strip().splitlines()[-15:])
            why = "timed out" if code is None else f"exited with code {code}"
            raise InstallFailed(f"Installing dependencies ({' '.join(argv[:2])}) {why}:\n{tail}")
        marker = app_dir / "node_modules" / INSTALL_MARKER
        await asyncio.to_thread(marker.write_text, fingerprint)

    async def run(
        self, project_id: str, app_dir: Path, plan: AppPlan, *, base: str, token: str
    ) -> Endpoint:
        network = self._network(project_id)
        await self._ensure_network(network, internal=True, project_id=project_id)
        name = container_name(self.owner, project_id, "run")
        await self._remove_container(name)
        kwargs = run_container_kwargs(
            image=self.image,
            owner=self.owner,
            project_id=project_id,
            app_dir=app_dir,
            user=self.user,
            plan=plan,
            base=base,
            token=token,
            network=network,
            limits=self.run_limits,
            runtime=self.runtime,
        )
        container = await self._client_call("containers.run", **kwargs)
        self.log.info("Started dev server of %s in %s", project_id, container.id[:7])
        await self._call(container.reload)
        return Endpoint(self._address(container, network), plan.port)

    @staticmethod
    def _address(container, network: str) -> str:
        address = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
        if not address:
            raise SandboxError(f"Container {container.name} has no address on {network}.")
        return address

    async def is_running(self, project_id: str) -> bool:
        container = await self._get_container(container_name(self.owner, project_id, "run"))
        return container is not None and container.status == "running"

    async def stop(self, project_id: str) -> None:
        await self._remove_container(container_name(self.owner, project_id, "run"))

    async def remove(self, project_id: str) -> None:
        await self._remove_container(container_name(self.owner, project_id, "install"))
        await self.stop(project_id)
        await self._remove_network(self._network(project_id))

    async def find_running(self) -> list[RunningPreview]:
        containers = await self._client_call(
            "containers.list",
            filters={"label": [f"{LABEL}.owner={self.owner}", f"{LABEL}.role=run"]},
        )
        found = []
        for c in containers:
            lab = c.labels
            project_id = lab[f"{LABEL}.project"]
            try:
                address = self._address(c, self._network(project_id))
            except (KeyError, SandboxError):
                continue
            found.append(
                RunningPreview(
                    project_id=project_id,
                    framework=lab[f"{LABEL}.framework"],
                    token=lab[f"{LABEL}.token"],
                    base=lab[f"{LABEL}.base"],
                    endpoint=Endpoint(address, int(lab[f"{LABEL}.port"])),
                )
            )
        return found

    async def logs(self, project_id: str, *, tail: int = 500) -> str:
        container = await self._get_container(container_name(self.owner, project_id, "run"))
        if container is None:
            return ""
        data = await self._call(container.logs, tail=tail)
        return data.decode("utf-8", "replace")

    async def follow_logs(self, project_id: str) -> AsyncIterator[str]:
        container = await self._get_container(container_name(self.owner, project_id, "run"))
        if container is None:
            return
        stream = await self._call(container.logs, stream=True, follow=True, tail=0)
        try:
            while True:
                chunk = await self._call(next, stream, None)
                if chunk is None:
                    return
                yield chunk.decode("utf-8", "replace")
        finally:
            stream.close()

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()
