"""The preview proxy's memory of a dev server's modules, served again without it.

A page in the preview's sandbox has an opaque origin, and Chromium keeps no
HTTP cache for one: each load fetches every module of the app again, in full,
where a page at the dev server's own address revalidates them (304).  So the
proxy keeps what it served, per run of a dev server, and answers a module it
already has from memory, without a round trip to the dev server.

When to serve it again is the dev server's word: the product's Vite plugin
(``frameworks/support/vite-plugin.mjs``) counts what can change a module (a
file event of Vite's watcher, a message to the pages) as a generation,
``<run>.<n>``.  It labels every response with the generation it was served at,
and the proxy follows ``GENERATION_PATH``, where the dev server says each new
generation the moment it counts it.  An answer is kept under the generation it
was served at, and replayed only while the proxy hears nothing newer; a newer
generation, on the stream or on any response, drops everything kept, and so
does any message from the dev server to a page as it passes the proxy (the
page never hears of an update and then gets an older module).  Without the
stream (not yet, or no longer, connected) nothing is replayed.  A dev server
without the plugin (create-react-app, Next.js) sends no generation, and
nothing of it is kept.

The dev server is the sandbox's and untrusted: what it says can only decide
whether its own earlier answers are replayed, to its own preview, within a
fixed budget of memory.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from dataclasses import dataclass

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

GENERATION_HEADER = "X-Reactbox-Generation"
GENERATION_PATH = "/__reactbox/generation"
MAX_LINES_PER_SECOND = 500
"""More lines than this in a second on the stream, and the proxy stops listening to
that dev server (and replays nothing of it): a flood is not a dev server's work."""
MAX_FOLLOWS = 20
"""Connections to one run's stream; a dev server that keeps closing it is left."""
SILENT_FOR = 75.0
"""Seconds without a line on the stream (the plugin repeats the generation every
30) after which it counts as gone."""
_GENERATION_RE = re.compile(r"([a-z0-9]{1,16})\.([0-9]{1,15})")
MAX_BYTES = 24 << 20
"""What one preview's cache holds at most (the least recently used goes first)."""
MAX_ENTRY = 4 << 20
"""The largest answer kept (a big pre-bundled dependency is about 1 MiB)."""

Key = tuple[str, str, str]


@dataclass(frozen=True)
class Cached:
    headers: tuple[tuple[str, str], ...]
    """The dev server's headers as the proxy passes them on (before its own)."""
    body: bytes
    etag: str


def parse_generation(value: str | None) -> tuple[str, int] | None:
    """``(run, n)`` of a generation header, or None for none or a malformed one."""
    match = _GENERATION_RE.fullmatch(value or "")
    return (match[1], int(match[2])) if match else None


class ResponseCache:
    """One run's answers, for one preview (a new run of its dev server gets a new
    token, and with it a new cache)."""

    def __init__(self, token: str, max_bytes: int = MAX_BYTES):
        self.token = token
        self.max_bytes = max_bytes
        self.generation: tuple[str, int] | None = None
        """The newest generation seen: only answers of it are kept."""
        self.size = 0
        self._entries: OrderedDict[Key, Cached] = OrderedDict()
        self.live = False
        """The dev server's stream of generations is connected: only then is
        anything replayed."""
        self._follower: asyncio.Task | None = None
        self._follows = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self) -> None:
        self._entries.clear()
        self.size = 0

    def observe(self, generation: tuple[str, int] | None) -> bool:
        """Take the generation of a response; True if it is the newest (so the
        response may be kept).  A newer one drops everything kept."""
        if generation is None:
            return False
        if self.generation is not None and generation[0] == self.generation[0]:
            if generation[1] < self.generation[1]:
                return False  # an answer that was on its way during a change
            if generation[1] == self.generation[1]:
                return True
        self._drop()
        self.generation = generation
        return True

    def changed(self) -> None:
        """The dev server told a page that something changed (it counted that
        before it said so): whatever is kept may be old, and so may any answer
        labelled before it."""
        self._drop()
        if self.generation is not None:
            self.generation = (self.generation[0], self.generation[1] + 1)

    def follow(self, session: aiohttp.ClientSession, endpoint: str) -> None:
        """Listen to the dev server at ``endpoint`` (``http://host:port``) for new
        generations, unless already listening."""
        if self._follows < MAX_FOLLOWS and (self._follower is None or self._follower.done()):
            self._follows += 1
            self._follower = asyncio.ensure_future(self._follow(session, endpoint))

    async def _follow(self, session: aiohttp.ClientSession, endpoint: str) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_read=SILENT_FOR)
        second, lines = 0, 0
        try:
            async with session.get(endpoint + GENERATION_PATH, timeout=timeout) as stream:
                if stream.status != 200:
                    return
                async for line in stream.content:
                    generation = parse_generation(line.decode("ascii", "replace").strip())
                    if generation is None:
                        self._follows = MAX_FOLLOWS
                        return  # not the plugin's stream: nothing is replayed
                    now = int(time.monotonic())
                    second, lines = (second, lines + 1) if now == second else (now, 1)
                    if lines > MAX_LINES_PER_SECOND:
                        self._follows = MAX_FOLLOWS
                        return
                    self.observe(generation)
                    self.live = True
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass  # a dev server stopped, or frozen too long
        except (ValueError, HttpProcessingError):
            self._follows = MAX_FOLLOWS  # a line far too long, or not HTTP
        finally:
            self.live = False
            self._drop()

    def close(self) -> None:
        """The dev server is gone: stop listening, drop everything."""
        if self._follower is not None:
            self._follower.cancel()
        self.live = False
        self._drop()

    def get(self, key: Key) -> Cached | None:
        if not self.live:
            return None
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: Key, entry: Cached, generation: tuple[str, int]) -> None:
        """Keep ``entry``, served at ``generation``, if that is still the newest."""
        size = len(entry.body) + 256
        if generation != self.generation or size > min(MAX_ENTRY, self.max_bytes):
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= len(old.body) + 256
        self._entries[key] = entry
        self.size += size
        while self.size > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.size -= len(dropped.body) + 256
