"""The bridge: the running app calls its notebook's Python, the notebook pushes to it.

::

    app in the preview (untrusted)                   the notebook's kernel (its user's)
    import { call, emit, useNotebook } from          shop.expose(fn), shop.on(name, fn),
        "reactbox"                                   shop.send(name, value), shop.state
       └ websocket <preview>/__reactbox/bridge ──▶ server ◀── websocket
                                                   reactbox/api/projects/<id>/bridge

Both ends are websockets to the server that serves the preview (a user's own
server, or the JupyterHub service through the user's server), so it works
wherever the preview is shown: the widget, the Lab panel, a tab of its own.
The page's socket is authorised as the page's other requests are (the
preview's capability token); the kernel's as the user's API calls are.

The server holds one :class:`ProjectBridge` per project: at most one kernel
(the last to connect; the one before is told and closed) and up to
``MAX_PAGES`` pages.  It routes and checks; it runs nothing.  A page may do only
what the kernel said it serves:

* ``call`` a function the kernel exposed, by name, with a JSON array of arguments;
* ``emit`` an event the kernel listens to, with a JSON value;
* ``state``: set a key of the shared state, with a JSON value.

A frame is one line of JSON (its header), then a newline and the JSON value it
carries, if any.  A page's values are parsed here (JSON only, at most
``max_bytes``, within a budget of bytes and messages a second per project, so
no page can keep the server busy); the kernel's are its user's own and go on as
they came, never parsed.  A call that is not answered in time, or whose kernel
goes away (a restart, ``unexpose``), is rejected with a reason the page shows.
The last value the notebook sent under each name, and the state, are kept (at
most ``MAX_KEPT`` bytes) for the pages that load later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .errors import Refused
from .schema import BRIDGE_NAME

PAGE_PATH = "/__reactbox/bridge"
"""The page's socket, below the preview's base."""
NAME = BRIDGE_NAME
MAX_HEADER = 1024
MAX_PAGES = 16
MAX_IN_FLIGHT = 64
"""Calls of one project waiting for the kernel; more are refused (429)."""
MAX_KEPT = 32 << 20
MAX_BACKLOG = 32 << 20
"""Bytes written to a socket and not yet sent: a reader that lags more is closed."""
NOT_CONNECTED = (
    "the notebook is not connected: run the cell that exposes it (its kernel may have restarted)"
)


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 4 << 20
    """A page's message (a call's arguments, an event, a state value)."""
    kernel_max_bytes: int = 64 << 20
    """A kernel's message (a result, a value it sends)."""
    call_timeout: float = 60.0
    bytes_per_second: int = 8 << 20
    """What a project's pages may send, together; twice that at once."""
    messages_per_second: int = 500


def frame(header: dict, body: str | None = None) -> str:
    text = json.dumps(header, separators=(",", ":"))
    return text if body is None else f"{text}\n{body}"


def split(message: str) -> tuple[dict, str | None]:
    """(header, body) of a frame; ValueError if the header is not a small object."""
    head, newline, body = message.partition("\n")
    if len(head) > MAX_HEADER:
        raise ValueError("its header is too long")
    header = json.loads(head)
    if not isinstance(header, dict) or not isinstance(header.get("t"), str):
        raise ValueError("its header is not an object with a type")
    return header, body if newline else None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def checked_json(body: str | None, what: str) -> str:
    """``body`` if it is one JSON value (no NaN, no Infinity), else Refused."""
    if body is None:
        return "null"
    try:
        json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise Refused("BadValue", f"{what} is not JSON: {exc}", 400) from None
    return body


class Socket:
    """One end (a page, or the kernel): how to write to it and to close it, and
    how much written to it is still unsent."""

    def __init__(self, write: Callable[[str], asyncio.Future | None], close: Callable):
        self._write = write
        self._close = close
        self.backlog = 0
        self.closed = False

    def send(self, message: str) -> None:
        if self.closed:
            return
        size = len(message)
        if self.backlog + size > MAX_BACKLOG:
            self.close(1008, "it reads too slowly")
            return
        try:
            done = self._write(message)
        except Exception:  # closed meanwhile (tornado's WebSocketClosedError)
            self.closed = True
            return
        if done is not None:
            self.backlog += size
            done.add_done_callback(lambda f: self._sent(size, f))

    def _sent(self, size: int, done: asyncio.Future) -> None:
        self.backlog -= size
        if not done.cancelled():
            done.exception()  # a closed socket's write: nothing more to do

    def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            self._close(code, reason)


@dataclass
class _Call:
    page: Socket
    id: int
    name: str
    timer: asyncio.TimerHandle


