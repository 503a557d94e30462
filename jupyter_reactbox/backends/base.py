"""What a sandbox backend provides to the runtime.

A backend installs an app's dependencies (with the package registry
reachable) and then runs its dev server where nothing but the preview proxy
can reach it.  A stopped dev server's container is kept, so starting it again
is fast.  The backend keeps its own state in the engine (labels), so that a
restarted Jupyter server can find its previews again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..frameworks import AppPlan

Progress = Callable[[int, int], None]
"""Called with (packages installed so far, packages expected) during an install."""


@dataclass(frozen=True)
class Endpoint:
    """Where the preview proxy reaches a running dev server."""

    host: str
    port: int


@dataclass(frozen=True)
class Found:
    """A container found in the engine, with what is needed to serve it."""

    project_id: str
    role: str
    """'run' (a dev server) or 'install'."""
    name: str
    framework: str
    token: str
    base: str
    endpoint: Endpoint | None
    """None unless it is running."""


@dataclass(frozen=True)
class Exit:
    """How a dev server ended."""

    code: int | None
    oom: bool


class LogStream(Protocol):
    def __aiter__(self) -> AsyncIterator[str]: ...

    def close(self) -> None:
        """End the follow and free what it holds, at once."""


class Sandbox(Protocol):
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
        """Make ``app_dir/node_modules`` match the lockfile: 'installed' (it did
        already), 'cached' (copied from an earlier install) or 'fresh'; ``pins``
        (package -> version) override what the app asks for.  Raises SandboxError
        on failure, with the install output written to ``log``."""

    async def run(
        self, project_id: str, app_dir: Path, plan: AppPlan, *, base: str, token: str
    ) -> Endpoint:
        """Start a new dev server serving under ``base``; return once it has an address."""

    async def resume(self, project_id: str, app_dir: Path, plan: AppPlan) -> Found | None:
        """Start the kept dev server again if it is still current; None if there is none."""

    async def is_running(self, project_id: str) -> bool: ...

    async def exit_info(self, project_id: str) -> Exit | None:
        """How the dev server ended; None while it runs."""

    async def running(self) -> set[str]:
        """The projects whose dev server runs now."""

    async def stop(self, project_id: str) -> None:
        """Stop the dev server, keeping what makes a later start fast; no-op if stopped."""

    async def discard(self, project_id: str) -> None:
        """Remove the dev server; the next start begins from nothing."""

    async def remove(self, project_id: str) -> None:
        """Remove everything the backend made for the project."""

    async def find(self) -> list[Found]:
        """Every container of this owner, running or not."""

    async def remove_container(self, name: str) -> None: ...

    async def logs(self, project_id: str, *, tail: int = 500) -> str: ...

    async def follow_logs(self, project_id: str) -> LogStream:
        """The dev server's output from now on; TooManyStreams (429) before anything
        is sent when too many are open."""

    async def close(self) -> None: ...
