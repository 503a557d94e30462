"""The lifecycle of each project's preview.

    stopped --start--> installing --> starting --> running --idle/stop--> stopped
                                                      |  (what makes a start fast is kept)
                                                   crashes --> failed --backoff--> starting

One task per project does a start, so concurrent requests never start two
dev servers.  A token is minted when a dev server is launched and lives as
long as the backend keeps it: a stopped preview keeps its link, and the next
request for it starts it again (``restart`` launches a new one with a new
link).  A watcher freezes running previews nobody used for
``freeze_timeout`` seconds (still ``running``, with ``frozen`` set: any request
or API action thaws them first), stops those nobody used for ``idle_timeout``
seconds, notices dev servers that died (and restarts them with capped
backoff), and holds projects to their disk quota.  "Used" means a person did something: a
page load, input in the page (the injected shim reports it), or an API
action; module requests, HMR and the app's own polling do not count.

This module is the start pipeline and the verbs; ``previews`` holds the
state and the capabilities, ``watcher`` the watcher, ``probes`` the
questions asked of dev servers and the disk.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable

import aiohttp
from jupyter_server.utils import url_path_join
from traitlets import CaselessStrEnum, Float, Int
from traitlets.config import LoggingConfigurable

from . import probes, recovery
from .admission import Admission, Memory
from .backends.base import Backend, LogStream
from .bridge import Bridges, Limits
from .builds import Builds
from .errors import (
    DiskFull,
    ProjectNotFound,
    QuotaExceeded,
    ReactBoxError,
    TooManyPreviews,
)
from .previews import ACTIVE, Previews, PreviewState
from .schema import ProjectInfo
from .starts import Starts, mark
from .store import START_WANTED, Project, ProjectStore, Size, slugify
from .views import Views
from .watcher import Watcher

SHUTDOWN_TIMEOUT = 20.0
MAX_BACKOFF = 30.0
"""Seconds at most between a crashed dev server's restarts."""


