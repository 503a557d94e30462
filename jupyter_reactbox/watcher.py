"""The watcher: one task that looks after every preview, every ``tick`` seconds.

It freezes previews nobody used for ``freeze_timeout`` seconds (where the
backend can: they keep their memory and use no CPU, and wake in well under a
second), stops those nobody used for ``idle_timeout`` seconds, notices dev
servers that died (and has them restarted with capped backoff, forgetting
the crashes of one that stayed up ``STABLE_AFTER`` seconds), and holds
running projects to their disk quota.  It acts only through the runtime's
verbs (``start``, ``stop``), so what it does is what a person could do.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from . import probes
from .errors import DiskFull, QuotaExceeded, ReactBoxError
from .previews import PreviewState

if TYPE_CHECKING:
    from .runtime import Runtime

STABLE_AFTER = 60.0
"""Seconds a restarted dev server must stay up before its crash count is forgotten."""
MAX_BACKOFF = 30.0
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
            alive = await rt.backend.running()
            for project_id, st in running.items():
                if project_id not in alive and st.status == "running" and not st.lock.locked():
                    await self._crashed(project_id, st)
                elif st.running_since and now - st.running_since > STABLE_AFTER:
                    st.restarts = 0
        for project_id, st in rt.previews.items():
            if st.restart_at is not None and now >= st.restart_at and st.status == "failed":
                try:
                    project = await asyncio.to_thread(rt.store.get, project_id)
                except ReactBoxError:
                    continue
                rt.log.info("Restarting the dev server of %s (%d)", project_id, st.restarts)
                rt.start(project)
        quotas = rt.disk_quota > 0 or rt.file_quota > 0
        if quotas and now - self._quota_checked >= self.quota_interval:
            self._quota_checked = now
            await self._enforce_quota()

    async def _crashed(self, project_id: str, st: PreviewState) -> None:
        rt = self.runtime
        ended = await rt.backend.poll(project_id)
        tail = (await rt.backend.logs(project_id, tail=20)).strip()
        how = "exited"
        if ended is not None and ended.why:
            how = ended.why
        elif ended is not None and ended.code is not None:
            how = f"exited with code {ended.code}"
        error = f"The dev server {how}. Last output:\n{tail}"
        if probes.disk_full(rt.store.root):
            error = f"{DiskFull(rt.store.root)}\n{error}"
        if st.restarts < rt.max_restarts:
            delay = min(2.0**st.restarts, MAX_BACKOFF)
            st.restarts += 1
            detail = f"restarting in {delay:g} s (restart {st.restarts} of {rt.max_restarts})"
            restart_at = rt.clock() + delay
        else:
            detail = f"gave up after {rt.max_restarts} restarts; start it again once fixed"
            restart_at = None
        rt.log.warning("The dev server of %s %s; %s", project_id, how, detail)
        st.update(
            status="failed",
            error=error,
            detail=detail,
            endpoint=None,
            running_since=None,
            restart_at=restart_at,
        )

    async def _enforce_quota(self) -> None:
        rt = self.runtime
        for project_id in rt.previews.with_status("running"):
            try:
                await rt.check_quota(await asyncio.to_thread(rt.store.get, project_id))
            except QuotaExceeded as exc:
                rt.log.warning("Stopping the preview of %s: %s", project_id, exc)
                await rt.stop(project_id)
                rt.previews[project_id].update(status="failed", error=str(exc))
            except ReactBoxError:
                continue
