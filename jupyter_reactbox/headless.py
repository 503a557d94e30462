"""The server's own headless Chromium: one page load of a preview, shut in.

Used to take a picture of a preview for the model (``ai/vision.py``) and to
load a preview once after an AI edit when no page of it is open, so that an
error the app throws while rendering is caught even then (the page check of
``ai/editor.py``).

The page is the app's code, so the browser is shut in: a fresh profile in a
temporary folder, no cookies, and every request but those to the address it
loads the page from sent to a proxy that does not exist (loopback included),
so the page can reach neither this host's other services nor anything else;
no UDP for WebRTC; killed after ``timeout`` seconds.  It is driven over the
DevTools *pipe* (``--remote-debugging-pipe``, file descriptors 3 and 4 of the
browser), never a port another local user could connect to.

What comes back is what the page did: its uncaught errors and rejections (as
the page's own reporter words them: ``kind``, ``message``, ``source``,
``stack``), whether it shows nothing at all, and the picture if one was asked
for.  All of it is the app's own words: it goes to the model only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import BrowserError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SETTLE = 1.0
"""Seconds without a new error after the page loaded before it counts as settled."""
MOST_AFTER_LOAD = 5.0
"""Seconds after the page loaded that its errors are listened for, at most."""
MAX_ERRORS = 20
_BLANK = """(() => {
  const body = document.body
  if (!body) return true
  const seen = body.querySelector('img,svg,canvas,video,iframe,input,button,select,textarea')
  return !body.innerText.trim() && !seen
})()"""


_AT_3_AND_4 = """\
import os, sys
read, write = int(sys.argv[1]), int(sys.argv[2])
os.dup2(read, 3)
os.dup2(write, 4)
for fd in {read, write} - {3, 4}:
    os.close(fd)
