"""Production builds of a user's apps: run in the sandbox, kept as static files.

A build runs the app's own production build (``vite build``, ``react-scripts
build``, ``next build`` as a static export) through the backend
(``Backend.build``): in the dev server's sandbox, with no network at all, for
the base it will be served under, writing a folder outside the app.  What it
wrote is the app's code's output, so it is read back as data
(``worktree.walk``: no link followed, regular files only, bounded in count and
size) into a folder only the server writes::

    <project>/builds/<build-id>/
      build.json     the record (below)
      build.log      what the build printed (its last 256 KB)
      site/          the files, as the server copied them

The build is stopped when it runs past ``timeout`` or writes more than
``max_size``; a user has ``max_per_user`` builds at once, the server
``max_total``; a project keeps its ``keep`` newest builds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from traitlets import Float, Int
from traitlets.config import LoggingConfigurable

from . import worktree
from .backends.base import Backend, BuildRun
from .errors import AppBuildFailed, NoBuild, NotAFile, NotFound, TooManyBuilds, TooManyFiles
from .frameworks import AppPlan
from .store import Project, Size

ID_RE = re.compile(r"^b-[0-9a-f]{12}$")
SCRATCH = ".reactbox-build-"
"""Beside the app (inside its filesystem where it has one): what a build writes."""
_ERROR_LINE = re.compile(r"(error|failed|✘|✗|ERR!|cannot|could not)", re.IGNORECASE)
_SUMMARY = re.compile(
    r"^(?:[✗✘>x]\s*)?(?:build failed|failed to compile|build error occurred)", re.IGNORECASE
)
"""A line that says only that it failed: what went wrong follows it."""
_LOCATION = re.compile(r"[\w./@-]+\.\w+:\d+(?::\d+)?")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class Build:
    id: str
    project: str
    base: str
    """The path it is built to be served under."""
    status: str = "building"
    """'building', 'ready' or 'failed'."""
    created: float = 0.0
    finished: float | None = None
    error: str | None = None
    """Why it failed, its first error line first."""
    files: int = 0
    bytes: int = 0
    share: str | None = None
    """The share it was built for (kept while the share is: see ``_forget_older``)."""

    def to_json(self) -> dict:
        return asdict(self)


def first_error(output: str) -> str | None:
    """What a build's output says went wrong first, in a line: the first line that
    says so (or, after one that says only that the build failed, the line after
    it), with the file and line it names just below, if any."""
    lines = [
        line.strip()
        for line in _ANSI.sub("", output).splitlines()
        if line.strip() and not line.startswith(("[jupyter-reactbox]", "jupyter-reactbox:"))
    ]
    at = next((i for i, line in enumerate(lines) if _ERROR_LINE.search(line)), None)
    if at is None:
        return None
    while at + 1 < len(lines) and _SUMMARY.match(lines[at]):
        at += 1
    found = lines[at]
    if " " not in found and at + 1 < len(lines):  # a file alone; its error below
        found = f"{found}: {lines[at + 1]}"
    elif not _LOCATION.search(found):
        below = next((m[0] for m in map(_LOCATION.search, lines[at + 1 : at + 4]) if m), None)
        if below:
            found = f"{found} ({below})"
    return found[:500]


def copy_site(out: Path, site: Path, *, max_files: int, max_bytes: int) -> tuple[int, int]:
    """Copy what a build wrote at ``out`` into ``site`` (a new folder of the server's),
    as data: regular files only, no link followed; (files, bytes).  Over either limit
    is AppBuildFailed."""
    files = size = 0
    try:
        for entry in worktree.walk(out, lambda rel: False, max_files=max_files):
            size += entry.stat.st_size
            if size > max_bytes:
                raise AppBuildFailed(
                    f"The build wrote more than {max_bytes:,} bytes (c.Builds.max_size)."
                )
            try:
                data = entry.read(max_bytes)
            except (NotAFile, FileNotFoundError):
                continue
            target = site / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            files += 1
    except TooManyFiles:
        raise AppBuildFailed(
            f"The build wrote more than {max_files:,} files (c.Builds.max_files)."
        ) from None
    return files, size


def _size_of(folder: Path) -> int:
    total = 0
    for _, _, names, dfd in os.fwalk(folder, follow_symlinks=False):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.stat(name, dir_fd=dfd, follow_symlinks=False).st_blocks * 512
    return total


class Builds(LoggingConfigurable):
    """The builds of one user's projects."""

    max_per_user = Int(1, help="Builds one user may run at once; one more is a 429.").tag(
        config=True
    )
    max_total = Int(
        2, help="Builds this server (or the hub service) runs at once, for all users."
    ).tag(config=True)
    timeout = Float(600, help="Seconds a build may run before it is stopped.").tag(config=True)
    max_size = Size(
        "200m", help="What a build may write (its site), e.g. '200m': past it, it is stopped."
    ).tag(config=True)
    max_files = Int(10_000, help="Files a build may write.").tag(config=True)
    keep = Int(5, help="Builds kept per project, newest first; older ones are removed.").tag(
        config=True
    )

    _running_everywhere: ClassVar[int] = 0
    POLL = 0.5
    """Seconds between two looks at what a running build has written."""

    def __init__(self, *, backend: Backend, changed: Callable[[str], None], **kwargs):
        super().__init__(**kwargs)
        self.backend = backend
        self.changed = changed
        """Called with a project id when one of its builds changes."""
        self._tasks: dict[str, asyncio.Task] = {}
        self._latest: dict[str, Build] = {}
        self._project_of: dict[str, str] = {}
        """Build id -> its project's, while it runs."""

    # -- records ------------------------------------------------------------------

    @staticmethod
    def folder(project: Project, build_id: str | None = None) -> Path:
        root = project.path / "builds"
        return root / build_id if build_id else root

    def latest(self, project_id: str) -> dict | None:
        """The project's newest build this server ran, for its JSON (and events)."""
        build = self._latest.get(project_id)
        return build.to_json() if build is not None else None

    def _write(self, project: Project, build: Build) -> None:
        self._latest[project.id] = build
        folder = self.folder(project, build.id)
        tmp = folder / ".build.json"
        tmp.write_text(json.dumps(build.to_json()))
        os.replace(tmp, folder / "build.json")

    def get(self, project: Project, build_id: str) -> Build:
        """The project's build ``build_id``; NotFound (404) if there is none."""
        if not ID_RE.match(build_id):
            raise NotFound(f"No build {build_id} of {project.id}.")
        try:
            data = json.loads((self.folder(project, build_id) / "build.json").read_text())
            build = Build(**data)
        except (OSError, ValueError, TypeError):
            raise NotFound(f"No build {build_id} of {project.id}.") from None
        if build.status == "building" and build.id not in self._tasks:
            build.status, build.error = "failed", "The server stopped during the build."
        return build

    def list(self, project: Project) -> list[Build]:
        """The project's builds, newest first."""
        root = self.folder(project)
        found = []
        for child in root.iterdir() if root.is_dir() else ():
            with contextlib.suppress(NotFound):
                found.append(self.get(project, child.name))
        return sorted(found, key=lambda b: b.created, reverse=True)

    def site(self, project: Project, build_id: str) -> Path:
        """The files of a ready build."""
        build = self.get(project, build_id)
        if build.status != "ready":
            raise NotFound(f"Build {build_id} of {project.id} is {build.status}, not ready.")
        return self.folder(project, build_id) / "site"

    def log_of(self, project: Project, build_id: str) -> str:
        self.get(project, build_id)
        try:
            return (self.folder(project, build_id) / "build.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def remove(self, project: Project, build_id: str) -> None:
        self.get(project, build_id)
        task = self._tasks.get(build_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await asyncio.to_thread(shutil.rmtree, self.folder(project, build_id), True)
        self.changed(project.id)

    # -- a build ----------------------------------------------------------------

    def start(
        self, project: Project, plan: AppPlan, base: str, *, share: str | None = None
    ) -> Build:
        """Start a build of ``project`` for ``base`` in the background (for the share
        ``share``, if given); its record."""
        if not plan.spec.build_argv:
            raise NoBuild(f"{plan.framework} apps have no production build that runs here.")
        if not (project.app_dir / "node_modules").is_dir():
            raise NoBuild(f"{project.id}'s dependencies are not installed: start it first.")
        if len(self._tasks) >= self.max_per_user:
            raise TooManyBuilds(
                f"{len(self._tasks)} of your builds run already (c.Builds.max_per_user); "
                "wait for it to finish."
            )
        if Builds._running_everywhere >= self.max_total:
            raise TooManyBuilds(
                f"{Builds._running_everywhere} builds run on this server already "
                "(c.Builds.max_total); try again in a minute."
            )
        build = Build(
            id=f"b-{secrets.token_hex(6)}",
            project=project.id,
            base=base,
            created=time.time(),
            share=share,
        )
        self.folder(project, build.id).mkdir(parents=True)
        self._write(project, build)
        Builds._running_everywhere += 1
        task = asyncio.create_task(self._run(project, plan, build))
        self._tasks[build.id] = task
        self._project_of[build.id] = project.id

        def done(_: asyncio.Task) -> None:
            Builds._running_everywhere -= 1
            self._tasks.pop(build.id, None)
            self._project_of.pop(build.id, None)
            self.changed(project.id)

        task.add_done_callback(done)
        self.changed(project.id)
        return build

    async def wait(self, project: Project, build_id: str) -> Build:
        """Until the build is over; its record."""
        task = self._tasks.get(build_id)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
        return self.get(project, build_id)

    async def _run(self, project: Project, plan: AppPlan, build: Build) -> None:
        folder = self.folder(project, build.id)
        scratch = project.app_dir.parent / f"{SCRATCH}{build.id}"
        started = time.monotonic()
        output = ""
        try:
            await asyncio.to_thread(scratch.mkdir)
            run = BuildRun(project.id, project.app_dir, plan, build.base, scratch, self.timeout)
            output = await self._watched(run)
            files, size = await asyncio.to_thread(self._collect, scratch, folder / "site")
            build.status, build.files, build.bytes = "ready", files, size
        except AppBuildFailed as exc:
            build.status, build.error = "failed", str(exc)
            output = output or getattr(exc, "output", "")
        except Exception as exc:
            self.log.exception("Build %s of %s failed", build.id, project.id)
            build.status, build.error = "failed", f"The build could not run: {exc}"
        finally:
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, scratch, True))
        build.finished = time.time()
        took = time.monotonic() - started
        self.log.info("Build %s of %s: %s in %.1f s", build.id, project.id, build.status, took)
        await asyncio.to_thread((folder / "build.log").write_text, output)
        await asyncio.to_thread(self._write, project, build)
        await asyncio.to_thread(self._forget_older, project)

    async def _watched(self, run: BuildRun) -> str:
        """The backend's build, stopped if it writes more than ``max_size``; its output.
        AppBuildFailed, with its first error line, unless it ends well."""
        running = asyncio.ensure_future(self.backend.build(run))
        try:
            while not running.done():
                await asyncio.wait([running], timeout=self.POLL)
                if running.done():
                    break
                if await asyncio.to_thread(_size_of, run.out) > self.max_size:
                    running.cancel()
                    with contextlib.suppress(BaseException):
                        await running
                    raise AppBuildFailed(
                        f"The build wrote more than {self.max_size:,} bytes (c.Builds.max_size), "
                        "and was stopped."
                    )
            code, output = running.result()
        finally:
            if not running.done():
                running.cancel()
        if code is None:
            failed = AppBuildFailed(f"The build ran past {self.timeout:.0f} s and was stopped.")
        elif code != 0:
            failed = AppBuildFailed(first_error(output) or f"The build exited with code {code}.")
        else:
            return output
        failed.output = output  # type: ignore[attr-defined]
        raise failed

    def _collect(self, scratch: Path, site: Path) -> tuple[int, int]:
        site.mkdir()
        files, size = copy_site(scratch, site, max_files=self.max_files, max_bytes=self.max_size)
        if not (site / "index.html").is_file():
            raise AppBuildFailed("The build wrote no index.html: there is no page to serve.")
        return files, size

    def _forget_older(self, project: Project) -> None:
        builds = [b for b in self.list(project) if b.status != "building" and not b.share]
        for old in builds[self.keep :]:
            shutil.rmtree(self.folder(project, old.id), ignore_errors=True)

    async def forget_project(self, project_id: str) -> None:
        """Stop the project's running builds (it is being deleted, with its builds)."""
        mine = [t for bid, t in self._tasks.items() if self._project_of.get(bid) == project_id]
        for task in mine:
            task.cancel()
        await asyncio.gather(*mine, return_exceptions=True)
        self._latest.pop(project_id, None)

    def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
