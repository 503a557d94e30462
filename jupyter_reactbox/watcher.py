"""The watcher: one task that looks after every preview, every ``tick`` seconds.

It freezes previews nobody used for ``freeze_timeout`` seconds (where the
backend can: they keep their memory and use no CPU, and wake in well under a
second), stops those nobody used for ``idle_timeout`` seconds, notices dev
servers that died (and has them restarted with capped backoff, forgetting
the crashes of one that stayed up ``STABLE_AFTER`` seconds), and holds
running projects to their disk quota.  It reads the previews' state and acts
only through the runtime's verbs (``stop``, ``freeze``, ``crashed``,
``restart_after_crash``, ``hold_to_quota``): it writes no state of its own.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runtime import Runtime

STABLE_AFTER = 60.0
"""Seconds a restarted dev server must stay up before its crash count is forgotten."""
QUOTA_INTERVAL = 30.0


class Watcher:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.quota_interval = QUOTA_INTERVAL
        self._quota_checked = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def idle_timeout(self) -> float:
        return self.runtime.idle_timeout

    @property
    def _shortest(self) -> float:
        """The shortest idle time that matters: to a freeze, or to a stop."""
        timeouts = [t for t in (self.idle_timeout, self.runtime.freeze_timeout) if t > 0]
        return min(timeouts, default=600)

    @property
    def beat_ms(self) -> int:
        """How often a page in use reports input: a third of the shortest idle
        timeout, 1 s..60 s."""
        return int(min(max(self._shortest * 1000 / 3, 1000), 60_000))

    @property
    def tick(self) -> float:
        """How often the watcher looks: often enough that a 10 s timeout works."""
        return min(max(self._shortest / 10, 0.5), 5.0)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def poke(self) -> None:
        """Something looks wrong (a dev server did not answer): look now."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.check()
            except Exception:
                self.runtime.log.exception("The jupyter-reactbox watcher failed; it goes on")

    async def check(self) -> None:
        """One round: idle, crashed, due for a restart, over quota."""
        rt = self.runtime
        now = rt.clock()
        running = rt.previews.with_status("running")
        if self.idle_timeout > 0:
            for project_id, st in list(running.items()):
                idle = now - st.last_used
                if idle >= self.idle_timeout and not rt.busy(project_id):
                    rt.log.info("Stopping the preview of %s: unused for %d s", project_id, idle)
                    del running[project_id]
                    await rt.stop(
                        project_id,
                        detail=f"Stopped after {self.idle_timeout:g} s without use; "
                        "opening the preview starts it again.",
                    )
        if rt.freeze_timeout > 0:
            for project_id, st in running.items():
                idle = now - max(st.last_used, st.thawed_at)
                if not st.frozen and idle >= rt.freeze_timeout and not rt.busy(project_id):
                    await rt.freeze(project_id)
        if running:
            alive = await rt.alive()
            for project_id, st in running.items():
                if project_id not in alive and st.status == "running" and not st.lock.locked():
                    await rt.crashed(project_id)
                elif st.restarts and st.running_since and now - st.running_since > STABLE_AFTER:
                    rt.steady(project_id)
        for project_id, st in rt.previews.items():
            if st.restart_at is not None and now >= st.restart_at and st.status == "failed":
                await rt.restart_after_crash(project_id)
        quotas = rt.disk_quota > 0 or rt.file_quota > 0
        if quotas and now - self._quota_checked >= self.quota_interval:
            self._quota_checked = now
            for project_id in rt.previews.with_status("running"):
                await rt.hold_to_quota(project_id)
