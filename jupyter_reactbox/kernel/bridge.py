"""The notebook's side of an app's bridge (the server's side: ``jupyter_reactbox/bridge.py``).

    shop = client.project("shop")

    @shop.expose
    def predict(price: float) -> dict: ...     # the app: await call("predict", 3)

    shop.on("selected", lambda row: ...)       # the app: emit("selected", row)
    shop.send("prices", df)                    # the app: useNotebook("prices"), at once
    shop.state["filter"] = "fruit"             # the app: useNotebookState("filter")

One websocket per project, from this kernel to the server that serves the
preview, opened on first use and held by a daemon thread with its own event
loop.  The server lets the page call only what is exposed here, with JSON
arguments it has checked; this side runs the function on a worker thread (one
call at a time per function unless ``concurrent=True``) so the kernel stays free
for cells, and answers with its JSON result, or with the exception's type and
message (the traceback goes to the output of the cell that exposed it).  What
a function prints goes there too.  A kernel restart closes the socket: the
server tells the page that the notebook is not connected.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

from ..schema import BRIDGE_NAME
from .client import API, ReactBoxClientError, to_json

CONNECT_TIMEOUT = 15.0
TAKEN = 4000
"""The server's close code when another kernel took the project's bridge."""
WORKERS = 8


@dataclass
class _Served:
    """An exposed function or an event handler, with the context of the cell that
    registered it (where its output and tracebacks go)."""

    fn: Callable
    concurrent: bool
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    lock: asyncio.Lock | None = None


class BridgeState(MutableMapping):
    """``shop.state``: values shared with the app; setting one sends it."""

    def __init__(self, bridge: KernelBridge):
        self._bridge = bridge
        self._values: dict = {}

    def __getitem__(self, key):
        return self._values[key]

    def __setitem__(self, key, value) -> None:
        body = to_json(value).decode()
        self._bridge._post({"t": "state", "name": key}, body)
        self._values[key] = json.loads(body)

    def __delitem__(self, key) -> None:
        self[key] = None
        del self._values[key]

    def __iter__(self) -> Iterator:
        return iter(dict(self._values))

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"<state of {self._bridge.project_id}: {self._values!r}>"


class KernelBridge:
    def __init__(self, client, project_id: str):
        self.client = client
        self.project_id = project_id
        self.functions: dict[str, _Served] = {}
        self.handlers: dict[str, list[_Served]] = {}
        self.state = BridgeState(self)
        self.calls_received = 0
        """Calls that reached this kernel (what the attack tests count)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ws = None
        self._connected = threading.Event()
        self._error: str | None = None
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix=f"reactbox-{project_id}")
        self._lock = threading.Lock()
        self._closing = False
        self._connecting = False
        self._retry = 0.5
        self._tasks: set[asyncio.Task] = set()

    def __repr__(self) -> str:
        state = "connected" if self._connected.is_set() else "not connected"
        return f"<bridge of {self.project_id}, {state}: exposes {sorted(self.functions)}>"

    # -- what the notebook calls ------------------------------------------------------

    def expose(self, fn: Callable | None = None, *, name: str | None = None, concurrent=False):
        """Make ``fn`` callable from the app as ``call(name, ...args)`` (a decorator
        too).  ``concurrent``: let calls run at once (the function is thread-safe);
        by default one runs at a time."""
        if fn is None:
            return lambda f: self.expose(f, name=name, concurrent=concurrent)
        if not callable(fn):
            raise ReactBoxClientError(f"Expose a function, not {type(fn).__name__}.")
        key = name or getattr(fn, "__name__", "")
        _check_name(key)
        self.functions[key] = _Served(fn, concurrent)
        self._serve()
        return fn

    def unexpose(self, fn_or_name: Callable | str | None = None) -> None:
        """The app can no longer call it (``None``: any of them)."""
        if fn_or_name is None:
            self.functions.clear()
        else:
            key = fn_or_name if isinstance(fn_or_name, str) else fn_or_name.__name__
            self.functions.pop(key, None)
        self._serve()

    def on(self, name: str, fn: Callable | None = None):
        """Call ``fn(value)`` whenever the app does ``emit(name, value)`` (a decorator too).
        A function of the same name given again (its cell run again) replaces it."""
        if fn is None:
            return lambda f: self.on(name, f)
        _check_name(name)
        kept = [h for h in self.handlers.get(name, []) if not _same(h.fn, fn)]
        self.handlers[name] = [*kept, _Served(fn, False)]
        self._serve()
        return fn

    def off(self, name: str, fn: Callable | None = None) -> None:
        kept = [h for h in self.handlers.get(name, []) if fn is not None and h.fn is not fn]
        if kept:
            self.handlers[name] = kept
        else:
            self.handlers.pop(name, None)
        self._serve()

    def send(self, name: str, value) -> None:
        """Push ``value`` (JSON; DataFrames as row objects) to the app now: its
        ``useNotebook(name)`` renders again, nothing reloads."""
        _check_name(name)
        self._post({"t": "send", "name": name}, to_json(value).decode())

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def close(self) -> None:
        """Stop serving: the app sees the notebook as not connected."""
        self._closing = True
        if self._loop is not None and self._ws is not None:
            self._loop.call_soon_threadsafe(self._ws.close)
        self._connected.clear()

    # -- the connection -----------------------------------------------------------------

    def _serve(self) -> None:
        self._post(
            {"t": "serve", "functions": sorted(self.functions), "events": sorted(self.handlers)}
        )

    def _post(self, header: dict, body: str | None = None) -> None:
        self._ensure()
        text = json.dumps(header, separators=(",", ":"))
        message = text if body is None else f"{text}\n{body}"
        done = asyncio.run_coroutine_threadsafe(self._write(message), self._loop)
        try:
            done.result(CONNECT_TIMEOUT)
        except Exception as exc:
            raise ReactBoxClientError(f"The bridge to {self.project_id} is closed: {exc}") from None

    async def _write(self, message: str) -> None:
        if self._ws is None:
            raise ConnectionError("not connected")
        await self._ws.write_message(message)

    def _ensure(self) -> None:
        with self._lock:
            if self._connected.is_set():
                return
            self._closing = False
            self._error = None
            if self._loop is None:
                ready = threading.Event()
                threading.Thread(
                    target=self._run,
                    args=(ready,),
                    name=f"reactbox-bridge-{self.project_id}",
                    daemon=True,
                ).start()
                ready.wait()
            attempt = asyncio.run_coroutine_threadsafe(self._connect(), self._loop)
            try:
                attempt.result(CONNECT_TIMEOUT)
            except TimeoutError:
                pass
            if self._error is None:  # or another attempt is under way: wait for it
                self._connected.wait(CONNECT_TIMEOUT)
            if not self._connected.is_set():
                raise ReactBoxClientError(
                    self._error or f"The bridge to {self.project_id} did not connect in time."
                )

    def _run(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        ready.set()
        self._loop.run_forever()

    def _url(self) -> str:
        parts = urlsplit(self.client.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = f"{parts.path}{API}/projects/{quote(self.project_id, safe='')}/bridge"
        return urlunsplit((scheme, parts.netloc, path, "", ""))

    async def _connect(self, again: bool = False) -> None:
        from tornado import httpclient, websocket

        if self._ws is not None or self._connecting:
            return
        self._connecting = True
        headers = {}
        if self.client.token:
            headers["Authorization"] = f"token {self.client.token}"
        request = httpclient.HTTPRequest(self._url(), headers=headers, connect_timeout=10)
        try:
            ws = await websocket.websocket_connect(request, max_message_size=64 << 20)
        except httpclient.HTTPClientError as exc:
            self._error = _refusal(exc, self.project_id)
            return
        except OSError as exc:
            self._error = f"The Jupyter server is not answering ({exc})."
            if again:
                self._closed(None, None)
            return
        finally:
            self._connecting = False
        hello = await ws.read_message()
        if hello is None:
            why = f" ({ws.close_reason})" if ws.close_reason else ""
            self._error = f"The server closed the bridge to {self.project_id} at once{why}."
            return
        self._ws = ws
        self._retry = 0.5
        self._connected.set()
        self._spawn(self._read(ws))
        if self.functions or self.handlers:  # again, after the server came back
            serving = {"functions": sorted(self.functions), "events": sorted(self.handlers)}
            await self._write(json.dumps({"t": "serve", **serving}))

    def _spawn(self, coroutine) -> None:
        """A task of the bridge's loop, kept until it is done."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, ws) -> None:
        try:
            while (message := await ws.read_message()) is not None:
                if isinstance(message, str):
                    try:
                        self._receive(message)
                    except (ValueError, KeyError, TypeError) as exc:
                        print(f"reactbox: a bridge message was dropped: {exc}", file=sys.stderr)
        finally:
            if self._ws is ws:
                self._ws = None
                self._connected.clear()
                if not self._closing:
                    self._closed(ws.close_code, ws.close_reason)

    def _closed(self, code: int | None, reason: str | None) -> None:
        """The server closed the bridge: say why, and come back while anything is
        served (a restarted server), unless another kernel took it."""
        if reason:
            print(f"reactbox: the bridge to {self.project_id} closed: {reason}", file=sys.stderr)
        if code == TAKEN or not (self.functions or self.handlers):
            return
        self._retry = min(2 * self._retry, 10.0)
        self._loop.call_later(self._retry, lambda: self._spawn(self._connect(True)))

    def _receive(self, message: str) -> None:
        head, _, body = message.partition("\n")
        header = json.loads(head)
        kind = header.get("t")
        if kind == "call":
            self.calls_received += 1
            self._spawn(self._call(header["id"], header.get("name"), body))
        elif kind == "event":
            for handler in list(self.handlers.get(header.get("name"), [])):
                self._spawn(self._run_served(handler, header["name"], body, event=True))
        elif kind == "state":
            self.state._values[header.get("key")] = json.loads(body) if body else None

    async def _call(self, call_id: int, name: str, body: str) -> None:
        served = self.functions.get(name)
        if served is None:  # unexposed while the call was on its way
            return await self._answer(
                call_id,
                False,
                {
                    "type": "NotExposed",
                    "message": f"The notebook no longer exposes {name!r}.",
                    "status": 404,
                },
            )
        ok, value = await self._run_served(served, name, body, event=False)
        await self._answer(call_id, ok, value)

    async def _run_served(self, served: _Served, name: str, body: str, *, event: bool):
        if served.lock is None and not served.concurrent:
            served.lock = asyncio.Lock()
        if served.lock is not None:
            async with served.lock:
                return await self._in_worker(served, name, body, event)
        return await self._in_worker(served, name, body, event)

    async def _in_worker(self, served: _Served, name: str, body: str, event: bool):
        def work():
            value = json.loads(body) if body else None
            try:
                result = served.fn(value) if event else served.fn(*value)
                return True, to_json(result).decode()
            except Exception as exc:  # whatever it is, it is the app's answer
                what = f"the handler of {name!r}" if event else f"{name}() called from the app"
                print(f"reactbox: {what} raised:", file=sys.stderr)
                traceback.print_exc()
                message = f"{type(exc).__name__}: {exc}"
                return False, {"type": type(exc).__name__, "message": message, "status": 500}

        context = served.context.copy()  # one context may not be entered by two threads
        return await self._loop.run_in_executor(self._pool, context.run, work)

    async def _answer(self, call_id: int, ok: bool, value) -> None:
        body = value if isinstance(value, str) else json.dumps(value)
        header = json.dumps({"t": "result", "id": call_id, "ok": ok})
        try:
            await self._write(f"{header}\n{body}")
        except Exception:  # the socket closed meanwhile: nobody waits for it
            pass


def _same(old: Callable, new: Callable) -> bool:
    """``new`` is ``old`` defined again (a cell run again); lambdas are never the same."""
    qualname = getattr(new, "__qualname__", None)
    return old is new or (
        qualname is not None
        and "<lambda>" not in qualname
        and qualname == getattr(old, "__qualname__", None)
        and getattr(new, "__module__", None) == getattr(old, "__module__", None)
        and getattr(new, "__self__", None) is getattr(old, "__self__", None)
    )


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not BRIDGE_NAME.match(name):
        raise ReactBoxClientError(
            f"{name!r} cannot be a bridge name: use letters, digits, '_', '.', '-' or ':' "
            "(a lambda needs one: expose(fn, name='total'))."
        )


def _refusal(exc, project_id: str) -> str:
    code = getattr(exc, "code", None)
    if code == 404:
        return f"No project {project_id!r} on this server (or it has no bridge)."
    if code in (401, 403):
        return "The Jupyter server refused this kernel's credentials for the bridge."
    return f"The bridge to {project_id} could not be opened: {exc}."


_bridges: dict[tuple[str, str], KernelBridge] = {}
_bridges_lock = threading.Lock()


def bridge_of(client, project_id: str) -> KernelBridge:
    """The kernel's one bridge to ``project_id`` of the server at ``client.url``."""
    with _bridges_lock:
        key = (client.url, project_id)
        if key not in _bridges:
            _bridges[key] = KernelBridge(client, project_id)
        return _bridges[key]
