"""What a sandbox backend provides to the runtime.

A backend installs an app's dependencies (with the package registry
reachable) and then runs its dev server where nothing but the preview proxy
can reach it.  It keeps its own state in the engine (labels), so that a
restarted Jupyter server can find running previews again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..frameworks import AppPlan


@dataclass(frozen=True)
class Endpoint:
    """Where the preview proxy reaches a running dev server."""

    host: str
    port: int


@dataclass(frozen=True)
class RunningPreview:
    """A dev server found in the engine, with what is needed to serve it."""

    project_id: str
    framework: str
    token: str
    base: str
    endpoint: Endpoint


class Sandbox(Protocol):
    async def install(self, project_id: str, app_dir: Path, plan: AppPlan, log: Path) -> None:
        """Install dependencies into ``app_dir/node_modules``; raise SandboxError on failure,
        with the install output written to ``log``."""

    async def run(
        self, project_id: str, app_dir: Path, plan: AppPlan, *, base: str, token: str
    ) -> Endpoint:
        """Start the dev server serving under ``base``; return once it has an address."""

    async def is_running(self, project_id: str) -> bool: ...

    async def stop(self, project_id: str) -> None:
        """Stop and remove the dev server; a no-op when none runs."""

    async def remove(self, project_id: str) -> None:
        """Remove everything the backend made for the project."""

    async def find_running(self) -> list[RunningPreview]:
        """The dev servers of this owner that are running now."""

    async def logs(self, project_id: str, *, tail: int = 500) -> str: ...

    def follow_logs(self, project_id: str) -> AsyncIterator[str]: ...

    async def close(self) -> None: ...
