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
* Everything created carries ownership labels, so ``find_running`` can
  rebuild the state of a restarted Jupyter server from the engine alone.

Container specs are built by pure functions (``install_container_kwargs``,
``run_container_kwargs``) that tests compare as whole dicts.  Every SDK call
runs on a thread pool through ``_call``, which also maps SDK errors to ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from .. import managers
from ..errors import EngineUnavailable, SandboxError, TooManyStreams, UserError
from ..frameworks import SUPPORT, AppPlan
from . import egress, modules
from .base import Endpoint, Exit, Found, Progress

LABEL = "org.jupyter.reactbox"
CA_IN_CONTAINER = "/etc/reactbox/ca.pem"
STOP_TIMEOUT = 5
SUPPORT_DIR = Path(__file__).parent / "support"
"""jupyter-reactbox's own scripts for dev servers, mounted read-only at ``SUPPORT``."""

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
    env = {
        **(settings or {}),
        "HOME": "/tmp",
        "CI": "true",
        "npm_config_cache": "/cache/npm",
        "npm_config_update_notifier": "false",
        "YARN_CACHE_FOLDER": "/cache/yarn",
        "npm_config_store_dir": "/cache/pnpm",
        # Yarn 2+: a node_modules tree (the dev server needs one), and no scripts
        # unless the npm side allows them too (--ignore-scripts is in the argv).
        "YARN_NODE_LINKER": "node-modules",
        # A lockfile's `resolved` URL names a tarball; npm fetches it from the
        # configured registry whatever host the lockfile (the app's) wrote there.
        "npm_config_replace_registry_host": "always",
    }
    volumes = {
        str(app_dir): {"bind": "/project", "mode": "rw"},
        str(cache_dir): {"bind": "/cache", "mode": "rw"},
    }
    if ca_file:
        env["NODE_EXTRA_CA_CERTS"] = CA_IN_CONTAINER
        volumes[ca_file] = {"bind": CA_IN_CONTAINER, "mode": "ro"}
    if proxy:  # the only way out of the install's internal network (see egress.py)
        for name in ("npm_config_https_proxy", "npm_config_proxy", "HTTPS_PROXY", "HTTP_PROXY"):
            env[name] = proxy
    if registry:
        env["npm_config_registry"] = registry
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
        volumes={
            str(app_dir): {"bind": "/project", "mode": "rw"},
            str(SUPPORT_DIR): {"bind": SUPPORT, "mode": "ro"},
        },
        detach=True,
        **_hardening(limits, runtime),
    )