class ProjectBridge:
    def __init__(self, project_id: str, limits: Limits, log: logging.Logger, clock=time.monotonic):
        self.project_id = project_id
        self.limits = limits
        self.log = log
        self.clock = clock
        self.kernel: Socket | None = None
        self.functions: list[str] = []
        self.events: list[str] = []
        self.pages: set[Socket] = set()
        self.kept: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.kept_bytes = 0
        self.calls: dict[int, _Call] = {}
        self._next = 0
        self._budget = (float(limits.bytes_per_second * 2), float(limits.messages_per_second * 2))
        self._budget_at = clock()
        self.forwarded = 0
        """Messages of pages that went on to the kernel (tests read it)."""

    # -- status -----------------------------------------------------------------

    def status(self) -> dict:
        return {
            "t": "status",
            "connected": self.kernel is not None,
            "functions": self.functions,
            "events": self.events,
            "max_bytes": self.limits.max_bytes,
        }

    def _tell_pages(self, message: str, but: Socket | None = None) -> None:
        for page in list(self.pages):
            if page is not but:
                page.send(message)

    def _keep(self, kind: str, name: str, body: str) -> None:
        old = self.kept.pop((kind, name), None)
        self.kept_bytes -= len(old) if old is not None else 0
        self.kept[(kind, name)] = body
        self.kept_bytes += len(body)
        while self.kept_bytes > MAX_KEPT and len(self.kept) > 1:
            _, dropped = self.kept.popitem(last=False)
            self.kept_bytes -= len(dropped)

    def _kept_frames(self, kinds: tuple[str, ...]) -> list[str]:
        key = {"value": "name", "state": "key"}
        return [
            frame({"t": kind, key[kind]: name}, body)
            for (kind, name), body in self.kept.items()
            if kind in kinds
        ]

    # -- the kernel ------------------------------------------------------------

    def kernel_opened(self, kernel: Socket) -> None:
        if self.kernel is not None:
            self.kernel.close(4000, "another kernel took this app's bridge")
            self._kernel_gone("another notebook's kernel took its place")
        self.kernel = kernel
        kernel.send(frame({"t": "hello", "project": self.project_id}))
        for message in self._kept_frames(("state",)):
            kernel.send(message)
        self._tell_pages(frame(self.status()))

    def kernel_closed(self, kernel: Socket) -> None:
        if kernel is self.kernel:
            self._kernel_gone(NOT_CONNECTED)

    def _kernel_gone(self, why: str) -> None:
        self.kernel = None
        self.functions, self.events = [], []
        for call_id in list(self.calls):
            self._answer(call_id, False, Refused("NotConnected", why, 503).body())
        self._tell_pages(frame(self.status()))

    def from_kernel(self, kernel: Socket, message: str) -> None:
        if kernel is not self.kernel:
            return
        try:
            header, body = split(message)
        except ValueError as exc:
            self.log.warning(
                "%s: a bridge message of the kernel was dropped: %s", self.project_id, exc
            )
            return
        kind = header["t"]
        if kind == "serve":
            self.functions = _names(header.get("functions"))
            self.events = _names(header.get("events"))
            self._tell_pages(frame(self.status()))
        elif kind == "result" and isinstance(call_id := header.get("id"), int):
            self._answer(call_id, header.get("ok") is True, body or "null")
        elif kind in ("send", "state") and _is_name(name := header.get("name")):
            body = body or "null"
            kept = "value" if kind == "send" else "state"
            self._keep(kept, name, body)
            key = "name" if kept == "value" else "key"
            self._tell_pages(frame({"t": kept, key: name}, body))

    def _answer(self, call_id: int, ok: bool, body: str) -> None:
        call = self.calls.pop(call_id, None)
        if call is None:
            return  # timed out, or its page went away
        call.timer.cancel()
        call.page.send(frame({"t": "result", "id": call.id, "ok": ok}, body))

    # -- pages -------------------------------------------------------------------

    def page_opened(self, page: Socket) -> bool:
        if len(self.pages) >= MAX_PAGES:
            page.close(1013, f"at most {MAX_PAGES} pages of an app talk to its notebook")
            return False
        self.pages.add(page)
        page.send(frame({**self.status(), "t": "hello"}))
        for message in self._kept_frames(("value", "state")):
            page.send(message)
        return True

    def page_closed(self, page: Socket) -> None:
        self.pages.discard(page)
        for call_id, call in list(self.calls.items()):
            if call.page is page:
                call.timer.cancel()
                del self.calls[call_id]

    def _spend(self, size: int) -> bool:
        """Whether the project's pages may send ``size`` bytes more now."""
        now = self.clock()
        elapsed, self._budget_at = now - self._budget_at, now
        limits = self.limits
        data = min(limits.bytes_per_second * 2, self._budget[0] + elapsed * limits.bytes_per_second)
        count = min(
            limits.messages_per_second * 2, self._budget[1] + elapsed * limits.messages_per_second
        )
        if data < size or count < 1:
            self._budget = (data, count)
            return False
        self._budget = (data - size, count - 1)
        return True

    def from_page(self, page: Socket, message: str | bytes) -> None:
        if isinstance(message, bytes):
            page.close(1003, "the bridge speaks text")
            return
        header: dict = {}
        try:
            try:
                header, body = split(message)
            except ValueError as exc:
                raise Refused("BadMessage", f"Not a bridge message: {exc}", 400) from None
            if not self._spend(len(message)):
                raise Refused(
                    "TooManyCalls",
                    "The app sends the notebook too much at once; slow down and try again.",
                    429,
                )
            kind = header["t"]
            if kind == "call":
                self._call(page, header, body)
            elif kind == "emit":
                self._emit(header, body)
            elif kind == "state":
                self._set_state(page, header, body)
            else:
                raise Refused("BadMessage", f"Unknown message type {kind!r}.", 400)
        except Refused as refused:
            call_id = header.get("id")
            if header.get("t") == "call" and isinstance(call_id, int):
                page.send(frame({"t": "result", "id": call_id, "ok": False}, refused.body()))
            else:
                page.send(frame({"t": "error"}, refused.body()))

    def _call(self, page: Socket, header: dict, body: str | None) -> None:
        call_id, name = header.get("id"), header.get("name")
        if not isinstance(call_id, int) or not _is_name(name):
            raise Refused("BadMessage", "A call has an integer id and a function's name.", 400)
        if self.kernel is None:
            raise Refused("NotConnected", NOT_CONNECTED, 503)
        if name not in self.functions:
            exposed = ", ".join(self.functions) or "none"
            raise Refused(
                "NotExposed", f"The notebook does not expose {name!r} (it exposes: {exposed}).", 404
            )
        if len(self.calls) >= MAX_IN_FLIGHT:
            raise Refused(
                "TooManyCalls",
                f"{MAX_IN_FLIGHT} calls are waiting for the notebook; wait for their answers.",
                429,
            )
        args = checked_json(body if body is not None else "[]", "The arguments")
        if not args.lstrip().startswith("["):
            raise Refused("BadValue", "The arguments are a JSON array.", 400)
        timeout = self.limits.call_timeout
        asked = header.get("timeout")
        if isinstance(asked, (int, float)) and 0 < asked < timeout:
            timeout = float(asked)
        self._next += 1
        server_id = self._next
        timer = asyncio.get_running_loop().call_later(
            timeout,
            self._answer,
            server_id,
            False,
            Refused("Timeout", f"{name} did not answer within {timeout:g} s.", 504).body(),
        )
        self.calls[server_id] = _Call(page, call_id, name, timer)
        self.forwarded += 1
        self.kernel.send(frame({"t": "call", "id": server_id, "name": name}, args))

    def _emit(self, header: dict, body: str | None) -> None:
        name = header.get("name")
        if not _is_name(name):
            raise Refused("BadMessage", "An event has a name.", 400)
        if self.kernel is None:
            raise Refused("NotConnected", NOT_CONNECTED, 503)
        if name not in self.events:
            raise Refused("NotListened", f"The notebook does not listen to {name!r}.", 404)
        data = checked_json(body, "The event's value")
        self.forwarded += 1
        self.kernel.send(frame({"t": "event", "name": name}, data))

    def _set_state(self, page: Socket, header: dict, body: str | None) -> None:
        key = header.get("key")
        if not _is_name(key):
            raise Refused("BadMessage", "A state change has a key.", 400)
        value = checked_json(body, "The state's value")
        self._keep("state", key, value)
        message = frame({"t": "state", "key": key}, value)
        self._tell_pages(message, but=page)
        if self.kernel is not None:
            self.forwarded += 1
            self.kernel.send(message)

    def close(self) -> None:
        if self.kernel is not None:
            self.kernel.close(1001, "the project is gone")
            self._kernel_gone("the project is gone")
        for page in list(self.pages):
            page.close(1001, "the project is gone")
        self.pages.clear()


def _is_name(value) -> bool:
    return isinstance(value, str) and NAME.match(value) is not None


def _names(value) -> list[str]:
    if not isinstance(value, list):
        return []
    return sorted({v for v in value if _is_name(v)})[:1000]


class Bridges:
    """The bridges of one space's projects, made on first use."""

    def __init__(self, limits: Limits | None = None, log: logging.Logger | None = None):
        self.limits = limits or Limits()
        self.log = log or logging.getLogger(__name__)
        self._bridges: dict[str, ProjectBridge] = {}

    def __call__(self, project_id: str) -> ProjectBridge:
        bridge = self._bridges.get(project_id)
        if bridge is None:
            bridge = self._bridges[project_id] = ProjectBridge(project_id, self.limits, self.log)
        return bridge

    def get(self, project_id: str) -> ProjectBridge | None:
        return self._bridges.get(project_id)

    def close(self, project_id: str) -> None:
        bridge = self._bridges.pop(project_id, None)
        if bridge is not None:
            bridge.close()
