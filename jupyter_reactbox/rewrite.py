"""Rewrites applied to preview responses (see proxy.py for why)."""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import stat
from pathlib import Path

_STATIC = Path(__file__).parent / "static"
SHIM = (_STATIC / "shim.js").read_bytes()
ACTIVITY = (_STATIC / "activity.js").read_bytes()
SELECT = (_STATIC / "select.js").read_bytes()
_HEAD_RE = re.compile(rb"<head(?:\s[^>]*)?>", re.IGNORECASE)
_OPENERS = b"\"'`("
"""What comes right before a rewritten reference: a quote, or ``url(``."""


class PublicFiles:
    """Rewrites absolute references to the app's ``public/`` files to the preview base.

    The folder is listed again only when its mtime changes (an entry was added,
    removed or renamed), so a request costs one ``stat``.  The folder is the
    sandbox's: a link in its place is not followed, and at most ``MAX_NAMES``
    entries are read, so a folder of thousands of files cannot stall the server
    (a page of an app with more names at the top of ``public/`` keeps the rest
    as they are).
    """

    MAX_NAMES = 500

    def __init__(self, public_dir: str | Path):
        self.public_dir = public_dir
        self._key: int | None = None
        self._regex: re.Pattern[bytes] | None = None

    def regex(self) -> re.Pattern[bytes] | None:
        try:
            st = os.stat(self.public_dir, follow_symlinks=False)
            key = st.st_mtime_ns if stat.S_ISDIR(st.st_mode) else -1
        except OSError:
            key = -1
        if key != self._key:
            entries = []
            if key != -1:
                try:
                    with os.scandir(self.public_dir) as it:
                        entries = sorted(
                            (e.name, e.is_dir(follow_symlinks=False))
                            for e in itertools.islice(it, self.MAX_NAMES)
                        )
                except OSError:
                    entries = []
            names = [
                re.escape(n.encode()) + (b"/" if is_dir else rb"(?=[\"'`?#)\s\\])")
                for n, is_dir in entries
            ]
            # Starts with a literal "/", which the regex engine skips to quickly; the
            # quote before it is checked per match (a pattern that starts at the
            # quote tries every quote of a module: 10x slower).
            self._regex = re.compile(rb"/(?=(?:" + b"|".join(names) + rb"))") if names else None
            self._key = key
        return self._regex

    def rewrite(self, body: bytes, base: str) -> bytes:
        regex = self.regex()
        if regex is None:
            return body
        new = base.encode()

        def replace(match: re.Match[bytes]) -> bytes:
            at = match.start()
            return new if at and body[at - 1] in _OPENERS else b"/"

        return regex.sub(replace, body)


@functools.lru_cache(maxsize=256)
def public_files(public_dir: str | Path) -> PublicFiles:
    return PublicFiles(public_dir)


def script_json(value: object) -> bytes:
    """``value`` as JSON that cannot end a script element (or a line of it)."""
    text = json.dumps(value, ensure_ascii=False).replace("<", "\\u003c")
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


def inject_scripts(
    html: bytes,
    base: str,
    *,
    sandboxed: bool,
    beat_ms: int = 60_000,
    key: str = "",
    stored: dict | None = None,
) -> bytes:
    """Put our scripts first in <head>, before any of the app's: the activity
    reporter (input reported at most every ``beat_ms``, with the page's ``key``; none
    without one) and select mode always, the shim when the page runs in an opaque
    origin (with what the project's pages ``stored`` before)."""
    literal = script_json(base)
    activity = ACTIVITY.replace(b"__REACTBOX_BASE__", literal)
    activity = activity.replace(b"__REACTBOX_EVERY__", str(int(beat_ms)).encode())
    activity = activity.replace(b"__REACTBOX_KEY__", json.dumps(key).encode())
    shim = b""
    if sandboxed:
        shim = SHIM.replace(b"__REACTBOX_BASE__", literal)
        shim = shim.replace(b"__REACTBOX_STORED__", script_json(stored or {}))
    return _first_in_head(html, _where(literal) + shim + SELECT + activity)


def inject_snapshot_shim(html: bytes, base: str) -> bytes:
    """A published snapshot's page (``shared.py``): the shim alone, first in <head>,
    so that an app that reads storage or cookies at load runs in its opaque origin
    (what it stores lives as long as the page: a viewer writes nothing here)."""
    literal = script_json(base)
    shim = SHIM.replace(b"__REACTBOX_BASE__", literal).replace(b"__REACTBOX_STORED__", b"{}")
    return _first_in_head(html, _where(literal) + shim)


def _where(literal: bytes) -> bytes:
    """Where the app's `reactbox` module (the notebook bridge) finds the preview."""
    where = b'Object.defineProperty(window,"__reactbox",{value:Object.freeze({base:%s})});'
    return where % literal


def _first_in_head(html: bytes, scripts: bytes) -> bytes:
    match = _HEAD_RE.search(html)
    at = match.end() if match else 0
    return html[:at] + b"<script>" + scripts + b"</script>" + html[at:]
