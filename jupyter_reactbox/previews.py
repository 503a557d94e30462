"""What the server knows of each project's preview, and the capabilities that open it.

A preview's link carries a token, minted when its dev server is launched; the
preview's pages carry page keys, one per page load, with which they report a
person's input.  Both are compared in constant time.  Page errors the preview
reports are kept here for the notebook.  Nothing in this module does I/O.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from jupyter_server.utils import url_path_join

from .admission import Place
from .backends.base import Endpoint
from .response_cache import ResponseCache

ACTIVE = ("installing", "starting", "running")
MAX_ERRORS = 20
"""Page errors kept per preview (the newest); repeats of the last one are counted."""
MAX_PAGES = 32
"""Page keys kept per preview: the pages loaded last may report a person's input."""
RELOAD_GRACE = 5.0
"""Seconds a preview counts as watched after its last page's socket closed: a page
that reloads (Vite's full reload after an edit) opens a new one meanwhile."""


@dataclass
class PreviewState:
    status: str = "stopped"
    """installing | starting | running | stopped | failed"""
    error: str | None = None
    detail: str | None = None
    """One line for a status bar: install progress, why it stopped, when it restarts."""
    progress: tuple[int, int] | None = None
    framework: str | None = None
    member: str = ""
    """The app's folder in its workspace ('' : the project's top), where its
    ``public/`` is."""
    token: str | None = None
    base: str | None = None
    endpoint: Endpoint | None = None
    last_used: float = 0.0
    running_since: float | None = None
    restarts: int = 0
    restart_at: float | None = None
    frozen: bool = False
    """Running, but frozen while unused: any use thaws it (in well under a second)."""
    thawed_at: float = 0.0
    freezing: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while it freezes or thaws: one at a time, and every request that finds
    it frozen waits for the one thaw."""
    notes: list[str] = field(default_factory=list)
    """What the user should know about how the preview runs (a package replaced)."""
    queue: Place | None = None
    """Its place in line, while its install or start waits for one (``admission.py``)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task | None = None
    deleting: bool = False
    """Its project is being deleted: nothing may start it."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    errors: deque[dict] = field(default_factory=lambda: deque(maxlen=MAX_ERRORS))
    """What went wrong in the page since it was last loaded (reported by the page)."""
    responses: ResponseCache | None = None
    """What the proxy keeps of the running dev server's answers (response_cache.py)."""
    selection: dict | None = None
    """The element the user picked in a page of the preview (``Place.to_json``), for
    the next instruction from any client (the widget, a magic)."""
    pages: int = 0
    """Open websockets of the preview's pages (HMR): a page is watching it."""
    unwatched_at: float = 0.0
    """When the last open page socket closed (epoch seconds)."""
    loaded_at: float = 0.0
    """When a page of the preview was last loaded (epoch seconds)."""
    page_keys: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_PAGES))
    """One per page load: a page reports input with its key, which the app's own
    scripts cannot read (see ``static/activity.js``)."""

    def update(self, **fields) -> None:
        """Change fields and wake everyone who waits for a change."""
        for name, value in fields.items():
            setattr(self, name, value)
        if self.status not in ("installing", "starting"):
            self.queue = None  # only an install or a start waits in line
        if self.status != "running" and self.responses is not None:
            self.responses.close()  # its memory goes with the dev server
            self.responses = None
        self.changed.set()
        self.changed = asyncio.Event()

    @property
    def in_flight(self) -> bool:
        """A start (or the cleanup after one) is in flight."""
        return self.task is not None and not self.task.done()


