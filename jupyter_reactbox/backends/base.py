"""The backend seam: where dev servers run, in a few coarse verbs.

A backend installs an app's dependencies (the package registry reachable, no
lifecycle scripts unless allowed), launches its dev server where nothing but
the preview proxy can reach it, tells whether it still runs, stops it keeping
what makes the next start fast, and finds its previews again after the
Jupyter server restarts, from a record of its own (labels for Docker, a state
file for the local backend).  Nothing outside a backend knows containers,
process groups or an engine's errors.

The file contract: the Jupyter server owns the project folder
(``<projects_dir>/<project>/app``) and writes it (uploads, edits, undo); the
dev server reads it and may write it (its own caches, an app's plugins), so
host-side code reads it only as data (``worktree.py``).  A backend that runs
dev servers on this machine bind-mounts the folder; one that runs them
elsewhere copies it there before ``launch`` and sends each change after
(``sync``), so that HMR sees it.

Each backend is one file, a :class:`Backend` with its own traits
(``c.DockerBackend.memory_limit``); ``c.ReactBoxApp.backend`` names it, and
other packages add one through the entry point group
``jupyter_reactbox.backends``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Protocol

from traitlets import Bool, Float, Int, Unicode
from traitlets.config import LoggingConfigurable

from .. import managers
from ..errors import InstallFailed
from ..frameworks import AppPlan
from . import modules, packages

Progress = Callable[[int, int], None]
"""Called with (packages installed so far, packages expected) during an install."""


@dataclass(frozen=True)
class Endpoint:
    """Where the preview proxy reaches a running dev server."""

    host: str
    port: int


@dataclass(frozen=True)
class Record:
    """A preview a backend keeps, with what is needed to serve it again."""

    project_id: str
    framework: str
    token: str
    base: str
    endpoint: Endpoint | None
    """None unless it is running."""


@dataclass(frozen=True)
class Exit:
    """How a dev server ended."""

    code: int | None
    why: str | None = None
    """Said by the backend when it knows more than the code (killed for memory)."""


@dataclass(frozen=True)
class InstallRun:
    """One run of a package manager, as a backend is asked to make it: in a
    sandbox that sees ``staging`` (the manifest and lockfile only) at its work
    folder and ``cache`` as the package cache, with ``env`` set."""

    project_id: str
    argv: list[str]
    staging: Path
    cache: Path
    env: dict[str, str]
    registry: str
    proxy: str | None
    members: tuple[str, ...] = ()
    """Workspace members whose own ``node_modules`` the install may make."""


def package_cache(cache_root: Path, project_id: str, ignore_scripts: bool) -> Path:
    """The package managers' cache an install mounts.  With lifecycle scripts off no
    code but the package manager's runs in an install, and it writes only what it
    fetched (checked by integrity), so one cache serves all of an owner's installs.
    With scripts on, a dependency's script could plant code there (a cached yarn or
    pnpm, a store entry) for the next project's install: each project gets its own.
    Either way it is a folder of its own: the install never sees the kept trees and
    packages beside it (``modules``, ``packages``) nor any other state of the owner."""
    return cache_root / "managers" if ignore_scripts else cache_root / "projects" / project_id


TEMP = ".tmp"
"""In an install's staging folder: the package manager's temporary files."""


def install_env(
    *,
    cache: str,
    registry: str | None,
    proxy: str | None = None,
    settings: dict[str, str] | None = None,
    work: str = "/project",
) -> dict[str, str]:
    """The environment of a package manager in a sandbox whose package cache is at
    ``cache`` and whose staging folder is ``work``, with the app's own settings
    (``.npmrc``, the manager's)."""
    env = {
        **(settings or {}),
        "HOME": "/tmp",
        # Temporary files on disk, in the staging folder, not in the sandbox's small
        # /tmp: yarn 4 converts every package to a zip there, several at once, and
        # a large app filled 256 MB of it (ENOSPC) on a host with room to spare.
        "TMPDIR": f"{work}/{TEMP}",
        "CI": "true",
        "npm_config_cache": f"{cache}/npm",
        "npm_config_update_notifier": "false",
        "YARN_CACHE_FOLDER": f"{cache}/yarn",
        "npm_config_store_dir": f"{cache}/pnpm",
        # Yarn 2+: a node_modules tree (the dev server needs one), and no scripts
        # unless the npm side allows them too (--ignore-scripts is in the argv).
        "YARN_NODE_LINKER": "node-modules",
        # A lockfile's `resolved` URL names a tarball; npm fetches it from the
        # configured registry whatever host the lockfile (the app's) wrote there.
        "npm_config_replace_registry_host": "always",
    }
    if proxy:  # the install's only way out (see egress.py)
        for name in ("npm_config_https_proxy", "npm_config_proxy", "HTTPS_PROXY", "HTTP_PROXY"):
            env[name] = proxy
    if registry:
        env["npm_config_registry"] = registry
    return env


@dataclass(frozen=True)
class Isolation:
    """How a backend isolates what it runs: shown in the project JSON, the
    widget, the Lab panel, the first log line and ``doctor``."""

    backend: str
    sandboxed: bool
    how: str
    """One line: what isolates the dev server, or why nothing does."""


class LogStream(Protocol):
    def __aiter__(self) -> AsyncIterator[str]: ...

    def close(self) -> None:
        """End the follow and free what it holds, at once."""


class Backend(LoggingConfigurable):
    """Runs the previews of one owner (a Jupyter user)."""

    name: ClassVar[str] = ""

    # Given by the app (they are its settings, for every backend), not configured here.
    owner = Unicode()
    boxed = Bool(
        False,
        help="""Project folders are filesystems of their own (``boxes``): a tree moved
        into one is copied, never renamed, so nothing is made ahead to be renamed in.""",
    )
    store = Unicode(
        help="""The id of the projects folder whose previews this backend runs
        (``ProjectStore.id``): in what it names and labels, so that two servers of
        one owner never take each other's previews for their own."""
    )
    cache_dir = Unicode(help="Package caches and kept node_modules of this owner.")
    registry = Unicode(allow_none=True, default_value=None)
    ignore_scripts = Bool(True)
    install_timeout = Float(900)
    modules_cache_size = Int(10)
    package_store_size = Int(20000)
    max_log_followers = Int(8)

    @classmethod
    def available(cls) -> str | None:
        """None if this backend can run here; else why not (``auto`` skips it)."""
        return None

    def isolation(self) -> Isolation:
        raise NotImplementedError

    # -- installs: the same steps everywhere, one run of a package manager each --

    async def install(
        self,
        project_id: str,
        app_dir: Path,
        plan: AppPlan,
        log: Path,
        progress: Progress | None = None,
        *,
        pins: dict[str, str] | None = None,
        gate: Callable[[], AbstractAsyncContextManager] = contextlib.nullcontext,
    ) -> str:
        """Make ``app_dir/node_modules`` match the lockfile: 'installed' (it did
        already), 'cached' (copied from an earlier install of the same lockfile),
        'assembled' (every package copied from earlier installs) or 'fresh'; ``pins``
        (package -> version) override what the app asks for; a package manager runs
        in ``gate`` (a place in the install queue, ``admission.py``).  Raises InstallFailed,
        with the install output written to ``log``.

        The package manager sees a staging copy of the manifest and lockfile only
        (never the app's files, which a preview may have written), and its tree is
        moved into the app when it succeeds.
        """
        # A pinned package changes the install's copy of package.json: the lockfile
        # is resolved again around it.
        argv = plan.install_argv(ignore_scripts=self.ignore_scripts, frozen=not pins)
        inputs, done, assembly = await asyncio.to_thread(
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
            why = {  # say so where the user reads the install's output
                "cached": "node_modules copied from an earlier install of the same lockfile",
                "assembled": "every package of the lockfile copied from earlier installs",
            }.get(done)
            if why:
                await asyncio.to_thread(log.write_text, f"$ {command}\nskipped: {why}\n")
            if done == "cached" and not self.boxed:
                self._spare_tree_later(inputs.fingerprint)
            return done
        async with gate():  # only a package manager's run waits its turn
            await self._fresh_install(
                project_id, app_dir, plan, log, progress, argv, command, inputs, assembly
            )
        if not self.boxed:
            self._spare_tree_later(inputs.fingerprint)
        return "fresh"

    async def _fresh_install(
        self,
        project_id: str,
        app_dir: Path,
        plan: AppPlan,
        log: Path,
        progress: Progress | None,
        argv: list[str],
        command: str,
        inputs: modules.InstallInputs,
        assembly: packages.Assembly | None,
    ) -> None:
        """The package manager's run of ``install``, into a staging folder whose tree
        is moved into the app when it succeeds."""
        proxy, registry = await self._install_route()
        cache = package_cache(Path(self.cache_dir), project_id, self.ignore_scripts)
        staging = await asyncio.to_thread(self._stage_install, app_dir, inputs, cache, registry)
        try:
            env = {**inputs.env, **plan.manager.env(registry, proxy)}
            members = tuple(inputs.members)
            transcript = f"{plan.manager.note}\n" if plan.manager.note else ""
            transcript += f"$ {command}\n"
            code, output = None, ""
            most = await asyncio.to_thread(self._assemble_most, staging, assembly)
            if most is not None:
                # npm adds the few packages the store lacks to the tree it holds.
                fill = [argv[0], "install", *argv[2:]]
                transcript += (
                    f"{most[0]} of {most[1]} packages copied from earlier installs; "
                    f"the rest with `{' '.join(fill)}`\n"
                )
                run = InstallRun(project_id, fill, staging, cache, env, registry, proxy, members)
                code, output = await self._install_once(run, progress)
                transcript += output
                if code != 0:
                    transcript += f"\nThat did not finish: a clean install.\n$ {command}\n"
                    await asyncio.to_thread(shutil.rmtree, staging / "node_modules", True)
            if code != 0:
                run = InstallRun(project_id, argv, staging, cache, env, registry, proxy, members)
                code, output = await self._install_once(run, progress)
                transcript += output
            retry = plan.manager.fallback(argv, output) if code != 0 else None
            if retry is not None:
                # A lockfile that no longer matches package.json (common in tutorials):
                # resolve again from package.json, and say so.
                argv, why = retry
                transcript += (
                    f"\n{why}: installing with `{' '.join(argv)}` instead.\n$ {' '.join(argv)}\n"
                )
                run = InstallRun(project_id, argv, staging, cache, env, registry, proxy, members)
                code, output = await self._install_once(run, progress)
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

    SPARE_TREE_DELAY: ClassVar[float] = 5.0
    """Seconds after a start has its tree before the spare copy for the next one is
    made: the start's first page is not made to share the machine with it."""

    def _spare_tree_later(self, fp: str) -> None:
        """In a while, the spare copy of ``fp``'s kept tree (``ModulesCache.make_spare``):
        the next project of that lockfile takes it by a rename, no copy."""

        async def make() -> None:
            await asyncio.sleep(self.SPARE_TREE_DELAY)
            try:
                await asyncio.to_thread(self.modules_cache.make_spare, fp)
            except OSError as exc:  # a full cache disk: the next start copies
                self.log.warning("Could not make a spare node_modules: %s", exc)

        task = asyncio.create_task(make())
        self._spare_trees.add(task)
        task.add_done_callback(self._spare_trees.discard)

    @cached_property
    def _spare_trees(self) -> set[asyncio.Task]:
        return set()

    async def _install_route(self) -> tuple[str | None, str]:
        """(the proxy an install must use, or None; the registry it installs from)."""
        raise NotImplementedError

    async def _install_once(
        self, run: InstallRun, progress: Progress | None
    ) -> tuple[int | None, str]:
        """Run the package manager once, to its end (or ``install_timeout``): its exit
        code (None if it timed out) and output.  Cancelled, it leaves nothing running."""
        raise NotImplementedError

    def _hand_over(self, path: Path) -> None:
        """Make ``path`` (a tree the sandbox will write) the sandbox user's."""

    @cached_property
    def modules_cache(self) -> modules.ModulesCache:
        return modules.ModulesCache(Path(self.cache_dir) / "modules", self.modules_cache_size)

    def _prepare_install(
        self, app_dir: Path, argv: list[str], pins: dict[str, str] | None, manager: str
    ) -> tuple[modules.InstallInputs, str | None, packages.Assembly | None]:
        """(what the install is given; how it is satisfied: 'installed', 'cached',
        'assembled' or None: install; what the package store has of the tree, for an
        install).  Blocking file work; runs on a thread."""
        Path(self.cache_dir).mkdir(parents=True, exist_ok=True)
        self._hand_over(app_dir)
        inputs = modules.install_inputs(app_dir, argv, pins, manager)
        fp = inputs.fingerprint
        if modules.installed(app_dir) == fp:
            return inputs, "installed", None
        if inputs.members:  # a workspace's trees are several: npm, yarn or pnpm makes them
            return inputs, None, None
        if self.modules_cache.restore(fp, app_dir):
            return inputs, "cached", None
        assembly = self._store_plan(inputs, manager)
        if assembly is not None and not assembly.missing:
            staging = Path(tempfile.mkdtemp(prefix=".modules-", dir=app_dir.parent))
            try:
                self.package_store.assemble(assembly, staging, owner=self._tree_owner())
                modules.mark(staging, fp)
                modules.replace_tree(app_dir / "node_modules", staging / "node_modules")
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return inputs, "assembled", None
        return inputs, None, assembly

    @cached_property
    def package_store(self) -> packages.PackageStore:
        return packages.PackageStore(Path(self.cache_dir) / "packages", self.package_store_size)

    def _tree_owner(self) -> tuple[int, int] | None:
        """(uid, gid) that files made for the sandbox must have; None: the server's."""
        return None

    def _store_plan(self, inputs: modules.InstallInputs, manager: str) -> packages.Assembly | None:
        """How the package store makes the tree ``npm ci`` would install (with the
        packages it lacks in ``missing``); None when npm must do it all."""
        if manager != "npm" or not self.ignore_scripts or inputs.settings:
            return None
        if inputs.argv[:2] != ("npm", "ci"):  # not frozen: npm resolves
            return None
        lock = packages.lockfile_of(inputs.files)
        try:
            manifest = json.loads(inputs.files.get("package.json", b""))
        except (ValueError, UnicodeDecodeError):
            return None
        if lock is None or not isinstance(manifest, dict):
            return None
        here = packages.Platform.here()
        return self.package_store.plan(manifest, lock, here, partial=True)

    def _assemble_most(self, staging: Path, assembly: packages.Assembly | None):
        """Put what the package store has of the tree into ``staging`` when that is
        most of it: (packages copied, packages in all); None (nothing made) if not."""
        if assembly is None or len(assembly.folders) <= len(assembly.missing):
            return None
        self.package_store.assemble(assembly, staging, owner=self._tree_owner())
        return len(assembly.folders), len(assembly.folders) + len(assembly.missing)

    def _stage_install(
        self, app_dir: Path, inputs: modules.InstallInputs, cache: Path, registry: str
    ) -> Path:
        """A folder beside the project holding only what the install is given."""
        staging = Path(tempfile.mkdtemp(prefix=".install-", dir=app_dir.parent))
        inputs.write(staging, registry)
        (staging / TEMP).mkdir()
        cache.mkdir(parents=True, exist_ok=True)
        self._hand_over(staging)
        self._hand_over(cache)
        return staging

    def _finish_install(
        self, project_id: str, app_dir: Path, staging: Path, inputs: modules.InstallInputs
    ) -> None:
        """Keep the fresh tree in the cache (no preview has touched it), then move it
        into the project."""
        fp = inputs.fingerprint
        (staging / "node_modules").mkdir(exist_ok=True)
        modules.mark(staging, fp)
        if inputs.members:  # not kept: members' trees and links into them are its own
            modules.place_member_trees(app_dir, staging, inputs.members)
            modules.replace_tree(app_dir / "node_modules", staging / "node_modules")
            return
        try:
            self.modules_cache.save(fp, staging)
        except OSError as exc:  # a full cache disk must not fail the start
            self.log.warning("Could not keep node_modules of %s in the cache: %s", project_id, exc)
        if self.ignore_scripts and inputs.argv[0] == "npm":  # npm alone wrote the tree
            kept = self.modules_cache.tree(fp)
            try:
                added = self.package_store.save(
                    kept or staging / "node_modules", link=kept is not None
                )
            except OSError as exc:
                self.log.warning("Could not keep the packages of %s: %s", project_id, exc)
            else:
                self.log.debug("Kept %d new packages from the install of %s", added, project_id)
        modules.replace_tree(app_dir / "node_modules", staging / "node_modules")

    @staticmethod
    async def report_install(staging: Path, waiting: asyncio.Future, progress: Progress):
        """Count the lockfile's packages as they land in ``staging``, until ``waiting``
        (the package manager) is done."""
        folders = await asyncio.to_thread(modules.expected_packages, staging)
        while not waiting.done():
            if folders:
                done = await asyncio.to_thread(modules.count_present, staging, folders)
                progress(done, len(folders))
            await asyncio.wait([waiting], timeout=0.5)

    # -- dev servers ---------------------------------------------------------------

    launches_ahead: ClassVar[bool] = False
    """Whether ``launch(held=True)`` works: the dev server's sandbox is made while
    its dependencies install, and the dev server starts on ``release``."""

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
        """Start a new dev server serving under ``base`` (on a port the backend
        picks); return once it has an address.  ``held`` (where ``launches_ahead``):
        the sandbox is made and waits, running nothing of the project, until
        ``release``."""
        raise NotImplementedError

    async def prepare_launch(self, project_id: str, app_dir: Path) -> None:
        """Before the install of a start that will ``launch(held=True)``: what the
        backend does with the project's folder first (one that keeps a sandbox made
        ahead moves the folder into it)."""

    async def release(self, project_id: str) -> None:
        """Let a dev server launched ``held`` start: its dependencies are in place
        and checked."""

    def started(self, project_id: str) -> None:
        """A start is over: its dev server answers, or the start failed.  A backend
        that makes something ahead for the next start makes it now, not during one."""

    async def kept(self, project_id: str) -> bool:
        """Whether a dev server of the project is kept (``resume`` would start it)."""
        return False

    async def sync(self, project_id: str, app_dir: Path) -> None:
        """The server wrote files of the running project: send what changed to where
        its dev server reads them.  A backend that bind-mounts the folder has nothing
        to do."""

    async def resume(self, project_id: str, app_dir: Path, plan: AppPlan) -> Record | None:
        """Start the kept dev server again if it is still current; None if there is none."""
        raise NotImplementedError

    async def poll(self, project_id: str) -> Exit | None:
        """None while the dev server runs; how it ended otherwise."""
        raise NotImplementedError

    async def running(self) -> set[str]:
        """The projects whose dev server runs now (one call for all of them)."""
        raise NotImplementedError

    async def stop(self, project_id: str) -> None:
        """Stop the dev server, keeping what makes a later start fast; no-op if stopped."""
        raise NotImplementedError

    async def freeze(self, project_id: str) -> bool:
        """Freeze the running dev server where it is (it keeps its memory, uses no
        CPU, answers nothing) until ``thaw``; False if this backend cannot."""
        return False

    async def thaw(self, project_id: str) -> None:
        """Let a frozen dev server run on; no-op if it is not frozen."""

    async def discard(self, project_id: str) -> None:
        """Forget the dev server; the next start begins from nothing."""
        raise NotImplementedError

    async def remove(self, project_id: str) -> None:
        """Remove everything the backend made for the project."""
        raise NotImplementedError

    async def recover(self, known: set[str]) -> list[Record]:
        """After a restart of the Jupyter server: the previews of ``known`` projects
        this backend still has, running or stopped; anything else it made (for
        projects that are gone, interrupted installs, duplicates) is removed."""
        raise NotImplementedError

    async def logs(self, project_id: str, *, tail: int = 500) -> str:
        raise NotImplementedError

    async def follow_logs(self, project_id: str) -> LogStream:
        """The dev server's output from now on; TooManyStreams (429) before anything
        is sent when too many are open."""
        raise NotImplementedError

    async def close(self) -> None:
        """Free what the backend holds (its dev servers are left as they are)."""
        for task in list(self._spare_trees):
            task.cancel()
