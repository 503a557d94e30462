"""The lifecycle of each project's preview.

    stopped --start--> installing --> starting --> running --idle/stop--> stopped
                                                      |  (what makes a start fast is kept)
                                                   crashes --> failed --backoff--> starting

One task per project does a start, so concurrent requests never start two
dev servers.  A token is minted when a dev server is launched and lives as
long as the backend keeps it: a stopped preview keeps its link, and the next
request for it starts it again (``restart`` launches a new one with a new
link).  A watcher stops previews nobody used for ``idle_timeout`` seconds,
notices dev servers that died (and restarts them with capped backoff), and
holds projects to their disk quota.  "Used" means a person did something: a
page load, input in the page (the injected shim reports it), or an API
action; module requests, HMR and the app's own polling do not count.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import secrets
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from jupyter_server.utils import url_path_join
from tornado import httpclient

from . import frameworks, managers, supply
from .backends.base import Backend, Endpoint
from .backends.modules import disk_usage
from .errors import (
    DiskFull,
    QuotaExceeded,
    ReactBoxError,
    SandboxError,
    TooManyPreviews,
    is_disk_full,
)
from .schema import ProjectInfo
from .store import Project, ProjectStore

ACTIVE = ("installing", "starting", "running")
STABLE_AFTER = 60.0
"""Seconds a restarted dev server must stay up before its crash count is forgotten."""
MAX_BACKOFF = 30.0
QUOTA_INTERVAL = 30.0
SHUTDOWN_TIMEOUT = 20.0
MAX_ERRORS = 20
MAX_PAGES = 32
"""Page keys kept per preview: the pages loaded last may report a person's input."""
"""Page errors kept per preview (the newest); repeats of the last one are counted."""