class Previews:
    """Every project's ``PreviewState``, by project id, and where its preview lives."""

    def __init__(
        self,
        base_url: str,
        *,
        origin_template: str = "",
        clock: Callable[[], float] = time.monotonic,
    ):
        self.base_url = base_url
        self.origin_template = origin_template
        self.clock = clock
        self._states: dict[str, PreviewState] = {}

    def __getitem__(self, project_id: str) -> PreviewState:
        """The state of a project's preview (a stopped one if it has none yet)."""
        return self._states.setdefault(project_id, PreviewState())

    def get(self, project_id: str) -> PreviewState | None:
        return self._states.get(project_id)

    def pop(self, project_id: str) -> PreviewState | None:
        return self._states.pop(project_id, None)

    def clear(self) -> None:
        self._states.clear()

    def items(self) -> Iterator[tuple[str, PreviewState]]:
        """A snapshot: safe while previews are added or removed."""
        return iter(list(self._states.items()))

    def with_status(self, *statuses: str) -> dict[str, PreviewState]:
        return {i: s for i, s in self._states.items() if s.status in statuses}

    # -- where a preview lives ----------------------------------------------------

    def base(self, project_id: str, token: str) -> str:
        """The public path the dev server serves under (ends with '/'): the root of
        its own host in separate-origin mode."""
        if self.origin_template:
            return "/"
        return url_path_join(self.base_url, "reactbox", "preview", project_id, token) + "/"

    def origin(self, project_id: str) -> str | None:
        """The origin of a project's preview in separate-origin mode, else None."""
        if not self.origin_template:
            return None
        return self.origin_template.format(project=project_id).rstrip("/")

    def url(self, project_id: str) -> str | None:
        """The preview's link: valid while the backend keeps its dev server, running or not."""
        st = self.get(project_id)
        if st is None or not st.base or not st.token:
            return None
        origin = self.origin(project_id)
        if origin:  # the link trades the token for a cookie of that host
            return f"{origin}/__reactbox/enter/{st.token}"
        return st.base

    @staticmethod
    def mint() -> str:
        """A new link token."""
        return secrets.token_urlsafe(24)

    # -- capabilities ---------------------------------------------------------------

    def authorize(self, project_id: str, token: str) -> PreviewState | None:
        """The preview that ``token`` opens (running or not), or None."""
        st = self.get(project_id)
        if st is None or st.token is None:
            return None
        if not hmac.compare_digest(st.token.encode(), token.encode()):
            return None
        return st

    def page_key(self, project_id: str) -> str:
        """A key for one page load of the preview, to report a person's input with."""
        key = secrets.token_urlsafe(18)
        self[project_id].page_keys.append(key)
        return key

    def is_page_key(self, project_id: str, key: str) -> bool:
        st = self.get(project_id)
        keys = st.page_keys if st is not None else ()
        return any(hmac.compare_digest(k.encode(), key.encode()) for k in keys)

    # -- what a person and the page did -------------------------------------------

    def touch(self, project_id: str) -> None:
        """Someone used this project's preview: reset its idle clock."""
        self[project_id].last_used = self.clock()

    def report_error(self, project_id: str, report: dict) -> None:
        """The page hit an error (already cleaned by the proxy): keep it for the
        notebook, counting a repeat of the last one instead of storing it again."""
        st = self[project_id]
        last = st.errors[-1] if st.errors else None
        if last is not None and self.error_key(last) == self.error_key(report):
            last["count"] += 1
            last["time"] = time.time()
        else:
            st.errors.append({**report, "count": 1, "time": time.time()})
        st.update()

    @staticmethod
    def error_key(report: dict) -> tuple[str, str]:
        return report.get("kind", ""), report.get("message", "")

    def errors(self, project_id: str) -> list[dict]:
        """What the preview's pages reported throwing, the latest last."""
        st = self.get(project_id)
        return list(st.errors) if st is not None else []

    def error_keys(self, project_id: str) -> set[tuple[str, str]]:
        """The errors the preview's pages reported so far (to tell a new one)."""
        st = self.get(project_id)
        return {self.error_key(e) for e in st.errors} if st is not None else set()

    def watched(self, project_id: str) -> bool:
        """Whether a page of the preview is open (its HMR socket), or was until a
        moment ago (it may be reloading)."""
        st = self.get(project_id)
        if st is None:
            return False
        return st.pages > 0 or time.time() - st.unwatched_at < RELOAD_GRACE

    def running(self, project_id: str) -> bool:
        st = self.get(project_id)
        return st is not None and st.status == "running"

    def page_closed(self, st: PreviewState) -> None:
        st.pages -= 1
        if st.pages <= 0:
            st.unwatched_at = time.time()

    async def new_error(
        self, project_id: str, known: set[tuple[str, str]], since: float, wait: float
    ) -> dict | None:
        """The first error not among ``known`` that a page of the preview reports
        (again) after ``since`` (epoch seconds), waiting for one until ``wait``
        seconds after ``since``, or after the page's reload if it reloaded
        meanwhile (at most four times as long); None at once when no page is open."""
        if not self.watched(project_id):
            return None
        st = self[project_id]
        while True:
            for report in list(st.errors):
                if report.get("time", 0) >= since and self.error_key(report) not in known:
                    return dict(report)
            deadline = min(max(since, st.loaded_at) + wait, since + 4 * wait)
            left = deadline - time.time()
            if left <= 0 or not self.watched(project_id):
                return None
            await asyncio.sleep(min(0.1, left))

    def page_loaded(self, project_id: str) -> None:
        """A page of the preview was loaded: what its pages reported before is history."""
        st = self[project_id]
        st.loaded_at = time.time()
        if st.errors:
            st.errors.clear()
            st.update()

    def forget_errors(self, project_id: str, keys: set[tuple[str, str]]) -> None:
        """Errors that are over (an edit that caused them was fixed or rolled back): a
        page that reports one again later reports something new."""
        st = self.get(project_id)
        if st is None or not keys:
            return
        kept = [e for e in st.errors if self.error_key(e) not in keys]
        if len(kept) != len(st.errors):
            st.errors.clear()
            st.errors.extend(kept)
            st.update()

    async def until_settled(self, project_id: str, timeout: float) -> PreviewState:
        """Until the preview is no longer installing or starting (or ``timeout`` s)."""
        st = self[project_id]
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
