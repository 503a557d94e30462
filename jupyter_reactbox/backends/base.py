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

Each backend is a :class:`Backend` with its own traits
(``c.DockerBackend.memory_limit``; ``c.Backend.<name>`` for what every backend
has); ``c.ReactBoxApp.backend`` names it, and other packages add one through
the entry point group ``jupyter_reactbox.backends``.  The install steps all
backends share are an object a backend makes (``install.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Protocol

from traitlets import Bool, Float, Int, Unicode
from traitlets.config import LoggingConfigurable

from ..errors import NoBuild, TooManyStreams
from ..frameworks import AppPlan
from .install import (  # noqa: F401  (what a backend is given and gives)
    Installer,
    InstallRun,
    Progress,
    Route,
    RunOnce,
    install_env,
    package_cache,
    report_progress,
)


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

    @classmethod
    def kept(cls, fields: Mapping[str, object], endpoint: Endpoint | None = None) -> Record:
        """The record a backend wrote where it keeps it (a container's labels, a pod's
        annotations, a state file), each field under its own name."""
        return cls(
            project_id=str(fields.get("project", "")),
            framework=str(fields.get("framework", "")),
            token=str(fields.get("token", "")),
            base=str(fields.get("base", "")),
            endpoint=endpoint,
        )

    def fields(self) -> dict[str, str]:
        """What ``kept`` reads back, to write where the backend keeps it."""
        return {
            "project": self.project_id,
            "framework": self.framework,
            "token": self.token,
            "base": self.base,
        }


def under(prefix: str, mapping: Mapping[str, str]) -> dict[str, str]:
    """The entries of ``mapping`` named ``<prefix><name>``, by their names."""
    return {k[len(prefix) :]: v for k, v in mapping.items() if k.startswith(prefix)}


def left_over(record: Record, role: str, known: set[str], kept: Collection[str]) -> str | None:
    """Why something a backend finds after a restart is not a preview to keep (its
    project is gone, an install cut short, a second dev server of one project);
    None: it is one."""
    if record.project_id not in known:
        return "its project is gone"
    if role != "run":
        return "an interrupted install"
    if record.project_id in kept:
        return "a second dev server of the project"
    return None


@dataclass(frozen=True)
class Exit:
    """How a dev server ended."""

    code: int | None
    why: str | None = None
    """Said by the backend when it knows more than the code (killed for memory)."""

    @classmethod
    def of(cls, code: int | None, *, out_of_memory: bool, limit: str) -> Exit:
        """An exit with ``code``, and why when the kernel killed it for its memory
        (past the setting ``limit`` names)."""
        why = f"was killed for using too much memory ({limit})" if out_of_memory else None
        return cls(code, why)


@dataclass(frozen=True)
class Isolation:
    """How a backend isolates what it runs: shown in the project JSON, the
    widget, the Lab panel, the first log line and ``doctor``."""

    backend: str
    sandboxed: bool
    how: str
    """One line: what isolates the dev server, or why nothing does."""


@dataclass(frozen=True)
class Finding:
    """One line of ``jupyter reactbox doctor``."""

    ok: bool | None
    """None: a warning (it runs, with less than it could)."""
    text: str


class LogStream(Protocol):
    def __aiter__(self) -> AsyncIterator[str]: ...

    def close(self) -> None:
        """End the follow and free what it holds, at once."""


class Followers:
    """How many followed logs are open, at most ``most``: each holds a thread or a
    connection until its client leaves."""

    def __init__(self, most: int):
        self.most = most
        self.open = 0

    def take(self) -> None:
        """One more follow, or TooManyStreams (429) before anything is sent."""
        if self.open >= self.most:
            raise TooManyStreams(
                f"{self.open} followed logs are open already; close one (or wait for "
                "its client to leave) and try again."
            )
        self.open += 1

    def give_back(self) -> None:
        self.open -= 1


@dataclass(frozen=True)
class BuildRun:
    """One production build of an app (``builds.py``), as a backend is asked to run
    it: in the dev server's sandbox, with no network at all, writing ``out`` (a
    folder outside the app, empty) for the base it will be served under."""

    project_id: str
    app_dir: Path
    plan: AppPlan
    base: str
    out: Path
    timeout: float


BUILD_OUTPUT = 256 << 10
"""What is kept of a build's output: its last this many bytes."""


async def read_tail(stream, keep: int = BUILD_OUTPUT) -> str:
    """A stream read to its end, keeping its last ``keep`` bytes (a build may print
    without end)."""
    kept = bytearray()
    while chunk := await stream.read(64 << 10):
        kept += chunk
        if len(kept) > 2 * keep:
            del kept[:-keep]
    return bytes(kept[-keep:]).decode("utf-8", "replace")


NewLink = Callable[[], tuple[str, str]]
"""Mints a new link for a preview: (token, base path). The old link is dead."""


class Start:
    """One start of a project's dev server, opened before its dependencies install
    and ended by ``ready`` once they are in place (``Backend.start``)::

        async with backend.start(project_id, app_dir, plan, fresh=False, link=mint) as start:
            await backend.install(...)
            record = await start.ready()   # where the dev server listens, and its link

    Here: the kept dev server is resumed if it is current, else one is launched
    at a new link.  A backend that makes the sandbox while the dependencies
    install does so on entry, and removes it if the start does not get to
    ``ready``.
    """

    def __init__(
        self,
        backend: Backend,
        project_id: str,
        app_dir: Path,
        plan: AppPlan,
        *,
        fresh: bool,
        link: NewLink,
    ):
        self.backend = backend
        self.project_id = project_id
        self.app_dir = app_dir
        self.plan = plan
        self.fresh = fresh
        """A new dev server at a new link, whatever is kept."""
        self.link = link

    async def __aenter__(self) -> Start:
        if self.fresh:
            await self.backend.discard(self.project_id)
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def ready(self) -> Record:
        """The dependencies are in place and checked: the dev server launched (or
        resumed), and where it listens."""
        backend, project_id, plan = self.backend, self.project_id, self.plan
        if not self.fresh:
            found = await backend.resume(project_id, self.app_dir, plan)
            if found is not None and found.endpoint is not None and found.token:
                return found
        token, base = self.link()
        endpoint = await backend.launch(project_id, self.app_dir, plan, base=base, token=token)
        return Record(project_id, plan.framework, token, base, endpoint)


class Backend(LoggingConfigurable):
    """Runs the previews of one owner (a Jupyter user).

    The contract, in coarse verbs: ``install``, ``start`` (then ``ready``),
    ``poll``, ``running``, ``stop`` (keeping what makes the next start fast),
    ``freeze``/``thaw``, ``discard``, ``remove``, ``recover``, ``build``, ``logs``,
    ``follow_logs``, ``sync``, ``doctor``, ``close``.  ``launch`` and ``resume``
    are the two ways the default ``Start`` gets a dev server.
    """

    name: ClassVar[str] = ""

    # Given by the app for each owner's store, not configured.
    owner = Unicode(help="The Jupyter user whose previews these are.")
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

    # Settings of every backend: c.Backend.<name> (or c.DockerBackend.<name>, ...).
    registry = Unicode(
        "",
        help="""Package registry URL for installs (npm_config_registry), e.g. a local
        mirror. Empty: the package manager's default.""",
    ).tag(config=True)
    ignore_scripts = Bool(
        True,
        help="""Install dependencies with --ignore-scripts, so no package's lifecycle
        script runs. Turn off only for apps you trust that need them.""",
    ).tag(config=True)
    install_timeout = Float(900, help="Seconds a dependency install may take.").tag(config=True)
    modules_cache_size = Int(
        10,
        help="""Installed node_modules trees kept per user, keyed by the lockfile, so a
        re-upload or a second project with the same lockfile installs nothing (0: off).""",
    ).tag(config=True)
    package_store_size = Int(
        20000,
        help="""Package folders kept per user from npm installs (with ignore_scripts on),
        by integrity: a new lockfile whose packages earlier installs all fetched is
        assembled from copies of them and runs no npm (0: off).""",
    ).tag(config=True)
    max_log_followers = Int(
        8,
        help="""Followed logs (`logs?follow=1`, `%reactbox logs --follow`) open at once;
        each holds a thread of its own until its client leaves. One more is a 429.""",
    ).tag(config=True)

    @classmethod
    def available(cls) -> str | None:
        """None if this backend can run here; else why not (``auto`` skips it)."""
        return None

    def isolation(self) -> Isolation:
        raise NotImplementedError

    async def doctor(self) -> list[Finding]:
        """What ``jupyter reactbox doctor`` says of this backend here: what it needs,
        and whether it has it."""
        isolation = self.isolation()
        return [Finding(True if isolation.sandboxed else None, f"sandbox: {isolation.how}")]

    @cached_property
    def followers(self) -> Followers:
        return Followers(self.max_log_followers)

    # -- installs ---------------------------------------------------------------

    @cached_property
    def installer(self) -> Installer:
        """The shared install steps (``install.py``), with this backend's sandbox."""
        raise NotImplementedError

    def _installer(self, *, run: RunOnce, route: Route, owner=None) -> Installer:
        """An installer with this backend's settings, running ``run`` in its sandbox."""
        return Installer(
            cache_dir=Path(self.cache_dir),
            run=run,
            route=route,
            log=self.log,
            ignore_scripts=self.ignore_scripts,
            boxed=self.boxed,
            modules_cache_size=self.modules_cache_size,
            package_store_size=self.package_store_size,
            owner=owner,
        )

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
        """Make ``app_dir/node_modules`` match the lockfile (``Installer.install``):
        'installed', 'cached', 'assembled' or 'fresh'.  Raises InstallFailed, with the
        install output written to ``log``."""
        return await self.installer.install(
            project_id, app_dir, plan, log, progress, pins=pins, gate=gate
        )

    # -- dev servers ---------------------------------------------------------------

    def start(
        self, project_id: str, app_dir: Path, plan: AppPlan, *, fresh: bool, link: NewLink
    ) -> Start:
        """A start of the project's dev server (see ``Start``)."""
        return Start(self, project_id, app_dir, plan, fresh=fresh, link=link)

    def started(self, project_id: str) -> None:
        """A start is over and the previews are quiet: a backend that makes something
        ahead for the next start makes it now, not during one."""

    async def launch(
        self, project_id: str, app_dir: Path, plan: AppPlan, *, base: str, token: str
    ) -> Endpoint:
        """Start a new dev server serving under ``base`` (on a port the backend
        picks); return once it has an address."""
        raise NotImplementedError

    async def resume(self, project_id: str, app_dir: Path, plan: AppPlan) -> Record | None:
        """Start the kept dev server again if it is still current; None if there is none."""
        raise NotImplementedError

    async def sync(self, project_id: str, app_dir: Path) -> None:
        """The server wrote files of the running project: send what changed to where
        its dev server reads them.  A backend that bind-mounts the folder has nothing
        to do."""

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

    async def build(self, run: BuildRun) -> tuple[int | None, str]:
        """Run the app's production build to its end (or ``run.timeout``): its exit
        code (None if it timed out) and output.  Cancelled, it leaves nothing
        running."""
        raise NoBuild(f"The {self.name} backend does not run production builds.")

    async def logs(self, project_id: str, *, tail: int = 500) -> str:
        raise NotImplementedError

    async def follow_logs(self, project_id: str) -> LogStream:
        """The dev server's output from now on; TooManyStreams (429) before anything
        is sent when ``max_log_followers`` are open (``followers``)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Free what the backend holds (its dev servers are left as they are)."""
        if "installer" in self.__dict__:
            self.installer.close()