def package_cache(cache_root: Path, project_id: str, ignore_scripts: bool) -> Path:
    """The package managers' cache an install mounts.  With lifecycle scripts off no
    code but the package manager's runs in an install, and it writes only what it
    fetched (checked by integrity), so one cache serves all of an owner's installs.
    With scripts on, a dependency's script could plant code there (a cached yarn or
    pnpm, a store entry) for the next project's install: each project gets its own."""
    return cache_root if ignore_scripts else cache_root / "projects" / project_id


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

    def __init__(self, sandbox: DockerSandbox, stream: Any):
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
        max_log_followers: int = 8,
        modules_cache_size: int = 10,
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
        self.modules_cache = modules.ModulesCache(self.cache_dir / "modules", modules_cache_size)
        self.log = log or logging.getLogger(__name__)
        self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix="reactbox-docker")
        # A followed log blocks a thread until its container prints: never one of the
        # pool's, so open follows cannot starve starts, stops and logs.
        self.max_log_followers = max_log_followers
        self._followers = ThreadPoolExecutor(max_log_followers, thread_name_prefix="reactbox-logs")
        self._following = 0
        self._egress: egress.RegistryProxy | None = None
        self._registry_default: str | None = None
        self._route_lock = asyncio.Lock()
        self._client_factory = client_factory
        self._client: docker.DockerClient | None = None
        self._network_lock = asyncio.Lock()

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

    async def _create(self, **kwargs: Any):
        """``containers.run``, whole: if the caller is cancelled (a stop, a delete) while
        the engine makes the container, the engine finishes on its thread anyway; the
        container is then removed before the cancellation goes on, so no container is
        ever left running that the server does not know."""
        making = asyncio.ensure_future(self._client_call("containers.run", **kwargs))
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
                return
            except docker.errors.NotFound:
                pass
            try:
                await self._client_call(
                    "networks.create",
                    name,
                    driver="bridge",
                    internal=internal,
                    check_duplicate=True,
                    labels=labels(self.owner, project_id, "network"),
                    # icc off: containers on it cannot reach each other, only the host them.
                    options={"com.docker.network.bridge.enable_icc": "false"},
                )
                self.log.info("Created network %s (internal=%s)", name, internal)
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # made meanwhile by another server process
                    raise

    async def _install_route(self) -> tuple[str, str | None, str]:
        """(the network an install runs on, the proxy it must use, the registry): an ``internal``
        network whose only way out is the registry proxy on its gateway.  A registry
        that is not https keeps the older route out (and says so in the log)."""
        async with self._route_lock:
            registry = self.registry or await self._default_registry()
            try:
                target = egress.registry_target(registry)
            except ValueError:
                self.log.warning(
                    "The registry %s is not https: installs keep a route out to reach it.",
                    registry,
                )
                network = f"reactbox-{self.owner}-install"
                await self._ensure_network(network, internal=False, project_id="")
                return network, None, registry
            network = f"reactbox-{self.owner}-fetch"
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
            return network, self._egress.url, registry

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
        return f"reactbox-{self.owner}-previews"

    # -- the Sandbox protocol -------------------------------------------------

    def _prepare_install(
        self, app_dir: Path, argv: list[str], pins: dict[str, str] | None, manager: str
    ) -> tuple[modules.InstallInputs, str | None]:
        """(what the install is given, how it is satisfied: 'installed', 'cached' or
        None: install).  Blocking file work; runs on a thread."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0 and self.uid != 0:
            # A root server: hand the files to the unprivileged container user.
            _chown_tree(app_dir, self.uid, self.gid)
            os.chown(self.cache_dir, self.uid, self.gid)
        inputs = modules.install_inputs(app_dir, argv, pins, manager)
        fp = inputs.fingerprint
        if modules.installed(app_dir) == fp:
            return inputs, "installed"
        if self.modules_cache.restore(fp, app_dir):
            return inputs, "cached"
        return inputs, None

    def _stage_install(
        self, app_dir: Path, inputs: modules.InstallInputs, cache: Path, registry: str
    ) -> Path:
        """A folder beside the project holding only what the install is given."""
        staging = Path(tempfile.mkdtemp(prefix=".install-", dir=app_dir.parent))
        inputs.write(staging, registry)
        cache.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0 and self.uid != 0:
            _chown_tree(staging, self.uid, self.gid)
            os.chown(cache, self.uid, self.gid)
        return staging

    def _finish_install(
        self, project_id: str, app_dir: Path, staging: Path, inputs: modules.InstallInputs
    ) -> None:
        """Keep the fresh tree in the cache (no preview has touched it), then move it
        into the project."""
        fp = inputs.fingerprint
        (staging / "node_modules").mkdir(exist_ok=True)
        modules.mark(staging, fp)
        try:
            self.modules_cache.save(fp, staging)
        except OSError as exc:  # a full cache disk must not fail the start
            self.log.warning("Could not keep node_modules of %s in the cache: %s", project_id, exc)
        modules.replace_tree(app_dir / "node_modules", staging / "node_modules")

    async def install(
        self,
        project_id: str,
        app_dir: Path,
        plan: AppPlan,
        log: Path,
        progress: Progress | None = None,
        *,
        pins: dict[str, str] | None = None,
    ) -> str:
        # A pinned package changes the install's copy of package.json: the lockfile
        # is resolved again around it.
        argv = plan.install_argv(ignore_scripts=self.ignore_scripts, frozen=not pins)
        inputs, done = await asyncio.to_thread(
            self._prepare_install, app_dir, argv, pins, plan.manager.name
        )
        command = " ".join(argv) + "".join(
            f" ({k}={v} from .npmrc)" for k, v in inputs.settings.items()
        )
        if pins:
            command += "".join(
                f" (with {name} {v} in place of the app's)" for name, v in pins.items()
            )
        if done:
            self.log.info("Dependencies of %s: %s (%s)", project_id, done, inputs.fingerprint[:12])
            if done == "cached":  # say so where the user reads the install's output
                why = "node_modules copied from an earlier install of the same lockfile"
                await asyncio.to_thread(log.write_text, f"$ {command}\nskipped: {why}\n")
            return done
        network, proxy, registry = await self._install_route()
        name = container_name(self.owner, project_id, "install")
        await self._remove_container(name)
        cache = package_cache(self.cache_dir, project_id, self.ignore_scripts)
        staging = await asyncio.to_thread(self._stage_install, app_dir, inputs, cache, registry)
        try:
            common = dict(
                image=self.image,
                owner=self.owner,
                project_id=project_id,
                app_dir=staging,
                cache_dir=cache,
                user=self.user,
                network=network,
                limits=self.install_limits,
                runtime=self.runtime,
                ca_file=self.ca_file,
                registry=registry,
                settings={**inputs.env, **plan.manager.env(registry, proxy)},
                proxy=proxy,
            )
            transcript = f"{plan.manager.note}\n" if plan.manager.note else ""
            transcript += f"$ {command}\n"
            code, output = await self._run_install(
                project_id, install_container_kwargs(argv=argv, **common), staging, progress
            )
            transcript += output
            retry = plan.manager.fallback(argv, output) if code != 0 else None
            if retry is not None:
                # A lockfile that no longer matches package.json (common in tutorials):
                # resolve again from package.json, and say so.
                argv, why = retry
                transcript += (
                    f"\n{why}: installing with `{' '.join(argv)}` instead.\n$ {' '.join(argv)}\n"
                )
                code, output = await self._run_install(
                    project_id, install_container_kwargs(argv=argv, **common), staging, progress
                )
                transcript += output
            await asyncio.to_thread(log.write_text, transcript)
            if code != 0:
                tail = "\n".join(output.strip().splitlines()[-15:])
                why = "timed out" if code is None else f"exited with code {code}"
                first = managers.first_error(output)
                raise InstallFailed(
                    f"Installing dependencies ({plan.manager.name} install) {why}"
                    + (f": {first}" if first else "")
                    + f"\n{tail}"
                )
            await asyncio.to_thread(self._finish_install, project_id, app_dir, staging, inputs)
        finally:
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, staging, True))
        return "fresh"

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
                await self._report_install(staging, waiting, progress)
            try:
                code = (await waiting).get("StatusCode", 1)
            except requests.exceptions.ReadTimeout:
                code = None
            output = (await self._call(container.logs)).decode("utf-8", "replace")
        finally:
            # Also when cancelled (a stop, a shutdown): no install is left running.
            await asyncio.shield(self._remove_container(name))
        return code, output

    @staticmethod
    async def _report_install(app_dir: Path, waiting: asyncio.Future, progress: Progress):
        """Count the lockfile's packages as they land, until the install ends."""
        folders = await asyncio.to_thread(modules.expected_packages, app_dir)
        while not waiting.done():
            if folders:
                done = await asyncio.to_thread(modules.count_present, app_dir, folders)
                progress(done, len(folders))
            await asyncio.wait([waiting], timeout=0.5)

    def _run_kwargs(self, project_id: str, app_dir: Path, plan: AppPlan, base: str, token: str):
        def spec(base: str, token: str) -> dict[str, Any]:
            return run_container_kwargs(
                image=self.image,
                owner=self.owner,
                project_id=project_id,
                app_dir=app_dir,
                user=self.user,
                plan=plan,
                base=base,
                token=token,
                network=self.network,
                limits=self.run_limits,
                runtime=self.runtime,
            )

        kwargs = spec(base, token)
        kwargs["labels"][f"{LABEL}.spec"] = spec_hash(spec("{base}", "{token}"))
        return kwargs

    async def run(
        self, project_id: str, app_dir: Path, plan: AppPlan, *, base: str, token: str
    ) -> Endpoint:
        await self._ensure_network(self.network, internal=True, project_id="")
        name = container_name(self.owner, project_id, "run")
        await self._remove_container(name)
        kwargs = self._run_kwargs(project_id, app_dir, plan, base, token)
        container = await self._create(**kwargs)
        self.log.info("Started dev server of %s in %s", project_id, container.id[:7])
        await self._call(container.reload)
        return Endpoint(self._address(container), plan.port)

    async def resume(self, project_id: str, app_dir: Path, plan: AppPlan) -> Found | None:
        """Start the kept container of a project again, if its spec is still current."""
        container = await self._get_container(container_name(self.owner, project_id, "run"))
        if container is None:
            return None
        lab = container.labels
        current = self._run_kwargs(project_id, app_dir, plan, "{base}", "{token}")
        if lab.get(f"{LABEL}.spec") != current["labels"][f"{LABEL}.spec"]:
            self.log.info("The kept dev server of %s is out of date; replacing it", project_id)
            await self._remove_container(container.name)
            return None
        if container.status != "running":
            await self._ensure_network(self.network, internal=True, project_id="")
            await self._call(container.start)
            await self._call(container.reload)
            self.log.info("Resumed dev server of %s in %s", project_id, container.id[:7])
        return self._found(container)

    def _address(self, container) -> str:
        networks = container.attrs["NetworkSettings"]["Networks"]
        address = (networks.get(self.network) or {}).get("IPAddress")
        if not address:
            raise SandboxError(f"Container {container.name} has no address on {self.network}.")
        return address

    def _found(self, container) -> Found:
        lab = container.labels
        running = container.status == "running"
        endpoint = None
        if running:
            try:
                endpoint = Endpoint(self._address(container), int(lab[f"{LABEL}.port"]))
            except (KeyError, SandboxError):
                endpoint = None
        return Found(
            project_id=lab[f"{LABEL}.project"],
            role=lab.get(f"{LABEL}.role", ""),
            name=container.name,
            framework=lab.get(f"{LABEL}.framework", ""),
            token=lab.get(f"{LABEL}.token", ""),
            base=lab.get(f"{LABEL}.base", ""),
            endpoint=endpoint,
        )

    async def is_running(self, project_id: str) -> bool:
        container = await self._get_container(container_name(self.owner, project_id, "run"))
        return container is not None and container.status == "running"

    async def exit_info(self, project_id: str) -> Exit | None:
        """How the dev server ended, or None while it runs (or if there is none)."""
        container = await self._get_container(container_name(self.owner, project_id, "run"))
        if container is None:
            return Exit(code=None, oom=False)
        state = container.attrs.get("State", {})
        if state.get("Running"):
            return None
        return Exit(code=state.get("ExitCode"), oom=bool(state.get("OOMKilled")))

    async def running(self) -> set[str]:
        """Projects whose dev server runs now: one engine call for all of them."""
        containers = await self._client_call(
            "containers.list",
            sparse=True,
            filters={"label": [f"{LABEL}.owner={self.owner}", f"{LABEL}.role=run"]},
        )
        return {c.attrs["Labels"][f"{LABEL}.project"] for c in containers}

    async def stop(self, project_id: str) -> None:
        """Stop the dev server and keep its container, so a start is fast."""
        container = await self._get_container(container_name(self.owner, project_id, "run"))
        if container is None or container.status not in ("running", "restarting", "paused"):
            return
        try:
            await self._call(container.stop, timeout=STOP_TIMEOUT)
            self.log.info("Stopped dev server of %s (%s)", project_id, container.id[:7])
        except docker.errors.APIError as exc:
            if exc.status_code not in (304, 404):
                raise

    async def discard(self, project_id: str) -> None:
        """Remove the dev server's container: the next start makes a new one."""
        await self._remove_container(container_name(self.owner, project_id, "run"))

    async def remove(self, project_id: str) -> None:
        await self._remove_container(container_name(self.owner, project_id, "install"))
        await self.discard(project_id)

    async def find(self) -> list[Found]:
        """Every container of this owner, running or not, install ones included."""
        containers = await self._client_call(
            "containers.list", all=True, filters={"label": f"{LABEL}.owner={self.owner}"}
        )
        return [self._found(c) for c in containers if f"{LABEL}.project" in c.labels]

    async def remove_container(self, name: str) -> None:
        await self._remove_container(name)

    async def logs(self, project_id: str, *, tail: int = 500) -> str:
        container = await self._get_container(container_name(self.owner, project_id, "run"))
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
        container = await self._get_container(container_name(self.owner, project_id, "run"))
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
        if self._egress is not None:
            await self._egress.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._followers.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()
