"""Serving published snapshots at ``{base_url}reactbox/shared/<share-id>/``.

The files of a live share (``shares.py``) are served as they are, with no dev
server and nothing running, under the same headers as a preview
(``proxy.secure``): ``Content-Security-Policy: sandbox ...`` without
``allow-same-origin`` makes the page an opaque origin, so its code cannot read
the viewer's cookies, and its requests to this server carry none and can read
no answer of Jupyter's.  The handler never looks at who is asking: the link is
the key, and a link that does not exist, has expired or was revoked is the
same 404.  Answers are revalidated on every load (``no-cache`` with an ETag),
so a revoked link stops at once, even for a viewer who loaded it before.

Its HTML pages get the preview's shim first (``rewrite.inject_snapshot_shim``):
storage and cookies in memory, so an app that reads them at load still runs in
its opaque origin.  A page load of a path with no file is the app's client
route: its ``index.html`` (the folder's, for a static export with one page per
route, else the root's); any other request for it is a 404.
"""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path

from tornado import httputil, web

from .answers import Answers
from .errors import NotFound
from .proxy import is_navigation, secure
from .rewrite import inject_snapshot_shim, public_files
from .shares import Shares

MIME = {".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json"}
TEXT = ("text/html", "text/javascript", "text/css")


def resolve(site: Path, path: str, *, page: bool = True) -> Path | None:
    """The file of ``site`` that answers ``path`` (below the share's link), or None;
    a path with no file is a client route if it is a ``page`` load."""
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") or "\\" in p or "\x00" in p for p in parts):
        return None
    target = site.joinpath(*parts)
    for candidate in (target, target / "index.html"):
        if candidate.is_file() and not candidate.is_symlink():
            return candidate
    last = parts[-1] if parts else ""
    if page and "." not in last:  # a client route, not a missing asset
        index = site / "index.html"
        return index if index.is_file() else None
    return None


GONE = "No such share: it may have expired or been revoked."


class SharedHandler(Answers, web.RequestHandler):
    """A viewer's request for a file of a published snapshot."""

    frame_ancestors = "'self'"

    def initialize(self, spaces, frame_ancestors: str = "'self'"):
        self.spaces = spaces
        self.frame_ancestors = frame_ancestors
        self.clear()  # the headers again, with these frame ancestors

    def set_default_headers(self) -> None:
        self.clear_header("Server")
        secure(self._headers, self.frame_ancestors, sandboxed=True)

    async def shares_of(self, share_id: str) -> Shares | None:
        """The shares that hold ``share_id`` (whose they are), if any."""
        return self.spaces.space.shares

    async def may_open_page(self, shares: Shares, share_id: str) -> bool:
        """Whether this request may open a page of the share; False once it has been
        answered otherwise (a redirect to log in).  Here the link is the key."""
        return True

    async def get(self, share_id: str, path: str | None = None, *, head: bool = False):
        if path is None:  # the link without its slash: relative URLs need it
            return self.redirect(self.request.path + "/", permanent=False)
        page = is_navigation(self.request)
        shares = await self.shares_of(share_id)
        if page and not await self.may_open_page(shares, share_id):
            return
        site = shares.site(share_id) if shares is not None else None
        found = resolve(site, path, page=page) if site is not None else None
        if found is None:
            raise NotFound(GONE)
        self._site = site
        st = found.stat()
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        self.set_header("Cache-Control", "no-cache, private")
        self.set_header("ETag", etag)
        if self.request.headers.get("If-None-Match") == etag:
            self.set_status(304)
            return self.finish()
        kind = MIME.get(found.suffix) or mimetypes.guess_type(found.name)[0]
        self.set_header("Content-Type", kind or "application/octet-stream")
        body = await asyncio.to_thread(found.read_bytes)
        if kind in TEXT:
            # As in a preview: a reference from the root to a file of the site (an
            # app's `<img src="/logo.svg">`) goes under the link.
            base = self.request.path[: len(self.request.path) - len(path) + 1]
            body = public_files(self._site).rewrite(body, base)
            if kind == "text/html":
                body = inject_snapshot_shim(body, base)
        if head:
            self.set_header("Content-Length", str(len(body)))
            return self.finish()
        self.finish(body)

    async def head(self, share_id: str, path: str | None = None):
        await self.get(share_id, path, head=True)

    def write_error(self, status_code: int, **kwargs) -> None:
        """Plain text, under the same headers as a file: the app's own fetch of a
        path the snapshot has not (its companion API) sees a 404, not a CORS error."""
        status, message = self.answer(status_code, kwargs)
        self._headers = httputil.HTTPHeaders()
        self.set_default_headers()
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status} {self._reason}: {message or self._reason}\n")


PATH = r"/reactbox/shared/(?P<share_id>[^/]+)(?P<path>/.*)?"
"""Below the server's base URL (or the hub service's prefix): a share's files."""


def handlers(spaces, frame_ancestors: str) -> list[tuple]:
    return [(PATH, SharedHandler, {"spaces": spaces, "frame_ancestors": frame_ancestors})]