@dataclass
class PreviewState:
    status: str = "stopped"
    """installing | starting | running | stopped | failed"""
    error: str | None = None
    detail: str | None = None
    """One line for a status bar: install progress, why it stopped, when it restarts."""
    progress: tuple[int, int] | None = None
    framework: str | None = None
    token: str | None = None
    base: str | None = None
    endpoint: Endpoint | None = None
    last_used: float = 0.0
    running_since: float | None = None
    restarts: int = 0
    restart_at: float | None = None
    notes: list[str] = field(default_factory=list)
    """What the user should know about how the preview runs (a package replaced)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    errors: deque[dict] = field(default_factory=lambda: deque(maxlen=MAX_ERRORS))
    """What went wrong in the page since it was last loaded (reported by the page)."""
    page_keys: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_PAGES))
    """One per page load: a page reports input with its key, which the app's own
    scripts cannot read (see ``static/activity.js``)."""

    def update(self, **fields) -> None:
        """Change fields and wake everyone who waits for a change."""
        for name, value in fields.items():
            setattr(self, name, value)
        self.changed.set()
        self.changed = asyncio.Event()


class Runtime:
    def __init__(
        self,
        store: ProjectStore,
        backend: Backend,
        *,
        base_url: str,
        start_timeout: float = 180,
        idle_timeout: float = 600,
        max_running: int = 0,
        max_restarts: int = 5,
        disk_quota: int = 0,
        file_quota: int = 0,
        on_shutdown: str = "stop",
        preview_origin_template: str = "",
        busy: Callable[[str], bool] = lambda project_id: False,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger | None = None,
    ):
        self.store = store
        self.backend = backend
        self.base_url = base_url
        self.start_timeout = start_timeout
        self.idle_timeout = idle_timeout
        self.max_running = max_running
        self.max_restarts = max_restarts
        self.disk_quota = disk_quota
        self.file_quota = file_quota
        self.on_shutdown = on_shutdown
        self.preview_origin_template = preview_origin_template
        self.busy = busy
        self.clock = clock
        self.log = log or logging.getLogger(__name__)
        self._states: dict[str, PreviewState] = {}
        self._session: aiohttp.ClientSession | None = None
        self._watcher: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._quota_checked = 0.0
        self.quota_interval = QUOTA_INTERVAL
        self._recovered = asyncio.Event()

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
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=64, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=300),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    def state(self, project_id: str) -> PreviewState:
        return self._states.setdefault(project_id, PreviewState())

    def preview_base(self, project_id: str, token: str) -> str:
        """The public path the dev server serves under (ends with '/'): the root of
        its own host in separate-origin mode."""
        if self.preview_origin_template:
            return "/"
        return url_path_join(self.base_url, "reactbox", "preview", project_id, token) + "/"

    def preview_origin(self, project_id: str) -> str | None:
        """The origin of a project's preview in separate-origin mode, else None."""
        if not self.preview_origin_template:
            return None
        return self.preview_origin_template.format(project=project_id).rstrip("/")

    def preview_url(self, project_id: str) -> str | None:
        """The preview's link: valid while the backend keeps its dev server, running or not."""
        st = self.state(project_id)
        if not st.base or not st.token:
            return None
        origin = self.preview_origin(project_id)
        if origin:  # the link trades the token for a cookie of that host
            return f"{origin}/__reactbox/enter/{st.token}"
        return st.base

    def _vite_pin(self, project: Project) -> supply.VitePin | None:
        return supply.vite_pin(managers.read_inputs(project.app_dir), self.store.supply_policy)

    def info(self, project: Project) -> ProjectInfo:
        st = self.state(project.id)
        return {
            **project.to_json(),
            "status": st.status,
            "error": st.error,
            "detail": st.detail,
            "progress": {"done": st.progress[0], "total": st.progress[1]} if st.progress else None,
            "restarts": st.restarts,
            "preview_url": self.preview_url(project.id),
            "errors": list(st.errors),
            "notes": st.notes,
            **self.isolation,
        }

    def authorize(self, project_id: str, token: str) -> PreviewState | None:
        """The preview that ``token`` opens (running or not), or None."""
        st = self._states.get(project_id)
        if st is None or st.token is None:
            return None
        if not hmac.compare_digest(st.token.encode(), token.encode()):
            return None
        return st

    async def until_settled(self, project_id: str, timeout: float) -> PreviewState:
        """Until the preview is no longer installing or starting (or ``timeout`` s)."""
        st = self.state(project_id)
        deadline = time.monotonic() + timeout
        while st.status in ("installing", "starting"):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(st.changed.wait(), left)
            except asyncio.TimeoutError:
                break
        return st

    def page_key(self, project_id: str) -> str:
        """A key for one page load of the preview, to report a person's input with."""
        key = secrets.token_urlsafe(18)
        self.state(project_id).page_keys.append(key)
        return key

    def is_page_key(self, project_id: str, key: str) -> bool:
        keys = self.state(project_id).page_keys
        return any(hmac.compare_digest(k.encode(), key.encode()) for k in keys)

    def touch(self, project_id: str) -> None:
        """Someone used this project's preview: reset its idle clock."""
        self.state(project_id).last_used = self.clock()

    def report_error(self, project_id: str, report: dict) -> None:
        """The page hit an error (already cleaned by the proxy): keep it for the
        notebook, counting a repeat of the last one instead of storing it again."""
        st = self.state(project_id)
        last = st.errors[-1] if st.errors else None
        if last is not None and all(last.get(k) == report.get(k) for k in ("kind", "message")):
            last["count"] += 1
            last["time"] = time.time()
        else:
            st.errors.append({**report, "count": 1, "time": time.time()})
        st.update()

    def clear_errors(self, project_id: str) -> None:
        """The page was loaded again: what it reported before is history."""
        st = self.state(project_id)
        if st.errors:
            st.errors.clear()
            st.update()

    def poke(self) -> None:
        """Something looks wrong (a dev server did not answer): check now."""
        self._wake.set()

    # -- lifecycle -----------------------------------------------------------

    async def recovered(self, timeout: float = 30) -> None:
        """Until ``recover`` has run: requests wait for it, so none sees a project
        as stopped that in fact runs (it runs after the server starts listening)."""
        if not self._recovered.is_set():
            try:
                await asyncio.wait_for(self._recovered.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def recover(self) -> None:
        """Rebuild the state of a restarted server from the backend's records,
        then watch.

        Running dev servers are re-attached and stopped ones kept (their links
        stay valid); the backend removes what belongs to deleted projects,
        second dev servers of one project and interrupted installs.
        """
        try:
            await self._recover()
        finally:
            self._recovered.set()
            self.watch()

    async def _recover(self) -> None:
        known = {p.id for p in await asyncio.to_thread(self.store.list)}
        for record in await self.backend.recover(known):
            if record.token and record.base != self.preview_base(record.project_id, record.token):
                self.log.warning(
                    "Discarding the dev server of %s: it serves another base (the preview "
                    "origin setting changed)",
                    record.project_id,
                )
                await self.backend.discard(record.project_id)
                continue
            st = self.state(record.project_id)
            if st.task is not None or st.status in ACTIVE:
                continue  # this server started it meanwhile
            running = record.endpoint is not None
            st.update(
                status="running" if running else "stopped",
                token=record.token,
                base=record.base,
                framework=record.framework,
                endpoint=record.endpoint,
                error=None,
                last_used=self.clock(),
                running_since=self.clock() if running else None,
            )
            self.log.info("Re-attached the %s preview of %s", st.status, record.project_id)

    def watch(self) -> None:
        """Start the watcher (idle culling, crash restarts, disk quota)."""
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch())

    def start(self, project: Project, *, fresh: bool = False) -> PreviewState:
        """Start the preview in the background unless it is starting or running.

        With ``max_running`` reached, the least recently used running preview
        is stopped first; when none can be, TooManyPreviews (429).
        """
        st = self.state(project.id)
        self.touch(project.id)
        busy = st.task is not None and not st.task.done()
        if busy and st.status in ACTIVE and not fresh:
            return st
        if st.status == "running" and not fresh:
            return st
        victims = self._make_room(project.id)
        if not st.restart_at:
            st.restarts = 0  # a start by a person, not a crash restart
        st.update(status="installing", error=None, detail=None, progress=None, restart_at=None)
        # A previous task may still be cleaning up after a failure or a cancel.
        previous = st.task if busy else None
        st.task = asyncio.create_task(
            self._start(project, st, fresh=fresh, victims=victims, after=previous)
        )
        return st

    def _make_room(self, project_id: str) -> list[str]:
        if self.max_running <= 0:
            return []
        active = [i for i, s in self._states.items() if s.status in ACTIVE and i != project_id]
        excess = len(active) - self.max_running + 1
        if excess <= 0:
            return []
        stoppable = sorted(
            (i for i in active if self._states[i].status == "running" and not self.busy(i)),
            key=lambda i: self._states[i].last_used,
        )
        if len(stoppable) < excess:
            raise TooManyPreviews(
                f"{len(active)} previews are running or starting (the limit is "
                f"{self.max_running}) and none can be stopped now. Stop one, or ask your "
                "admin to raise c.ReactBoxApp.max_running."
            )
        victims = stoppable[:excess]
        for i in victims:  # counted as stopped from now on, so the next start sees room
            self._states[i].update(status="stopped", endpoint=None)
        return victims

    async def _start(
        self,
        project: Project,
        st: PreviewState,
        *,
        fresh: bool,
        victims: list[str],
        after: asyncio.Task | None = None,
    ) -> None:
        if after is not None:
            await asyncio.wait([after])
            st.update(status="installing")
        for victim in victims:
            await self.stop(victim, detail=f"Stopped to make room for {project.id}.")
        async with st.lock:
            try:
                plan = await asyncio.to_thread(project.plan)
                st.update(framework=plan.framework)
                # Again before every install (an edit may add such a dependency),
                # and after it, on the Vite that was installed.
                await asyncio.to_thread(supply.check, project.app_dir, self.store.supply_policy)
                pin = await asyncio.to_thread(self._vite_pin, project)
                st.update(notes=[pin.note] if pin else [])
                how = await self.backend.install(
                    project.id,
                    project.app_dir,
                    plan,
                    project.install_log,
                    self._progress(st),
                    pins={"vite": pin.fixed} if pin else None,
                )
                await asyncio.to_thread(
                    supply.check, project.app_dir, self.store.supply_policy, installed=True
                )
                await self._check_quota(project)
                st.update(status="starting", progress=None, detail=f"dependencies {how}")
                found = None
                if fresh:
                    await self.backend.discard(project.id)
                else:
                    found = await self.backend.resume(project.id, project.app_dir, plan)
                if found is not None and found.endpoint is not None and found.token:
                    st.update(token=found.token, base=found.base, endpoint=found.endpoint)
                else:
                    token = secrets.token_urlsafe(24)
                    base = self.preview_base(project.id, token)
                    st.update(token=token, base=base, endpoint=None)
                    endpoint = await self.backend.launch(
                        project.id, project.app_dir, plan, base=base, token=token
                    )
                    st.update(endpoint=endpoint)
                await self._wait_ready(project.id, st)
                now = self.clock()  # the idle clock starts when it is ready
                st.update(status="running", detail=None, running_since=now, last_used=now)
                self.log.info("Preview of %s is running", project.id)
            except asyncio.CancelledError:
                await self._halt(project.id, st, detail="Stopped while starting.")
                raise
            except ReactBoxError as exc:
                self.log.warning("Preview of %s failed: %s", project.id, exc)
                await self._fail(project.id, st, str(exc))
            except Exception as exc:
                if is_disk_full(exc):
                    error = str(DiskFull(self.store.root))
                    self.log.warning("Preview of %s failed: %s", project.id, error)
                else:
                    self.log.exception("Preview of %s failed", project.id)
                    error = f"Internal error: {exc!r}"
                await self._fail(project.id, st, error)

    @staticmethod
    def _progress(st: PreviewState):
        def report(done: int, total: int) -> None:
            if st.progress != (done, total):
                st.update(progress=(done, total), detail=f"installing {done}/{total} packages")

        return report

    async def _halt(self, project_id: str, st: PreviewState, *, detail: str | None) -> None:
        """Stopped, what makes a start fast kept (and with it the link)."""
        st.update(status="stopped", endpoint=None, detail=detail, running_since=None)
        try:
            await asyncio.shield(self.backend.stop(project_id))
        except Exception:
            self.log.exception("Could not stop the dev server of %s", project_id)

    async def _fail(self, project_id: str, st: PreviewState, error: str) -> None:
        """Failed to start: nothing half-made is left, and the old link is dead."""
        st.update(
            status="failed",
            error=error,
            detail=None,
            progress=None,
            token=None,
            base=None,
            endpoint=None,
            running_since=None,
        )
        try:
            await self.backend.discard(project_id)
        except Exception:
            self.log.exception("Could not remove the dev server of %s", project_id)

    async def _wait_ready(self, project_id: str, st: PreviewState) -> None:
        """Until the dev server answers under its base path (or dies, or times out)."""
        assert st.endpoint and st.base
        url = f"http://{st.endpoint.host}:{st.endpoint.port}{st.base}"
        client = httpclient.AsyncHTTPClient()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            try:
                response = await client.fetch(
                    url, raise_error=False, connect_timeout=2, request_timeout=30
                )
                if response.code < 500 and response.code != 599:
                    return
            except (OSError, httpclient.HTTPClientError):  # 599: no connection (yet)
                pass
            if await self.backend.poll(project_id) is not None:
                if self._disk_full():
                    raise DiskFull(self.store.root)  # what it died of, most likely
                tail = (await self.backend.logs(project_id, tail=20)).strip()
                raise SandboxError(f"The dev server exited during start. Last output:\n{tail}")
            await asyncio.sleep(0.05)
        raise SandboxError(
            f"The dev server did not answer within {self.start_timeout:g} s; see its logs "
            "(GET .../logs), or raise c.ReactBoxApp.start_timeout."
        )

    def _disk_full(self) -> bool:
        """Less than 1 MiB left where the projects live: why a dev server died, most likely."""
        return shutil.disk_usage(self.store.root).free < 1 << 20

    async def _check_quota(self, project: Project) -> None:
        if self.disk_quota <= 0 and self.file_quota <= 0:
            return
        used = await asyncio.to_thread(disk_usage, project.path, max_files=self.file_quota)
        if self.disk_quota > 0 and used.bytes > self.disk_quota:
            raise QuotaExceeded(
                f"The project uses {_size(used.bytes)} of disk; its quota is "
                f"{_size(self.disk_quota)}. Remove large files from it, or ask your admin to "
                "raise c.ReactBoxApp.disk_quota."
            )
        if self.file_quota > 0 and used.files > self.file_quota:
            raise QuotaExceeded(
                f"The project holds more than {self.file_quota} files and folders, its quota. "
                "Remove generated files from it, or ask your admin to raise "
                "c.ReactBoxApp.file_quota."
            )

    async def compile_errors(self, project_id: str, paths: list[str]) -> str | None:
        """Ask the running dev server to compile ``paths``, as its framework knows
        how; its first error, or None (also for a stopped preview)."""
        st = self._states.get(project_id)
        framework = frameworks.get(st.framework) if st is not None else None
        if st is None or st.status != "running" or not st.endpoint or framework is None:
            return None
        root = f"http://{st.endpoint.host}:{st.endpoint.port}{st.base}"
        return await framework.compile_errors(root, paths)

    async def stop(self, project_id: str, *, detail: str | None = None) -> None:
        """Stop the dev server (the backend keeps what it needs, so the link stays valid)."""
        st = self.state(project_id)
        if st.task and not st.task.done():
            st.task.cancel()
        async with st.lock:
            await self._halt(project_id, st, detail=detail)
            st.update(restart_at=None, error=None, progress=None)

    def restart(self, project: Project) -> PreviewState:
        """A new dev server, with a new link."""
        st = self.state(project.id)
        if st.task and not st.task.done():
            st.task.cancel()
        st.update(token=None, base=None)  # the old link is dead from now on
        return self.start(project, fresh=True)

    async def delete(self, project_id: str) -> None:
        await self.stop(project_id)
        await self.backend.remove(project_id)
        await asyncio.to_thread(self.store.delete, project_id)
        st = self._states.pop(project_id, None)
        if st is not None:
            st.update(status="deleted", token=None)  # ends event streams

    # -- the watcher ----------------------------------------------------------

    @property
    def beat_ms(self) -> int:
        """How often a page in use reports input: a third of the idle timeout, 1 s..60 s."""
        idle = self.idle_timeout if self.idle_timeout > 0 else 600
        return int(min(max(idle * 1000 / 3, 1000), 60_000))

    @property
    def tick(self) -> float:
        """How often the watcher looks: often enough that a 10 s idle_timeout works."""
        idle = self.idle_timeout if self.idle_timeout > 0 else 600
        return min(max(idle / 10, 0.5), 5.0)

    async def _watch(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.check()
            except Exception:
                self.log.exception("The jupyter-reactbox watcher failed; it goes on")

    async def check(self) -> None:
        """One round of the watcher: idle, crashed, due for a restart, over quota."""
        now = self.clock()
        running = {i: s for i, s in self._states.items() if s.status == "running"}
        if self.idle_timeout > 0:
            for project_id, st in list(running.items()):
                idle = now - st.last_used
                if idle >= self.idle_timeout and not self.busy(project_id):
                    self.log.info("Stopping the preview of %s: unused for %d s", project_id, idle)
                    del running[project_id]
                    await self.stop(
                        project_id,
                        detail=f"Stopped after {self.idle_timeout:g} s without use; "
                        "opening the preview starts it again.",
                    )
        if running:
            alive = await self.backend.running()
            for project_id, st in running.items():
                if project_id not in alive and st.status == "running" and not st.lock.locked():
                    await self._crashed(project_id, st)
                elif st.running_since and now - st.running_since > STABLE_AFTER:
                    st.restarts = 0
        for project_id, st in list(self._states.items()):
            if st.restart_at is not None and now >= st.restart_at and st.status == "failed":
                try:
                    project = await asyncio.to_thread(self.store.get, project_id)
                except ReactBoxError:
                    continue
                self.log.info("Restarting the dev server of %s (%d)", project_id, st.restarts)
                self.start(project)
        quotas = self.disk_quota > 0 or self.file_quota > 0
        if quotas and now - self._quota_checked >= self.quota_interval:
            self._quota_checked = now
            await self._enforce_quota()

    async def _crashed(self, project_id: str, st: PreviewState) -> None:
        ended = await self.backend.poll(project_id)
        tail = (await self.backend.logs(project_id, tail=20)).strip()
        how = "exited"
        if ended is not None and ended.why:
            how = ended.why
        elif ended is not None and ended.code is not None:
            how = f"exited with code {ended.code}"
        error = f"The dev server {how}. Last output:\n{tail}"
        if self._disk_full():
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

    async def _enforce_quota(self) -> None:
        for project_id, st in list(self._states.items()):
            if st.status != "running":
                continue
            try:
                await self._check_quota(await asyncio.to_thread(self.store.get, project_id))
            except QuotaExceeded as exc:
                self.log.warning("Stopping the preview of %s: %s", project_id, exc)
                await self.stop(project_id)
                st.update(status="failed", error=str(exc))
            except ReactBoxError:
                continue

    # -- shutdown ---------------------------------------------------------------

    async def close(self) -> None:
        """Leave the engine as ``on_shutdown`` says: dev servers stopped, kept running,
        or removed; starts in flight are stopped, never left half made."""
        if self._watcher is not None:
            self._watcher.cancel()
        tasks = [st.task for st in self._states.values() if st.task and not st.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_TIMEOUT)
        if self.on_shutdown != "keep":
            act = self.backend.remove if self.on_shutdown == "remove" else self.backend.stop
            ids = [i for i, st in self._states.items() if st.token or st.status in ACTIVE]
            jobs = [asyncio.ensure_future(act(i)) for i in ids]
            if jobs:
                done, pending = await asyncio.wait(jobs, timeout=SHUTDOWN_TIMEOUT)
                for job in done:
                    if job.exception():
                        self.log.warning("At shutdown: %s", job.exception())
                if pending:
                    self.log.warning("%d dev servers did not stop in time", len(pending))
        if self._session is not None:
            await self._session.close()


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover
