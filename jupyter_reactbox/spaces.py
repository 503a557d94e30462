"""Whose projects a request acts on.

A *space* is one owner's projects and previews: the store, the runtime (with
its backend) and the AI editor.  A single-user Jupyter server has one, its
user's.  The JupyterHub service (``hub/service.py``) has one per hub user,
made on the user's first request, and each request acts on its caller's
space alone: there is no call that names another user's project.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from .ai.editor import AIEditor
from .backends.modules import disk_usage
from .builds import Builds
from .errors import QuotaExceeded, TooManyPreviews
from .previews import ACTIVE
from .probes import size
from .runtime import Runtime
from .shares import Shares


@dataclass
class Space:
    owner: str
    runtime: Runtime
    editor: AIEditor | None
    builds: Builds | None = None
    shares: Shares | None = None
    disk_quota: int = 0
    """Most bytes all of this owner's projects may use together (0: no limit); the
    hub service's ``c.HubService.user_disk_quota``."""

    async def check_room(self, adding: int = 0) -> None:
        """QuotaExceeded (413) if this owner's projects, with ``adding`` bytes more,
        would use more than ``disk_quota``."""
        if self.disk_quota <= 0:
            return
        used = (await asyncio.to_thread(disk_usage, self.runtime.store.root)).bytes
        if used + adding > self.disk_quota:
            raise QuotaExceeded(
                f"Your projects use {size(used)} of disk"
                + (f", and this needs {size(adding)} more" if adding else "")
                + f"; you may use {size(self.disk_quota)} in all. Delete a project you no "
                "longer need, or ask your admin to raise c.HubService.user_disk_quota."
            )

    async def close(self) -> None:
        if self.builds is not None:
            self.builds.close()
        await self.runtime.close()
        await self.runtime.backend.close()


class Spaces:
    """The spaces a server serves, by owner."""

    async def for_user(self, name: str) -> Space:
        raise NotImplementedError

    def all(self) -> list[Space]:
        raise NotImplementedError

    async def close(self) -> None:
        await asyncio.gather(*(space.close() for space in self.all()))


class OneSpace(Spaces):
    """A single-user server: every authenticated request is its user's."""

    def __init__(self, space: Space):
        self.space = space

    async def for_user(self, name: str) -> Space:
        return self.space

    def all(self) -> list[Space]:
        return [self.space]


class SpacePerUser(Spaces):
    """One space per user, made by ``make`` on first use and then recovered from
    the backend's records (so a restarted service finds its previews again).

    Each user's runtime holds them to its own ``max_running``; ``max_running_total``
    (0: none) caps the previews of all users together: a start beyond it is a 429,
    and no other user's preview is stopped for it."""

    def __init__(self, make: Callable[[str], Space], *, max_running_total: int = 0):
        self.make = make
        self.max_running_total = max_running_total
        self._spaces: dict[str, Space] = {}
        self._making: dict[str, asyncio.Task] = {}

    async def for_user(self, name: str) -> Space:
        space = self._spaces.get(name)
        if space is not None:
            return space
        if name not in self._making:
            self._making[name] = asyncio.ensure_future(self._make(name))
        return await asyncio.shield(self._making[name])

    async def _make(self, name: str) -> Space:
        try:
            space = await asyncio.to_thread(self.make, name)
            space.runtime.admit = self._admit
            space.runtime.room = space.check_room
            await space.runtime.recover()
            self._spaces[name] = space
            return space
        finally:
            self._making.pop(name, None)

    def all(self) -> list[Space]:
        return list(self._spaces.values())

    def _admit(self, project_id: str) -> None:
        if self.max_running_total <= 0:
            return
        active = sum(len(s.runtime.previews.with_status(*ACTIVE)) for s in self.all())
        if active >= self.max_running_total:
            raise TooManyPreviews(
                f"All {self.max_running_total} previews this hub runs at once are in use. "
                "Stop one of yours, or try again later; an admin can raise "
                "c.HubService.max_running_total."
            )
