"""A preview's start, in the background: the pipeline of ``Runtime.start``.

    supply check → the backend's start opened (Docker makes the container
    meanwhile) → install, in the install line → supply check of what was
    installed → quota → in the start line: ``ready`` → answers under its base

Each step says what it does in the preview's state (``detail``, ``progress``,
its place in a line), which the events stream shows.  A start that fails
leaves nothing half made and the old link dead; one that is stopped keeps
what makes the next start fast.  Once it is over and the previews are quiet
the backend is told (``Backend.started``), so what it makes ahead for the next
start never shares the machine with a first page load.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import managers, probes, supply
from .admission import Place
from .errors import DiskFull, ReactBoxError, TooManyPreviews, is_disk_full
from .previews import ACTIVE, PreviewState
from .store import Project

if TYPE_CHECKING:
    from .runtime import Runtime

QUIET = 3.0
"""Seconds with no preview request in flight, nor one asked or answered, before the
backend makes what it makes ahead for the next start (``Backend.started``): a
container started on this host changes its network, and a browser on the same host
drops the requests it has in flight when that happens (a first page load would lose
modules)."""
MOST_BEFORE_AHEAD = 60.0
"""Seconds after a start at most before that is made anyway."""


class Starts:
    """The starts of one runtime's previews."""

    def __init__(self, runtime: Runtime):
        self.rt = runtime
        self.after: set[asyncio.Task] = set()
        """Waits for quiet after starts (``_when_quiet``), cancelled at close."""

    def _vite_pin(self, project: Project) -> supply.VitePin | None:
        return supply.vite_pin(managers.read_inputs(project.app_dir), self.rt.store.supply_policy)

    def make_room(self, project_id: str) -> list[str]:
        if self.rt.max_running <= 0:
            return []
        active = self.rt.previews.with_status(*ACTIVE)
        active.pop(project_id, None)
        excess = len(active) - self.rt.max_running + 1
        if excess <= 0:
            return []
        stoppable = sorted(
            (i for i, s in active.items() if s.status == "running" and not self.rt.busy(i)),
            key=lambda i: active[i].last_used,
        )
        if len(stoppable) < excess:
            raise TooManyPreviews(
                f"{len(active)} previews are running or starting (the limit is "
                f"{self.rt.max_running}) and none can be stopped now. Stop one, or ask your "
                "admin to raise c.Runtime.max_running."
            )
        victims = stoppable[:excess]
        for i in victims:  # counted as stopped from now on, so the next start sees room
            active[i].update(status="stopped", endpoint=None)
        return victims

    async def run(
        self,
        project: Project,
        st: PreviewState,
        *,
        fresh: bool,
        victims: list[str],
        after: asyncio.Task | None = None,
    ) -> None:
        rt = self.rt
        if after is not None:
            await asyncio.wait([after])
            st.update(status="installing")
        for victim in victims:
            await rt.stop(victim, detail=f"Stopped to make room for {project.id}.")
        async with st.lock:
            try:
                plan = await asyncio.to_thread(
                    functools.partial(project.plan, own_origin=bool(rt.previews.origin_template))
                )
                st.update(framework=plan.framework, member=plan.member)
                # Again before every install (an edit may add such a dependency),
                # and after it, on the Vite that was installed.
                await asyncio.to_thread(
                    supply.check,
                    project.app_dir,
                    rt.store.supply_policy,
                    member=project.member,
                )
                pin = await asyncio.to_thread(self._vite_pin, project)
                st.update(notes=[pin.note] if pin else [])
                link = functools.partial(self.new_link, project.id, st)
                start = rt.backend.start(project.id, project.app_dir, plan, fresh=fresh, link=link)
                async with start:  # a backend may make the dev server's sandbox meanwhile
                    how = await rt.backend.install(
                        project.id,
                        project.app_dir,
                        plan,
                        project.install_log,
                        self._progress(st),
                        pins={"vite": pin.fixed} if pin else None,
                        gate=functools.partial(
                            rt.admission["install"].place,
                            rt.owner,
                            project.id,
                            self._told(st),
                        ),
                    )
                    await asyncio.to_thread(
                        supply.check,
                        project.app_dir,
                        rt.store.supply_policy,
                        installed=True,
                        member=project.member,
                    )
                    await rt.check_quota(project)
                    st.update(status="starting", progress=None, detail=f"dependencies {how}")
                    place = rt.admission["start"].place(rt.owner, project.id, self._told(st))
                    async with place:
                        record = await start.ready()
                        st.update(token=record.token, base=record.base, endpoint=record.endpoint)
                        await probes.wait_ready(
                            st, timeout=rt.start_timeout, ended=lambda: self._ended(project.id)
                        )
                now = rt.clock()  # the idle clock starts when it is ready
                st.update(status="running", detail=None, running_since=now, last_used=now)
                mark(project.start_wanted, False)
                rt.log.info("Preview of %s is running", project.id)
            except asyncio.CancelledError:
                await rt.halt(project.id, st, detail="Stopped while starting.")
                raise
            except ReactBoxError as exc:
                rt.log.warning("Preview of %s failed: %s", project.id, exc)
                await self._fail(project.id, st, str(exc))
            except Exception as exc:
                if is_disk_full(exc):
                    error = str(DiskFull.at(rt.store.root))
                    rt.log.warning("Preview of %s failed: %s", project.id, error)
                else:
                    rt.log.exception("Preview of %s failed", project.id)
                    error = f"Internal error: {exc!r}"
                await self._fail(project.id, st, error)
            finally:
                self._when_quiet(project.id)

    def _when_quiet(self, project_id: str) -> None:
        """Tell the backend a start is over once the previews are quiet (``QUIET``)."""

        async def wait() -> None:
            start = self.rt.clock()
            await asyncio.sleep(QUIET)
            while (now := self.rt.clock()) - start < MOST_BEFORE_AHEAD:
                if self.rt.in_flight == 0 and now - self.rt.requested_at >= QUIET:
                    break
                await asyncio.sleep(0.5)
            self.rt.backend.started(project_id)

        task = asyncio.ensure_future(wait())
        self.after.add(task)
        task.add_done_callback(self.after.discard)

    def new_link(self, project_id: str, st: PreviewState) -> tuple[str, str]:
        """A new token, and with it a new base path: the old link is dead."""
        token = self.rt.previews.mint()
        base = self.rt.previews.base(project_id, token)
        st.update(token=token, base=base, endpoint=None)
        return token, base

    @staticmethod
    def _told(st: PreviewState) -> Callable[[Place | None], None]:
        """What a preview's place in a line is told: it shows in its status."""
        detail = st.detail

        def tell(place: Place | None) -> None:
            st.update(queue=place, detail=str(place) if place else detail)

        return tell

    @staticmethod
    def _progress(st: PreviewState):
        def report(done: int, total: int) -> None:
            if st.progress != (done, total):
                st.update(progress=(done, total), detail=f"installing {done}/{total} packages")

        return report

    async def _fail(self, project_id: str, st: PreviewState, error: str) -> None:
        """Failed to start: the old link is dead at once, and by the time the start is
        reported failed nothing half-made is left (a container made ahead of the
        install, say)."""
        self.rt.unwanted(project_id)
        st.update(token=None, base=None, endpoint=None)
        try:
            await self.rt.backend.discard(project_id)
        except Exception:
            self.rt.log.exception("Could not remove the dev server of %s", project_id)
        st.update(status="failed", error=error, detail=None, progress=None, running_since=None)

    async def _ended(self, project_id: str) -> str | None:
        """Why a starting dev server is gone, with its last output; None while it runs."""
        if await self.rt.backend.poll(project_id) is None:
            return None
        if probes.disk_full(self.rt.store.root):
            return str(DiskFull(self.rt.store.root))  # what it died of, most likely
        tail = (await self.rt.backend.logs(project_id, tail=20)).strip()
        return f"The dev server exited during start. Last output:\n{tail}"


def mark(path: Path, present: bool) -> None:
    """A marker file there or not (in a project's own folder, which no sandbox sees)."""
    try:
        if present:
            path.touch()
        else:
            path.unlink(missing_ok=True)
    except OSError:  # a project being deleted, a full disk: the marker is a hint
        pass