def pooled_session(*, sock_read: float | None) -> aiohttp.ClientSession:
    """A client that keeps upstream connections alive and passes bodies, encodings
    and cookies through untouched (the preview proxy's, the hub relay's)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=64, keepalive_timeout=60),
        timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=sock_read),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )


class Runtime(LoggingConfigurable):
    """The previews of one owner: their starts, their state and their lifecycle
    (``c.Runtime.<name>``)."""

    start_timeout = Float(
        180, help="Seconds a dev server may take to answer its first request."
    ).tag(config=True)
    idle_timeout = Float(
        600,
        help="""Seconds a preview may go unused before its dev server is stopped (0:
        never). Use is a page load, input in the page, or an API action; HMR and an
        app's own requests are not. Opening the preview again starts it again.""",
    ).tag(config=True)
    freeze_timeout = Float(
        120,
        help="""Seconds a preview may go unused before its dev server is frozen (0:
        never), where the backend can (Docker pauses its container; the local
        backend stops its processes). A frozen preview keeps its memory, uses no
        CPU, and any request wakes it in well under a second; after idle_timeout it
        is stopped as before.""",
    ).tag(config=True)
    max_running = Int(
        5,
        help="""Most previews this server runs at once (0: no limit). Starting one more
        stops the least recently used; if none can be stopped, the start gets 429.""",
    ).tag(config=True)
    max_restarts = Int(
        5,
        help="""Times a crashed dev server is restarted (after 1, 2, 4, ... s, at most
        30 s apart) before it stays failed. The count resets after a minute up.""",
    ).tag(config=True)
    preview_cache = Size(
        "24m",
        help="""Memory the preview proxy may keep per running Vite preview, e.g. '24m', to
        answer modules the dev server says are unchanged without asking it (a page in
        the sandbox has no HTTP cache of its own). Empty or '0': off.""",
    ).tag(config=True)
    on_shutdown = CaselessStrEnum(
        ["stop", "keep", "remove"],
        default_value="stop",
        help="""What happens to running dev servers when this Jupyter server stops.
        'stop': stopped, their containers kept for a fast start (and links kept);
        'keep': left running, re-attached by the next server; 'remove': removed.""",
    ).tag(config=True)

    def __init__(
        self,
        store: ProjectStore,
        backend: Backend,
        *,
        base_url: str,
        disk_quota: int = 0,
        file_quota: int = 0,
        preview_origin_template: str = "",
        preview_mode_why: str = "",
        busy: Callable[[str], bool] = lambda project_id: False,
        admit: Callable[[str], None] | None = None,
        room: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        bridge_limits: Limits | None = None,
        owner: str = "",
        admission: Admission | None = None,
        **settings,
    ):
        """``settings``: traits (``parent``, ``log``, ``config``, or any setting)."""
        super().__init__(**settings)
        self.store = store
        self.backend = backend
        self.base_url = base_url
        self.disk_quota = disk_quota
        """Bytes a project may use (0: no quota): the store's, given by the app."""
        self.file_quota = file_quota
        """Files and folders a project may hold (0: no limit)."""
        self.preview_origin_template = preview_origin_template
        self.preview_mode_why = preview_mode_why
        """Why previews are where they are (``preview_mode``)."""
        self.busy = busy
        self.builds: Builds | None = None
        """The owner's production builds (given by the app): the newest is in ``info``."""
        self.admit = admit
        """Asked before a preview starts; raises TooManyPreviews to refuse it (the hub
        service's cap on all users' previews)."""
        self.room = room
        """Asked with every quota check; raises QuotaExceeded when the owner's projects
        together use too much (the hub service's per-user disk quota)."""
        self.clock = clock
        self.owner = owner
        self.admission = admission or Admission({}, memory=Memory(0, 0))
        """Who installs, starts and edits next, with every other owner of the server
        (the hub service's users): ``admission.py``."""
        self.previews = Previews(base_url, origin_template=preview_origin_template, clock=clock)
        self.watcher = Watcher(self)
        self.bridges = Bridges(bridge_limits, self.log)
        """Each project's bridge between its pages and its notebook (bridge.py)."""
        self._session: aiohttp.ClientSession | None = None
        self._recovered = asyncio.Event()
        self._names: dict[str, asyncio.Lock] = {}
        """One lock per project name: its creation and its deletion are one ordered
        operation each, so an upload of a name being deleted waits for the delete."""
        self.requested_at = 0.0
        """When a preview was last requested or answered (``clock``): the proxy says so."""
        self.in_flight = 0
        """Preview requests being answered now (a module a dev server takes seconds to
        transform is one): the previews are not quiet while any is."""
        self.starts = Starts(self)
        self.views = Views(self)
        """Looks at the running previews: compile errors, a page load, a screenshot."""

    @functools.cached_property
    def isolation(self) -> dict:
        """How previews are isolated, for the project JSON: the backend, whether a
        sandbox holds the dev server, and in a line what it is (or why there is none)."""
        isolation = self.backend.isolation()
        return {
            "backend": isolation.backend,
            "sandboxed": isolation.sandboxed,
            "isolation": isolation.how,
        }

    def http_session(self) -> aiohttp.ClientSession:
        """The pooled client of the preview proxy: upstream connections are kept alive."""
        if self._session is None or self._session.closed:
            self._session = pooled_session(sock_read=300)
        return self._session

    def state(self, project_id: str) -> PreviewState:
        return self.previews[project_id]

    def info(self, project: Project) -> ProjectInfo:
        st = self.state(project.id)
        return {
            **project.to_json(),
            "status": st.status,
            "error": st.error,
            "detail": st.detail,
            "progress": {"done": st.progress[0], "total": st.progress[1]} if st.progress else None,
            "restarts": st.restarts,
            "frozen": st.frozen,
            "preview_url": self.previews.url(project.id),
            "build": self.builds.latest(project.id) if self.builds is not None else None,
            "export_url": url_path_join(
                self.previews.base_url, "reactbox", "api", "projects", project.id, "export"
            ),
            "errors": list(st.errors),
            "selection": st.selection,
            "notes": st.notes,
            "queue": st.queue.to_json() if st.queue else None,
            **self.isolation,
            "preview_mode": {
                "mode": "separate" if self.previews.origin_template else "path",
                "why": self.preview_mode_why,
            },
        }

    # -- lifecycle -----------------------------------------------------------

    @property
    def is_recovered(self) -> bool:
        return self._recovered.is_set()

    async def recovered(self, timeout: float = 30) -> None:
        """Until ``recover`` has run: requests wait for it, so none sees a project
        as stopped that in fact runs (it runs after the server starts listening)."""
        if not self._recovered.is_set():
            try:
                await asyncio.wait_for(self._recovered.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def recover(self) -> None:
        """Rebuild the state of a restarted server from the backend's records
        (``recovery.py``), then watch; requests wait for it (``recovered``)."""
        try:
            await recovery.recover(self)
        finally:
            self._recovered.set()
            self.watch()

    def watch(self) -> None:
        """Start the watcher (idle culling, crash restarts, disk quota)."""
        self.watcher.start()

    def _name(self, project_id: str) -> asyncio.Lock:
        return self._names.setdefault(project_id, asyncio.Lock())

    async def create(
        self, data: bytes, name: str, path: str | None = None, *, upgrade_vite: bool = False
    ) -> Project:
        """Import an uploaded ZIP as the project ``name`` and start its preview.  A
        delete of the same name that is under way finishes first.  The upload is kept
        when ``max_running`` leaves no room to start it (its ``detail`` says why)."""
        self.admission["install"].check()  # a full line: 429, before anything is made
        self.admission["start"].check()
        async with self._name(slugify(name)):
            project = await asyncio.to_thread(
                functools.partial(
                    self.store.import_zip,
                    upgrade_vite=upgrade_vite,
                    own_origin=bool(self.previews.origin_template),
                ),
                data,
                name,
                path,
            )
            try:
                self.start(project, checked=True)
            except TooManyPreviews as exc:
                self.state(project.id).update(detail=str(exc))
            return project

    def start(
        self, project: Project, *, fresh: bool = False, checked: bool = False
    ) -> PreviewState:
        """Start the preview in the background unless it is starting or running.

        With ``max_running`` reached, the least recently used running preview
        is stopped first; when none can be, TooManyPreviews (429).  With the line
        of starts full, Busy (429), unless the caller ``checked`` it already (an
        upload, before it made the project).  A project being deleted is not found.
        """
        st = self.state(project.id)
        if st.deleting:
            raise ProjectNotFound(f"The project {project.id!r} is being deleted.")
        self.previews.touch(project.id)
        in_flight = st.in_flight
        if in_flight and st.status in ACTIVE and not fresh:
            return st
        if st.status == "running" and not fresh:
            return st
        if self.admit is not None and st.status not in ACTIVE:
            self.admit(project.id)
        if st.status not in ACTIVE and not checked:
            self.admission["start"].check()
        victims = self.starts.make_room(project.id)
        if not st.restart_at:
            st.restarts = 0  # a start by a person, not a crash restart
        st.update(status="installing", error=None, detail=None, progress=None, restart_at=None)
        mark(project.start_wanted, True)
        # A previous task may still be cleaning up after a failure or a cancel.
        previous = st.task if in_flight else None
        st.task = asyncio.create_task(
            self.starts.run(project, st, fresh=fresh, victims=victims, after=previous)
        )
        return st

    def unwanted(self, project_id: str) -> None:
        """No start of the project is asked for any more (it ran, failed, or a person
        or the server stopped it)."""
        mark(self.store.root / project_id / START_WANTED, False)

    async def halt(self, project_id: str, st: PreviewState, *, detail: str | None) -> None:
        """Stopped, what makes a start fast kept (and with it the link)."""
        st.update(status="stopped", endpoint=None, detail=detail, running_since=None, frozen=False)
        try:
            await asyncio.shield(self.backend.stop(project_id))
        except Exception:
            self.log.exception("Could not stop the dev server of %s", project_id)

    async def check_quota(self, project: Project) -> None:
        """QuotaExceeded if the project is over its disk or file quota, or its owner
        over theirs."""
        if self.room is not None:
            await self.room()
        if project.boxed:  # a filesystem of its own, of that size: the kernel keeps it
            return
        await asyncio.to_thread(
            probes.check_quota,
            project.path,
            disk_quota=self.disk_quota,
            file_quota=self.file_quota,
        )

    async def changed(self, project_id: str) -> None:
        """The server wrote the project's files: a dev server that runs elsewhere gets
        them (``Backend.sync``), so that it compiles and hot-reloads what is on disk."""
        st = self.previews.get(project_id)
        if st is None or st.status != "running":
            return
        try:
            project = await asyncio.to_thread(self.store.get, project_id)
        except ProjectNotFound:  # deleted meanwhile: nothing to send
            return
        await self.backend.sync(project_id, project.app_dir)

    def notify(self, project_id: str) -> None:
        """Something shown in the project's JSON changed (a build): wake its events."""
        st = self.previews.get(project_id)
        if st is not None:
            st.update()

    async def stop(self, project_id: str, *, detail: str | None = None) -> None:
        """Stop the dev server (the backend keeps what it needs, so the link stays valid)."""
        self.unwanted(project_id)
        st = self.state(project_id)
        if st.task and not st.task.done():
            st.task.cancel()
        async with st.lock:
            await self.halt(project_id, st, detail=detail)
            st.update(restart_at=None, error=None, progress=None)

    async def freeze(self, project_id: str) -> bool:
        """Freeze a running preview nobody uses (if the backend can): it keeps its
        memory and its link, uses no CPU, and ``thaw`` wakes it in well under a
        second, where a start takes seconds."""
        st = self.state(project_id)
        async with st.freezing:
            if st.status != "running" or st.frozen or st.lock.locked():
                return False
            if not await self.backend.freeze(project_id):
                return False
            st.update(frozen=True)
            self.log.info("Froze the preview of %s", project_id)
            return True

    async def thaw(self, project_id: str) -> None:
        """Wake a frozen preview; every caller that finds it frozen waits for it."""
        st = self.state(project_id)
        if not st.frozen:
            return
        async with st.freezing:
            if not st.frozen:
                return  # another request thawed it meanwhile
            try:
                await self.backend.thaw(project_id)
            except Exception:  # gone: the watcher finds out and says so
                self.log.exception("Could not thaw the preview of %s", project_id)
                self.watcher.poke()
            st.update(frozen=False, thawed_at=self.clock())

    # -- what the watcher finds ------------------------------------------------------

    async def alive(self) -> set[str]:
        """The projects whose dev server runs now (one backend call for all)."""
        return await self.backend.running()

    async def crashed(self, project_id: str) -> None:
        """The dev server of a running preview died by itself: failed, saying how and
        with its last output, and restarted after a backoff (1, 2, 4, ... s, at most
        ``MAX_BACKOFF``) until ``max_restarts``."""
        st = self.state(project_id)
        ended = await self.backend.poll(project_id)
        tail = (await self.backend.logs(project_id, tail=20)).strip()
        how = "exited"
        if ended is not None and ended.why:
            how = ended.why
        elif ended is not None and ended.code is not None:
            how = f"exited with code {ended.code}"
        error = f"The dev server {how}. Last output:\n{tail}"
        if probes.disk_full(self.store.root):
            error = f"{DiskFull(self.store.root)}\n{error}"
        if st.restarts < self.max_restarts:
            delay = min(2.0**st.restarts, MAX_BACKOFF)
            st.restarts += 1
            detail = f"restarting in {delay:g} s (restart {st.restarts} of {self.max_restarts})"
            restart_at = self.clock() + delay
        else:
            detail = f"gave up after {self.max_restarts} restarts; start it again once fixed"
            restart_at = None
        self.log.warning("The dev server of %s %s; %s", project_id, how, detail)
        st.update(
            status="failed",
            error=error,
            detail=detail,
            endpoint=None,
            running_since=None,
            restart_at=restart_at,
        )

    def steady(self, project_id: str) -> None:
        """A restarted dev server stayed up: its crashes are forgotten."""
        self.state(project_id).restarts = 0

    async def restart_after_crash(self, project_id: str) -> None:
        """Start again a preview whose backoff is over (``crashed``)."""
        try:
            project = await asyncio.to_thread(self.store.get, project_id)
        except ReactBoxError:
            return
        self.log.info(
            "Restarting the dev server of %s (%d)", project_id, self.state(project_id).restarts
        )
        self.start(project)

    async def hold_to_quota(self, project_id: str) -> None:
        """A running project over its disk or file quota (or its owner over theirs)
        is stopped, and failed with why."""
        try:
            await self.check_quota(await asyncio.to_thread(self.store.get, project_id))
        except QuotaExceeded as exc:
            self.log.warning("Stopping the preview of %s: %s", project_id, exc)
            await self.stop(project_id)
            self.state(project_id).update(status="failed", error=str(exc))
        except ReactBoxError:
            pass

    # -- the dev server's output -------------------------------------------------------

    async def logs(self, project_id: str, *, tail: int = 500) -> str:
        """The last ``tail`` lines the dev server printed."""
        return await self.backend.logs(project_id, tail=tail)

    async def follow_logs(self, project_id: str) -> LogStream:
        """What the dev server prints from now on (TooManyStreams, a 429, when
        ``c.Backend.max_log_followers`` are open)."""
        return await self.backend.follow_logs(project_id)

    def page_errors(self, project_id: str) -> list[dict]:
        """What the project's pages reported throwing, the latest last."""
        return self.previews.errors(project_id)

    async def use(self, project_id: str) -> None:
        """A person used the project (an API action): reset its idle clock, and wake
        its dev server if it is frozen, since what follows may need it."""
        self.previews.touch(project_id)
        await self.thaw(project_id)

    def restart(self, project: Project) -> PreviewState:
        """A new dev server, with a new link."""
        st = self.state(project.id)
        if st.task and not st.task.done():
            st.task.cancel()
        st.update(token=None, base=None)  # the old link is dead from now on
        return self.start(project, fresh=True)

    async def delete(self, project_id: str) -> None:
        """Remove the project's dev server and files.  Nothing starts it meanwhile
        (``start`` finds it gone), and its name is free for a new upload only once
        its state is gone too: an upload of the same name waits for it."""
        lock = self._name(project_id)
        async with lock:
            st = self.state(project_id)
            st.deleting = True
            try:
                await self.stop(project_id)
                await self.backend.remove(project_id)
                await asyncio.to_thread(self.store.delete, project_id)
            except BaseException:
                st.deleting = False  # still there: it may be used (or deleted) again
                raise
            self.previews.pop(project_id)
            self.bridges.close(project_id)
            st.update(status="deleted", token=None)  # ends event streams
        if not lock.locked() and self._names.get(project_id) is lock:
            del self._names[project_id]

    # -- shutdown ---------------------------------------------------------------

    async def close(self) -> None:
        """Leave the engine as ``on_shutdown`` says: dev servers stopped, kept running,
        or removed; starts in flight are stopped, never left half made."""
        self.watcher.cancel()
        tasks = [st.task for _, st in self.previews.items() if st.in_flight]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_TIMEOUT)
        for waiting in list(self.starts.after):  # after the starts: each ends with one
            waiting.cancel()
        if self.on_shutdown != "keep":
            act = self.backend.remove if self.on_shutdown == "remove" else self.backend.stop
            ids = [i for i, st in self.previews.items() if st.token or st.status in ACTIVE]
            jobs = [asyncio.ensure_future(act(i)) for i in ids]
            if jobs:
                done, pending = await asyncio.wait(jobs, timeout=SHUTDOWN_TIMEOUT)
                for job in done:
                    if job.exception():
                        self.log.warning("At shutdown: %s", job.exception())
                if pending:
                    self.log.warning("%d dev servers did not stop in time", len(pending))
            # No dev server uses the projects' own filesystems now (``boxes``); kept
            # running, they keep theirs mounted for the next server.
            await asyncio.to_thread(self.store.unmount_all)
        if self._session is not None:
            await self._session.close()


async def stop_unused(runtimes: list[Runtime], count: int) -> int:
    """Stop up to ``count`` previews nobody uses, to free memory for a start: frozen
    ones first, then running ones no page has open and no edit holds, the least
    recently used first.  How many it stopped."""
    unused = [
        (not st.frozen, st.last_used, rt, project_id)
        for rt in runtimes
        for project_id, st in rt.previews.items()
        if st.status == "running"
        and not st.lock.locked()
        and (st.frozen or (st.pages == 0 and not rt.busy(project_id)))
    ]
    unused.sort(key=lambda u: u[:2])
    for _, _, rt, project_id in unused[:count]:
        rt.log.info("Stopping the unused preview of %s to free memory for a start", project_id)
        await rt.stop(project_id, detail="Stopped to free memory for another preview's start.")
    return min(count, len(unused))