os.execv(sys.argv[3], sys.argv[3:])
"""
"""The browser reads the DevTools pipe at file descriptor 3 and writes it at 4: this
puts the two pipe ends there and becomes the browser (no shell: dash takes only one
digit for a descriptor, and the server's are larger)."""


@dataclass
class Loaded:
    """What one load of a page did."""

    errors: list[dict] = field(default_factory=list)
    blank: bool = False
    """Nothing to see: no text, no image, no control (a render that threw, most likely)."""
    png: bytes | None = None


def find_browser(configured: str = "") -> str | None:
    """The headless browser: the configured one, else the first on PATH."""
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def browser_args(url: str, profile: Path, *, width: int, height: int) -> list[str]:
    """Headless Chromium, driven over the DevTools pipe, able to reach only the
    host of ``url``."""
    netloc = urlsplit(url).netloc
    args = [
        "--headless",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--disable-extensions",
        "--mute-audio",
        f"--user-data-dir={profile}",
        # Everything goes to a proxy that is not there, loopback too (<-loopback>),
        # except the address the page is loaded from.
        "--proxy-server=http://127.0.0.1:9",
        f"--proxy-bypass-list=<-loopback>;{netloc}",
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
        f"--window-size={width},{height}",
        "--remote-debugging-pipe",
        "about:blank",
    ]
    if os.geteuid() == 0:  # Chromium's own sandbox refuses root
        args.insert(0, "--no-sandbox")
    return args


def report(details: dict) -> dict:
    """A ``Runtime.exceptionThrown``'s details as the page's reporter words an error."""
    exception = details.get("exception") or {}
    description = str(exception.get("description") or exception.get("value") or "")
    text = str(details.get("text") or "Uncaught")
    message = description.splitlines()[0] if description else text
    where = details.get("url") or ""
    if where:
        where = f"{where}:{details.get('lineNumber', 0) + 1}:{details.get('columnNumber', 0) + 1}"
    kind = "rejection" if "(in promise)" in text else "error"
    if kind == "error" and not message.startswith("Uncaught"):
        message = f"Uncaught {message}"
    return {"kind": kind, "message": message[:2000], "source": where[:500],
            "stack": description[:4000]}  # fmt: skip


class _Pipe:
    """The DevTools protocol over the browser's pipe: JSON messages ended by NUL."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.WriteTransport):
        self.reader, self.writer = reader, writer
        self.next_id = 0
        self.answers: dict[int, asyncio.Future] = {}
        self.events: asyncio.Queue[dict] = asyncio.Queue()
        self.closed = False
        self.pump = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                message = json.loads((await self.reader.readuntil(b"\0"))[:-1])
                waiting = self.answers.pop(message.get("id", -1), None)
                if waiting is not None:
                    if not waiting.done():
                        waiting.set_result(message)
                elif "method" in message:
                    self.events.put_nowait(message)
        self.closed = True
        for waiting in self.answers.values():
            if not waiting.done():
                waiting.set_exception(BrowserError("the browser closed its pipe"))

    async def call(self, method: str, params: dict | None = None, session: str | None = None):
        if self.closed:
            raise BrowserError("the browser closed its pipe")
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        answer = self.answers[self.next_id] = asyncio.get_running_loop().create_future()
        self.writer.write(json.dumps(message).encode() + b"\0")
        result = await answer
        if "error" in result:
            raise BrowserError(f"{method}: {result['error'].get('message')}")
        return result.get("result", {})


async def load(
    browser: str,
    url: str,
    *,
    screenshot: bool = False,
    width: int = 1280,
    height: int = 800,
    timeout: float = 30,
    settle: float = SETTLE,
) -> Loaded:
    """Load ``url`` once in a shut-in headless ``browser``, until the page has
    loaded and thrown nothing new for ``settle`` seconds (at most
    ``MOST_AFTER_LOAD`` after its load): what it threw, whether it is blank, and
    its picture when ``screenshot``."""
    try:
        return await asyncio.wait_for(
            _load(browser, url, screenshot, width, height, settle), timeout
        )
    except asyncio.TimeoutError:
        raise BrowserError(f"the browser took longer than {timeout:.0f} s") from None


async def _load(
    browser: str, url: str, screenshot: bool, width: int, height: int, settle: float
) -> Loaded:
    with tempfile.TemporaryDirectory(prefix="reactbox-page-") as tmp:
        to_browser, from_browser = os.pipe(), os.pipe()
        args = browser_args(url, Path(tmp) / "profile", width=width, height=height)
        inner_in, inner_out = to_browser[0], from_browser[1]
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _AT_3_AND_4,
                str(inner_in),
                str(inner_out),
                browser,
                *args,
                pass_fds=(inner_in, inner_out),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        finally:
            os.close(inner_in)
            os.close(inner_out)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=64 << 20)
        read_file = os.fdopen(from_browser[0], "rb")
        write_file = os.fdopen(to_browser[1], "wb")
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), read_file)
        writer, _ = await loop.connect_write_pipe(asyncio.Protocol, write_file)
        pipe = _Pipe(reader, writer)
        try:
            return await _drive(pipe, url, screenshot, width, height, settle)
        except (BrowserError, ConnectionError, OSError) as exc:
            if not pipe.closed:
                raise
            raise BrowserError(f"the browser ended ({exc}): {await _stderr(proc)}") from None
        finally:
            pipe.pump.cancel()
            writer.close()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the browser and all its helpers
            await proc.wait()


async def _stderr(proc: asyncio.subprocess.Process) -> str:
    with contextlib.suppress(asyncio.TimeoutError, ValueError):
        assert proc.stderr is not None
        data = await asyncio.wait_for(proc.stderr.read(4096), 1)
        lines = data.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no output"
    return "no output"


async def _drive(
    pipe: _Pipe, url: str, screenshot: bool, width: int, height: int, settle: float
) -> Loaded:
    targets = await pipe.call("Target.getTargets")
    page = next(t for t in targets["targetInfos"] if t.get("type") == "page")
    attached = await pipe.call("Target.attachToTarget", {"targetId": page["targetId"],
                                                         "flatten": True})  # fmt: skip
    session = attached["sessionId"]
    for method in ("Runtime.enable", "Page.enable"):
        await pipe.call(method, session=session)
    await pipe.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                    "deviceScaleFactor": 1, "mobile": False}, session=session)  # fmt: skip
    navigated = await pipe.call("Page.navigate", {"url": url}, session=session)
    if navigated.get("errorText"):
        raise BrowserError(f"the page did not load: {navigated['errorText']}")
    loaded = Loaded()
    loaded_at: float | None = None
    last_error = time.monotonic()
    while True:
        now = time.monotonic()
        if loaded_at is not None and (
            now - max(loaded_at, last_error) >= settle or now - loaded_at >= MOST_AFTER_LOAD
        ):
            break
        try:
            event = await asyncio.wait_for(pipe.events.get(), 0.1)
        except asyncio.TimeoutError:
            continue
        method, params = event["method"], event.get("params", {})
        if method == "Page.loadEventFired":
            loaded_at = time.monotonic()
        elif method == "Runtime.exceptionThrown" and len(loaded.errors) < MAX_ERRORS:
            loaded.errors.append(report(params.get("exceptionDetails") or {}))
            last_error = time.monotonic()
    blank = await pipe.call("Runtime.evaluate", {"expression": _BLANK, "returnByValue": True},
                            session=session)  # fmt: skip
    loaded.blank = blank.get("result", {}).get("value") is True
    if screenshot:
        shot = await pipe.call("Page.captureScreenshot", {"format": "png"}, session=session)
        loaded.png = base64.b64decode(shot["data"])
    with contextlib.suppress(BrowserError, ConnectionError):
        await asyncio.wait_for(pipe.call("Browser.close"), 2)
    return loaded
