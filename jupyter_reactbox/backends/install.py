"""The install steps every backend shares, as an object a backend makes.

An install makes ``app/node_modules`` match the app's lockfile.  Most of its
work is the same wherever dev servers run: the package manager sees a staging
copy of the manifest and lockfile only (never the app's files, which a
preview may have written); a tree seen before is copied from the kept trees
(``modules.py``) or assembled from kept packages (``packages.py``) with no
package manager at all; a fresh tree is kept before it is moved into the app.
What differs is one run of a package manager in the backend's sandbox
(``run``) and the route it has out (``route``): a backend gives those two,
and the :class:`Installer` does the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .. import managers
from ..errors import InstallFailed
from ..frameworks import AppPlan
from . import modules, packages

Progress = Callable[[int, int], None]
"""Called with (packages installed so far, packages expected) during an install."""


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


SYSTEM_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


def system_ca_bundle() -> str | None:
    """The host's CA bundle, if it has one: what installs trust besides Node's own
    CAs (a registry behind a private CA, or a TLS-intercepting proxy)."""
    return next((p for p in SYSTEM_CA_BUNDLES if os.path.isfile(p)), None)


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


def hand_over(root: Path, owner: tuple[int, int] | None) -> None:
    """Make the work tree at ``root`` (one the sandbox will write) ``owner``'s (uid,
    gid; None: leave it the server's): by folder descriptors, never by a path a
    planted link could redirect (the tree may have been written by a preview)."""
    if owner is None:
        return
    uid, gid = owner
    for _, dirnames, filenames, dfd in os.fwalk(root, follow_symlinks=False):
        if "node_modules" in dirnames:
            dirnames.remove("node_modules")
        os.fchown(dfd, uid, gid)
        for name in filenames:
            os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)


RunOnce = Callable[[InstallRun, "Progress | None"], Awaitable[tuple[int | None, str]]]
"""One run of a package manager in a backend's sandbox, to its end (or the install
timeout): its exit code (None if it timed out) and output.  Cancelled, it leaves
nothing running."""

Route = Callable[[], Awaitable[tuple[str | None, str]]]
"""(the proxy an install must use, or None; the registry it installs from)."""


class Installer:
    """Installs one owner's apps with ``run`` (one run of a package manager in a
    backend's sandbox), keeping under ``cache_dir`` what makes the next install of
    the same packages fast."""

    SPARE_TREE_DELAY = 5.0
    """Seconds after a start has its tree before the spare copy for the next one is
    made: the start's first page is not made to share the machine with it."""

    def __init__(
        self,
        *,
        cache_dir: Path,
        run: RunOnce,
        route: Route,
        log,
        ignore_scripts: bool = True,
        boxed: bool = False,
        modules_cache_size: int = 10,
        package_store_size: int = 20000,
        owner: tuple[int, int] | None = None,
    ):
        self.cache_dir = cache_dir
        self._run = run
        self._route = route
        self.log = log
        self.ignore_scripts = ignore_scripts
        self.boxed = boxed
        """Project folders are filesystems of their own: no spare tree is made to be
        renamed in."""
        self.modules_cache_size = modules_cache_size
        self.package_store_size = package_store_size
        self.owner = owner
        """(uid, gid) that files made for the sandbox must have; None: the server's."""
        self._spare_trees: set[asyncio.Task] = set()

    def _hand_over(self, path: Path) -> None:
        hand_over(path, self.owner)

    def close(self) -> None:
        """Cancel the spare copies still to be made."""
        for task in list(self._spare_trees):
            task.cancel()

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
        proxy, registry = await self._route()
        cache = package_cache(self.cache_dir, project_id, self.ignore_scripts)
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
                code, output = await self._run(run, progress)
                transcript += output
                if code != 0:
                    transcript += f"\nThat did not finish: a clean install.\n$ {command}\n"
                    await asyncio.to_thread(shutil.rmtree, staging / "node_modules", True)
            if code != 0:
                run = InstallRun(project_id, argv, staging, cache, env, registry, proxy, members)
                code, output = await self._run(run, progress)
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
                code, output = await self._run(run, progress)
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
    def modules_cache(self) -> modules.ModulesCache:
        return modules.ModulesCache(self.cache_dir / "modules", self.modules_cache_size)

    def _prepare_install(
        self, app_dir: Path, argv: list[str], pins: dict[str, str] | None, manager: str
    ) -> tuple[modules.InstallInputs, str | None, packages.Assembly | None]:
        """(what the install is given; how it is satisfied: 'installed', 'cached',
        'assembled' or None: install; what the package store has of the tree, for an
        install).  Blocking file work; runs on a thread."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
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
                self.package_store.assemble(assembly, staging, owner=self.owner)
                modules.mark(staging, fp)
                modules.replace_tree(app_dir / "node_modules", staging / "node_modules")
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return inputs, "assembled", None
        return inputs, None, assembly

    @cached_property
    def package_store(self) -> packages.PackageStore:
        return packages.PackageStore(self.cache_dir / "packages", self.package_store_size)

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
        self.package_store.assemble(assembly, staging, owner=self.owner)
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


async def report_progress(staging: Path, waiting: asyncio.Future, progress: Progress) -> None:
    """Count the lockfile's packages as they land in ``staging``, until ``waiting``
    (the package manager) is done."""
    folders = await asyncio.to_thread(modules.expected_packages, staging)
    while not waiting.done():
        if folders:
            done = await asyncio.to_thread(modules.count_present, staging, folders)
            progress(done, len(folders))
        await asyncio.wait([waiting], timeout=0.5)
