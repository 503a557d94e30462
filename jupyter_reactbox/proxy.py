"""The preview proxy: ``{base_url}reactbox/preview/<project>/<token>/...``.

The app's code is untrusted.  Served from Jupyter's own origin, its JavaScript
could read Jupyter's cookies and call ``/api/kernels`` as the user.  So:

* Every response carries ``Content-Security-Policy: sandbox ...`` without
  ``allow-same-origin``: the page runs in an opaque origin, and the browser
  sends it no Jupyter cookie and lets it read nothing of Jupyter's.
* Authorisation is therefore not the Jupyter cookie but the capability token
  in the path, minted per run for the authenticated owner by the REST API.
  A request without the current token gets 403 and reaches nothing.
* The dev server never sees the user's credentials: ``Cookie``,
  ``Authorization`` and Jupyter's ``token`` are stripped, ``Set-Cookie`` is
  dropped, and the upstream is only the project's own container.
* A stopped preview keeps its link: a page load (not the app's own requests)
  starts it again and is held until it answers; ``static/activity.js``
  reports a person's input, so a preview in use is not culled as idle.
* An injected shim (``static/shim.js``) gives the opaque page in-memory
  ``localStorage`` and ``document.cookie`` and inlines external SVG sprites;
  references to files of the app's ``public/`` folder are rewritten to the
  preview base, so absolute paths like ``/icons.svg`` do not escape it.

In separate-origin mode (``c.ReactBoxApp.preview_origin_template``, e.g.
``https://{project}.preview.example.org``) each preview is served at ``/`` of
its own host by :class:`OriginPreviewHandler`: the app needs no prefix, and
its origin is not Jupyter's, so neither the sandbox nor the shim is needed.
The link is ``<origin>/__reactbox/enter/<token>``; it trades the token for an
HttpOnly cookie of that host alone, which every later request carries.
Nothing of Jupyter is served on a preview host.
"""

from __future__ import annotations

import asyncio
import functools
import html
import json
import logging
import re
from urllib.parse import unquote_plus, urlsplit

import aiohttp
import yarl
from jupyter_server._tz import utcnow
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server_proxy.handlers import ProxyHandler
from tornado import httputil, web, websocket
from tornado.routing import PathMatches, Router, Rule

from . import boxes, frameworks
from .answers import Answers
from .bridge import MAX_HEADER, Socket
from .bridge import PAGE_PATH as BRIDGE_PATH
from .errors import BadRequest, Busy, Forbidden, NotAnswering, NotFound, ReactBoxError, TooLarge
from .previews import PreviewState
from .response_cache import GENERATION_HEADER, Cached, ResponseCache, parse_generation
from .rewrite import inject_scripts, public_files
from .runtime import Runtime

SANDBOX_POLICY = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"
_STRIPPED_REQUEST_HEADERS = ("Cookie", "Authorization", "X-XSRFToken", "Accept-Encoding")
_HOP_BY_HOP = (
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
    "Proxy-Authorization",
    "Proxy-Authenticate",
    "Content-Length",
)
_NOT_FORWARDED = frozenset(h.lower() for h in _STRIPPED_REQUEST_HEADERS + _HOP_BY_HOP)
"""Request headers the dev server never sees (lower case).  A websocket's
Upgrade and Connection are the websocket client's to send again."""
# The dev server may not set cookies on Jupyter's origin, nor widen CORS.
_DROPPED_RESPONSE_HEADERS = (
    "Set-Cookie",
    "Access-Control-Allow-Credentials",
    "Access-Control-Allow-Origin",
)
_NOT_COPIED = {
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    GENERATION_HEADER.lower(),
}
_REWRITTEN_TYPES = ("text/html", "javascript", "text/css")
MAX_REWRITTEN = 8 << 20
"""A body to rewrite is held whole up to this size; a larger one streams unchanged."""
HEARTBEAT = "/__reactbox/heartbeat"
ERROR_REPORT = "/__reactbox/error"
"""Where the page's reporter POSTs uncaught errors and failed loads (JSON)."""
PAGE_STORAGE = "/__reactbox/storage"
"""Where the shim POSTs the page's localStorage and cookies, kept for the next load."""
MAX_REPORT_BYTES = 16 * 1024
_REPORT_FIELDS = {"kind": 20, "message": 2000, "source": 500, "stack": 4000}
_REPORT_KINDS = ("error", "rejection", "resource", "overlay")
RESUME_WAIT = 5.0
"""Seconds a page load waits for a resuming preview before it gets the waiting page."""
_DOT_SEGMENT_RE = re.compile(r"(?:^|/)\.\.?(?:/|$)|\\")
_ENCODED_SLASH_RE = re.compile(r"%2f|%5c", re.IGNORECASE)


def unsafe_path(decoded: str, raw: str) -> bool:
    """Dot segments or backslashes in the decoded path, or encoded slashes in the raw
    one: a path that some hop on the way might read as another place."""
    return bool(_DOT_SEGMENT_RE.search(decoded) or _ENCODED_SLASH_RE.search(raw))


class PreviewRequest(Answers):
    """What every preview request does, over HTTP or as a websocket: authorisation
    by the token in the path, use and resume, and what goes upstream.

    Mixed into :class:`PreviewProxyHandler` (HTTP, a plain tornado handler: a
    capability-token request needs none of Jupyter's login, XSRF or page
    machinery) and :class:`PreviewSocketHandler` (websockets, piped by
    jupyter-server-proxy).  :func:`preview_rules` routes a request to one of them.
    """

    request: httputil.HTTPServerRequest
    settings: dict

    def initialize(self, runtime: Runtime | None, frame_ancestors: str = "'self'"):
        # None: a subclass finds the runtime per request (the hub service's).
        self.runtime = runtime
        self.previews = runtime.previews if runtime is not None else None
        self.frame_ancestors = frame_ancestors
        self.preview: PreviewState | None = None
        self._navigation = False
        self._entering = False  # an origin-mode link: see OriginPreview
        self.host_allowlist = self._is_upstream

    @property
    def log(self) -> logging.Logger:
        return self.settings.get("log") or logging.getLogger(__name__)

    def check_host(self) -> bool:
        """Jupyter's own check of the Host header (local names unless remote access
        is allowed), as for any of its pages; a host it allowed is remembered."""
        allowed = self.settings.setdefault("reactbox_allowed_hosts", set())
        if self.request.host in allowed:
            return True
        if not JupyterHandler.check_host(self):  # type: ignore[arg-type]
            return False
        if len(allowed) < 64:
            allowed.add(self.request.host)
        return True

    # -- authorisation -------------------------------------------------------

    async def prepare(self):
        # Deliberately neither ProxyHandler.prepare (it demands the Jupyter login,
        # which an opaque-origin page never sends) nor JupyterHandler.prepare (it
        # would log in a request that carries Jupyter's token and set its cookie on
        # a preview response).  The token in the path is the only credential.
        # KeptAnswers answers a kept module before this runs: a refusal added
        # here must be one it makes too.
        if not self.check_host():
            raise Forbidden("Host not allowed.")
        self.current_user = self._jupyter_current_user = None
        await self.runtime.recovered()
        project_id, token, path = self._credentials()
        self.proxied_path = path
        # ``path`` is decoded (catches %2e%2e); the raw path shows encoded slashes.
        if unsafe_path(path, self.request.path):
            raise BadRequest("Preview paths may not contain '..', '.' or encoded slashes.")
        self.preview = self.previews.authorize(project_id, token)
        self.runtime.requested_at = self.runtime.clock()
        if self.preview is None:
            raise Forbidden(
                "This preview link is not valid: the project does not exist, is not running, "
                "or was restarted. Open the preview again from Jupyter.",
            )
        origin = self.previews.origin(project_id)
        self.project_id = project_id
        if origin and urlsplit(origin).netloc != self.request.host:
            raise Forbidden(f"This preview is served at {origin}, not on this host.")
        if self._entering:
            return self._enter(token)
        if path == ERROR_REPORT and self.request.method == "POST":
            return self._take_error_report()
        if path == PAGE_STORAGE and self.request.method == "POST":
            return await self._take_page_storage()
        if self._sandboxed and _is_preflight(self.request):
            return self._answer_preflight()
        heartbeat = False
        if path == HEARTBEAT or path.startswith(HEARTBEAT + "/"):
            key = path[len(HEARTBEAT) + 1 :]
            if self.request.method != "POST" or not self.previews.is_page_key(project_id, key):
                raise Forbidden("Only a page of this preview, on a person's input, reports use.")
            heartbeat = True
        navigation = self._navigation = self._is_navigation()
        if heartbeat or navigation:
            self._record_use()
        if navigation:
            self.previews.page_loaded(project_id)
        if self.preview.status != "running" or self.preview.endpoint is None:
            await self._not_running(resume=heartbeat or navigation, heartbeat=heartbeat)
            return
        if self.preview.frozen:  # frozen, it answers nothing: any request wakes it
            await self.runtime.thaw(project_id)
        if heartbeat:
            self._finish_heartbeat()

    def _credentials(self) -> tuple[str, str, str]:
        """(project, token, path below the preview's base) of this request."""
        project_id, token, path = (*self.path_args, "", "", "")[:3]
        return project_id, token, path

    def _enter(self, token: str) -> None:
        raise NotFound("No such page here.")

    # -- use, and what a stopped preview answers -----------------------------

    def _is_navigation(self) -> bool:
        return is_navigation(self.request)

    def _record_use(self) -> None:
        """Real use: resets the preview's idle clock and counts as Jupyter activity."""
        self.previews.touch(self.project_id)
        self.settings.setdefault("last_activity_times", {})["jupyter_reactbox"] = utcnow()

    def _take_error_report(self) -> None:
        """Keep what the page says went wrong, for the notebook.  The page is
        untrusted: only known fields, strings, cut to size, are kept."""
        body = self.request.body
        try:
            if len(body) > MAX_REPORT_BYTES:
                raise ValueError("too large")
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            raise BadRequest(f"An error report is a small JSON object ({exc}).") from exc
        report = {
            name: value[:limit]
            for name, limit in _REPORT_FIELDS.items()
            if isinstance(value := data.get(name), str)
        }
        if report.get("kind") not in _REPORT_KINDS or not report.get("message"):
            raise BadRequest(
                f"An error report needs kind ({', '.join(_REPORT_KINDS)}) and message."
            )
        self.previews.report_error(self.project_id, report)
        self._secure_headers()
        self.set_status(204)
        self.finish()

    def _answer_preflight(self) -> None:
        """The sandboxed page's requests to its own preview are cross-origin (its origin
        is opaque): a request with a header of its own (Next's ``x-nextjs-data``) is
        preflighted, which a same-origin page never is.  Allowed here, for this
        preview's path alone, which the page may ask anything of anyway."""
        asked = self.request.headers
        self._headers = httputil.HTTPHeaders()
        self._secure_headers()
        self.set_header("Access-Control-Allow-Methods", asked["Access-Control-Request-Method"])
        if wanted := asked.get("Access-Control-Request-Headers"):
            self.set_header("Access-Control-Allow-Headers", wanted)
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    async def _take_page_storage(self) -> None:
        """Keep what a sandboxed page has in localStorage and cookies for the
        project's next page load.  It is the app's own data, given back only to its
        pages; only strings, at most ``MAX_PAGE_STORAGE`` bytes."""
        store = self.runtime.store
        if len(self.request.body) > store.MAX_PAGE_STORAGE:
            raise TooLarge(
                f"A preview keeps at most {store.MAX_PAGE_STORAGE >> 10} KiB of storage."
            )
        try:
            data = json.loads(self.request.body)
            kept = {
                part: {str(k): str(v) for k, v in data.get(part, {}).items()}
                for part in ("local", "cookies")
            }
        except (ValueError, AttributeError, TypeError) as exc:
            raise BadRequest('Storage is {"local": {...}, "cookies": {...}} of strings.') from exc
        await asyncio.to_thread(store.keep_page_storage, self.project_id, kept)
        self._secure_headers()
        self.set_status(204)
        self.finish()

    def _finish_heartbeat(self) -> None:
        assert self.preview is not None
        self._secure_headers()
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"status": self.preview.status}))

    async def _not_running(self, *, resume: bool, heartbeat: bool = False) -> None:
        """Start a stopped preview for a person (not for the app's own requests), and
        answer with a page that reloads itself until the preview is there."""
        st = self.preview
        assert st is not None
        status, retry = 503, 1
        if resume and st.status == "stopped":
            try:
                project = await asyncio.to_thread(self.runtime.store.get, self.project_id)
                self.runtime.start(project)
            except Busy as exc:  # the line to start is full: the page asks again later
                status, retry = exc.status, exc.retry_after
                st.update(detail=str(exc))
            except ReactBoxError as exc:  # e.g. max_running: say so on the page
                status = exc.status
                st.update(detail=str(exc))
        if heartbeat:
            return self._finish_heartbeat()
        if resume and st.status in ("installing", "starting"):
            # A resume takes about a second: hold the page load that long rather
            # than show the waiting page (which reloads after a second more).
            await self.previews.until_settled(self.project_id, RESUME_WAIT)
            if st.status == "running" and st.endpoint is not None:
                return  # proxied as if it had been running
        waiting = st.status in ("installing", "starting") or st.restart_at is not None or retry > 1
        self.set_status(status)
        self._headers = httputil.HTTPHeaders()
        self._secure_headers()
        self.set_header("Cache-Control", "no-store")
        if waiting:
            self.set_header("Retry-After", str(retry))
        if not self._is_navigation():
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            return self.finish(f"The preview is {st.status}; reload the page to start it.\n")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(_status_page(st.status, st.detail, st.error, refresh=retry if waiting else 0))

    def _is_upstream(self, _handler, host: str) -> bool:
        return (
            self.preview is not None
            and self.preview.endpoint is not None
            and (host == self.preview.endpoint.host)
        )

    def check_origin(self, origin=None):
        """Websockets: the sandboxed page sends ``Origin: null``; other sites are refused."""
        if origin is None:
            origin = self.request.headers.get("Origin")
        if not origin:
            return True
        if origin == "null":
            return not self.previews.origin(self.project_id)
        return urlsplit(origin).netloc == self.request.host

    def disk_root(self):
        return self.runtime.store.root if self.runtime is not None else None

    def write_error(self, status_code, **kwargs):
        self.write_plain_error(status_code, **kwargs)

    def check_xsrf_cookie(self):
        """No ambient credential is used (Cookie is stripped), so there is nothing to forge."""

    # -- the verbs -------------------------------------------------------------

    def _framework(self) -> frameworks.Framework | None:
        assert self.preview is not None
        return frameworks.get(self.preview.framework)

    def _upstream(self):
        assert self.preview is not None and self.preview.endpoint is not None
        return self.preview.endpoint.host, self.preview.endpoint.port

    # -- what goes upstream ----------------------------------------------------

    def get_client_uri(self, protocol, host, port, proxied_path):
        """The raw public path and query as the browser sent them: the dev server
        serves under the path, and reads the query as it is (``?import&url``)."""
        query = ""
        if self.request.query:
            jupyter_token = getattr(self.settings.get("identity_provider"), "token", None)
            # The HMR websocket's own ``token`` (Vite) must pass; Jupyter's never.
            query = without_token(
                self.request.query, keep=lambda value: protocol != "http" and value != jupyter_token
            )
        framework = self._framework()
        if framework and query:
            assert self.preview is not None and self.preview.base is not None
            query = framework.upstream_query(proxied_path, query, self.preview.base)
        moved = framework.upstream_paths.get(proxied_path.lstrip("/")) if framework else None
        if framework and framework.root_without_slash and proxied_path in ("", "/"):
            moved = self.request.path.rstrip("/") or "/"
        uri = f"{protocol}://{host}:{port}{moved or self.request.path}"
        return uri + ("?" + query if query else "")

    def proxy_request_headers(self) -> dict[str, str]:
        """The request's headers without credentials and hop-by-hop ones."""
        headers = {
            name: value
            for name, value in self.request.headers.get_all()
            if name.lower() not in _NOT_FORWARDED
        }
        host, port = self._upstream()
        headers["Host"] = f"{host}:{port}"
        framework = self._framework()
        if framework and framework.cross_site_checked:
            # As if the page were the dev server's own, on localhost (which Next.js
            # allows for dev resources, and where Origin and Host agree for its
            # server actions' check).
            headers["Host"] = f"localhost:{port}"
            for name in ("Sec-Fetch-Site", "Sec-Fetch-Mode", "Sec-Fetch-Dest"):
                headers.pop(name, None)
            if "Origin" in headers:
                headers["Origin"] = f"http://localhost:{port}"
        return headers

    def _secure_headers(self) -> None:
        secure(self._headers, self.frame_ancestors, sandboxed=self._sandboxed)

    @property
    def _sandboxed(self) -> bool:
        return not self.previews.origin(self.project_id)


class PreviewProxyHandler(PreviewRequest, web.RequestHandler):
    """Proxies a preview's HTTP requests to its dev server."""

    def _log(self) -> None:
        """Page loads and failures go to Jupyter's request log; the hundreds of
        module requests of each load do not (its cost was a tenth of theirs)."""
        if self._navigation or self.get_status() >= 400:
            super()._log()

    _cache: ResponseCache | None = None
    _key: tuple[str, str, str] | None = None
    _stored: dict | None = None

    _counted = False

    async def prepare(self):
        await super().prepare()
        if self._finished:
            return
        self._in_flight(True)
        if self._navigation and self._sandboxed:  # what its pages kept, for the shim
            self._stored = await asyncio.to_thread(self.runtime.store.page_storage, self.project_id)
        # A module the dev server said is unchanged: answered here, before any of
        # the work of sending a request on.
        self._cache, self._key = self._cache_key()
        if self._key is not None and (hit := self._cache.get(self._key)) is not None:
            self._replay(hit)

    async def get(self, *args):
        await self.proxy(*self._upstream(), self.proxied_path)

    post = put = patch = delete = head = options = get

    def on_finish(self):
        self._in_flight(False)

    def on_connection_close(self):
        self._in_flight(False)
        super().on_connection_close()

    def _in_flight(self, answering: bool) -> None:
        """Count this request among the previews' answers in flight (the runtime's
        ``in_flight``), once, until it is answered or its client leaves."""
        if answering == self._counted:
            return
        self._counted = answering
        self.runtime.in_flight += 1 if answering else -1
        self.runtime.requested_at = self.runtime.clock()

    # -- HTTP: one pooled client, bodies streamed unless they are rewritten ------

    async def proxy(self, host, port, proxied_path):
        """Forward one HTTP request over a kept-alive upstream connection, or answer
        it from the preview's response cache (see ``response_cache.py``).

        Replaces jupyter-server-proxy's buffered path, which opens a new
        connection per request and holds every body in memory.
        """
        if not self._is_upstream(self, host):
            raise Forbidden(f"Host {host!r} is not this preview's.")
        headers = self.proxy_request_headers()
        body = self.request.body if self.request.method in ("POST", "PUT", "PATCH") else None
        url = self.get_client_uri("http", host, port, proxied_path)
        cache, key = self._cache, self._key
        # A kept-alive connection may be one the dev server closed (it restarted at
        # the same address): a request that cannot have changed anything is sent
        # once more, on a new connection.
        tries = 2 if self.request.method in ("GET", "HEAD", "OPTIONS") else 1
        for tried in range(1, tries + 1):
            try:
                upstream = await self.runtime.http_session().request(
                    self.request.method,
                    yarl.URL(url, encoded=True),  # the path byte for byte (%40 stays %40)
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                )
                break
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                if tried < tries:
                    continue
                raise self._not_answering() from None
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
                raise self._not_answering() from exc
        async with upstream:
            self.set_status(upstream.status, upstream.reason)
            self._headers = httputil.HTTPHeaders()
            copied = [
                (name, value)
                for name, value in upstream.headers.items()
                if name.lower() not in _NOT_COPIED
            ]
            for name, value in copied:
                self.add_header(name, value)
            content_type = upstream.headers.get("Content-Type", "")
            if self._sandboxed and _runs_json(self.request, content_type):
                # A classic script of an opaque origin is cross-origin to the page, and
                # the browser refuses JSON for it (ORB), which a same-origin page runs
                # (Next's _clientMiddlewareManifest.js is JSON): run it as the page would.
                self.set_header("Content-Type", "text/javascript; charset=utf-8")
            self._secure_headers()
            generation = parse_generation(upstream.headers.get(GENERATION_HEADER))
            if cache is not None and generation is not None:
                cache.follow(self.runtime.http_session(), f"http://{host}:{port}")
            if cache is None or not cache.observe(generation) or not _keepable(upstream):
                key = None
            if any(t in content_type for t in _REWRITTEN_TYPES):
                head = await _read_at_most(upstream.content, MAX_REWRITTEN + 1)
                if len(head) <= MAX_REWRITTEN:
                    body = self._rewrite_body(content_type, head)
                    if key is not None and generation is not None:
                        etag = upstream.headers["ETag"]
                        cache.put(key, Cached(_kept(copied), body, etag), generation)
                    self.finish(body)
                    return
                self.write(head)  # too large to hold and rewrite: passed on as it is
            async for chunk in upstream.content.iter_chunked(64 * 1024):
                self.write(chunk)
                # Not self.flush(): jupyter-server-proxy's websocket mixin replaces it
                # on the instance with a wrapper that drops the future to wait on.
                await web.RequestHandler.flush(self)
            self.finish()

    def _cache_key(self) -> tuple[ResponseCache | None, tuple[str, str, str] | None]:
        """(the preview's response cache, this request's key in it), or None for
        either: only a module's GET (not a page load) may be answered from it."""
        st = self.preview
        if st is None or st.token is None or not self.runtime.preview_cache:
            return None, None
        if st.responses is None or st.responses.token != st.token:
            if st.responses is not None:
                st.responses.close()
            st.responses = ResponseCache(st.token, self.runtime.preview_cache)
        if self.request.method != "GET" or self._navigation or "Range" in self.request.headers:
            return st.responses, None
        return st.responses, module_key(self.request)

    def _replay(self, hit: Cached) -> None:
        status, self._headers, body = kept_answer(
            hit, self.request, self.frame_ancestors, sandboxed=self._sandboxed
        )
        self.set_status(status)
        self.finish(body or None)

    def _not_answering(self) -> NotAnswering:
        self.runtime.watcher.poke()  # did it die? the watcher looks now
        return NotAnswering("The dev server is not answering; it may be starting, or it stopped.")

    def _rewrite_body(self, content_type: str, body: bytes) -> bytes:
        if not body:
            return body
        assert self.preview is not None and self.preview.base is not None
        base = self.preview.base
        if "%" in base:
            # Dev servers take the base as a decoded path and encodeURI() it in
            # some URLs (Vite's asset imports), turning '/a%40b/' into
            # '/a%2540b/'; the public base is already encoded, so undo that.
            body = body.replace(base.replace("%", "%25").encode(), base.encode())
        app = boxes.work_tree(self.runtime.store.root / self.project_id)
        public = public_files(app / self.preview.member / "public")
        body = public.rewrite(body, base)
        framework = self._framework()
        if framework and framework.root_paths:
            body = root_paths_rewritten(body, framework.root_paths, base)
        if "text/html" in content_type:
            # A page key only for a page load: a script's fetch of the page gets none.
            key = self.previews.page_key(self.project_id) if self._navigation else ""
            body = inject_scripts(
                body,
                base,
                sandboxed=self._sandboxed,
                beat_ms=self.runtime.watcher.beat_ms,
                key=key,
                stored=self._stored,
            )
            self.set_header("Cache-Control", "no-store")  # nor can it read one from a cache
        return body


class PreviewSocketHandler(PreviewRequest, ProxyHandler):
    """Pipes a preview's websockets (HMR) to its dev server; the page's end of its
    notebook bridge (``__reactbox/bridge``, bridge.py) is held here instead."""

    bridge_end: Socket | None = None

    @property
    def _is_bridge(self) -> bool:
        return getattr(self, "proxied_path", None) == BRIDGE_PATH

    @property
    def max_message_size(self) -> int:
        if self._is_bridge:
            return self.runtime.bridges.limits.max_bytes + MAX_HEADER + 1
        return super().max_message_size

    def _record_activity(self):
        """jupyter-server-proxy calls this for every websocket message.  HMR traffic
        is not use: it must not keep the preview, nor the whole Jupyter server,
        from being culled."""

    async def get(self, *args):
        await ProxyHandler.get(self, *args)  # the upgrade, then open()

    watching: PreviewState | None = None

    def write_message(self, message, binary=False):
        """A message from the dev server to the page: anything but its greeting says
        that something changed, so the modules the proxy keeps are dropped before
        the page hears of it (and refetches)."""
        st = self.watching or self.preview
        if st is not None and st.responses is not None and not _is_greeting(message):
            st.responses.changed()
        return super().write_message(message, binary=binary)

    async def open(self, *args):
        if self._is_bridge:
            return self._open_bridge()
        await self.proxy_open(*self._upstream(), self.proxied_path)
        # An open HMR socket is a page watching the preview (an AI edit waits for
        # what such a page reports after a change).
        self.watching = self.preview
        if self.watching is not None:
            self.watching.pages += 1

    def _open_bridge(self) -> None:
        self.bridge = self.runtime.bridges(self.project_id)
        write = functools.partial(websocket.WebSocketHandler.write_message, self)
        end = Socket(write, self.close)
        if self.bridge.page_opened(end):
            self.bridge_end = end

    def on_message(self, message):
        if self.bridge_end is not None:
            return self.bridge.from_page(self.bridge_end, message)
        if not self._is_bridge:
            return super().on_message(message)

    def on_close(self):
        if self.bridge_end is not None:
            self.bridge_end.closed = True
            self.bridge.page_closed(self.bridge_end)
            self.bridge_end = None
        if self.watching is not None:
            self.previews.page_closed(self.watching)
            self.watching = None
        super().on_close()


def without_token(query: str, *, keep) -> str:
    """``query`` byte for byte, but for its ``token`` parameters whose value ``keep``
    refuses.  Never rebuilt: ``?import&url`` is not ``?import=&url=`` to a dev server
    (Vite's ``?url``, ``?raw``, ``?inline``, ``?worker`` and plugins' ``?react``)."""
    parts = query.split("&")
    kept = []
    for part in parts:
        name, _, value = part.partition("=")
        if unquote_plus(name) == "token" and not keep(unquote_plus(value)):
            continue
        kept.append(part)
    return query if len(kept) == len(parts) else "&".join(kept)


def _is_preflight(request: httputil.HTTPServerRequest) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def _runs_json(request: httputil.HTTPServerRequest, content_type: str) -> bool:
    """A script element's request (no CORS) answered with JSON."""
    dest = request.headers.get("Sec-Fetch-Dest")
    mode = request.headers.get("Sec-Fetch-Mode")
    return dest == "script" and mode == "no-cors" and content_type.startswith("application/json")


def root_paths_rewritten(body: bytes, paths: tuple[str, ...], base: str) -> bytes:
    """References to ``paths`` after a quote or ``url(``, put under ``base``."""
    regex = _root_paths_regex(paths)
    return regex.sub(lambda m: m.group(1) + base.encode() + m.group(2)[1:], body)


@functools.lru_cache(maxsize=16)
def _root_paths_regex(paths: tuple[str, ...]) -> re.Pattern[bytes]:
    names = b"|".join(re.escape(p.encode()) for p in paths)
    return re.compile(rb"([\"'`(])(" + names + rb")")


def is_navigation(request: httputil.HTTPServerRequest) -> bool:
    """A page load (top level or in a frame): a person opened or reloaded it."""
    mode = request.headers.get("Sec-Fetch-Mode")
    if mode is not None:
        return mode == "navigate"
    return request.method == "GET" and "text/html" in request.headers.get("Accept", "")


def secure(headers: httputil.HTTPHeaders, frame_ancestors: str, *, sandboxed: bool) -> None:
    """What every preview response carries, whoever wrote the rest of it."""
    for name in _DROPPED_RESPONSE_HEADERS:
        headers.pop(name, None)
    policy = f"frame-ancestors {frame_ancestors}"
    if sandboxed:
        policy = f"{SANDBOX_POLICY}; {policy}"
        # Module scripts of an opaque origin are CORS requests with Origin: null.
        headers["Access-Control-Allow-Origin"] = "*"
    headers.add("Content-Security-Policy", policy)
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Content-Type-Options"] = "nosniff"


def module_key(request: httputil.HTTPServerRequest) -> tuple[str, str, str]:
    """What a kept answer is found by: the request's raw URI, and what it accepts."""
    headers = request.headers
    return request.uri or "", headers.get("Accept", ""), headers.get("Sec-Fetch-Dest", "")


def kept_answer(
    hit: Cached, request: httputil.HTTPServerRequest, frame_ancestors: str, *, sandboxed: bool
) -> tuple[int, httputil.HTTPHeaders, bytes]:
    """(status, headers, body) of a kept answer: as the dev server gave it, with
    the preview's own headers, and 304 to the dev server's ETag."""
    headers = httputil.HTTPHeaders()
    for name, value in hit.headers:
        headers.add(name, value)
    secure(headers, frame_ancestors, sandboxed=sandboxed)
    asked = request.headers.get("If-None-Match", "")
    if hit.etag in (tag.strip() for tag in asked.split(",")):
        for name in ("Content-Encoding", "Content-Language", "Content-Type"):
            headers.pop(name, None)
        return 304, headers, b""
    headers["Content-Length"] = str(len(hit.body))
    return 200, headers, hit.body


class KeptAnswers(Router):
    """The short way for a module a page asks for again, which the preview's
    response cache holds: answered while its request is read, in one write,
    with the very answer :class:`PreviewProxyHandler` would give
    (:func:`kept_answer`).  No handler, no task, no second turn of the event
    loop: a warm page load of a large app is hundreds of these.

    It answers only what it is sure of; for anything else (a host not yet
    checked, an encoded or odd path, a page load, a preview that is frozen,
    stopped, elsewhere or not kept, a server still recovering) it finds
    nothing, and the request goes on to the handler, which does the whole work.
    """

    def __init__(self, prefix: str, *, runtime: Runtime, frame_ancestors: str, app_settings: dict):
        self.prefix = prefix  # ``{base_url}reactbox/preview/``, as the browser sends it
        self.runtime = runtime
        self.frame_ancestors = frame_ancestors
        self.settings = app_settings  # where the handler keeps the hosts it checked
        self.answered = 0

    def find_handler(self, request: httputil.HTTPServerRequest, **kwargs):
        answer = self._answer(request)
        if answer is None:
            return None
        self.answered += 1
        return _Answer(request.connection, *answer)

    def _answer(self, request: httputil.HTTPServerRequest):
        headers, raw = request.headers, request.path
        if (
            not raw.startswith(self.prefix)
            or request.method != "GET"
            or not self.runtime.is_recovered
            or request.host not in self.settings.get("reactbox_allowed_hosts", ())
            or any(name in headers for name in _NOT_SHORT)
            or is_navigation(request)
        ):
            return None
        below = raw[len(self.prefix) :]
        # Nothing to decode (as the handler's path arguments are), nothing odd.
        if "%" in below or unsafe_path(below, below):
            return None
        project_id, _, rest = below.partition("/")
        token, slash, path = rest.partition("/")
        path = slash + path
        if path.startswith("/__reactbox/"):
            return None
        previews = self.runtime.previews
        st = previews.authorize(project_id, token)
        if (
            st is None
            or st.status != "running"
            or st.endpoint is None
            or st.frozen
            or previews.origin(project_id)
            or not self.runtime.preview_cache
            or st.responses is None
            or st.responses.token != st.token
        ):
            return None
        hit = st.responses.get(module_key(request))
        if hit is None:
            return None
        self.runtime.requested_at = self.runtime.clock()
        return kept_answer(hit, request, self.frame_ancestors, sandboxed=True)


_NOT_SHORT = ("Upgrade", "Range", "Content-Length", "Transfer-Encoding")
"""A request with any of these goes the whole way (a websocket, a part, a body)."""


class _Answer(httputil.HTTPMessageDelegate):
    """Writes a finished answer once the request is read."""

    def __init__(self, connection, status: int, headers: httputil.HTTPHeaders, body: bytes):
        self.connection, self.status, self.headers, self.body = connection, status, headers, body

    def finish(self) -> None:
        start = httputil.ResponseStartLine("", self.status, httputil.responses[self.status])
        self.connection.write_headers(start, self.headers, self.body or None)
        self.connection.finish()


class _PreviewPath(PathMatches):
    """A preview path, for websocket upgrades only or for everything else."""

    def __init__(self, pattern: str, *, websocket: bool):
        super().__init__(pattern)
        self.websocket = websocket

    def match(self, request: httputil.HTTPServerRequest):
        found = super().match(request)
        if found is None:
            return None
        upgrade = [v for v in request.headers.get_list("Upgrade") if v.lower() == "websocket"]
        return found if bool(upgrade) == self.websocket else None


def preview_rules(
    pattern: str,
    options: dict,
    http: type[PreviewProxyHandler] | None = None,
    socket: type[PreviewSocketHandler] | None = None,
) -> list[Rule]:
    """Routes for ``pattern``: websocket upgrades to ``socket``, the rest to ``http``."""
    return [
        Rule(_PreviewPath(pattern, websocket=False), http or PreviewProxyHandler, options),
        Rule(_PreviewPath(pattern, websocket=True), socket or PreviewSocketHandler, options),
    ]


ENTER = "/__reactbox/enter/"
"""An origin-mode link: ``<origin>/__reactbox/enter/<token>`` sets the cookie below."""
TOKEN_COOKIE = "reactbox-preview"


def origin_host_pattern(template: str) -> str:
    """The host names of ``preview_origin_template``, as a regex (tornado matches
    it against the request's host name, without its port), the project a group."""
    host = urlsplit(template).hostname or ""
    if host.count("{project}") != 1:
        raise ValueError(
            f"preview_origin_template must name {{project}} once in its host: {template!r}"
        )
    before, after = (re.escape(part) for part in host.split("{project}"))
    return f"^{before}(?P<project>[a-z0-9](?:[a-z0-9-]{{0,38}}[a-z0-9])?){after}$"


class OriginPreview(PreviewRequest):
    """A preview at ``/`` of its own host (separate-origin mode).

    The project is the host's; the token is the cookie that the link's
    ``/__reactbox/enter/<token>`` set (HttpOnly: the app cannot read it, and the
    dev server never sees it: Cookie is stripped upstream).
    """

    def initialize(self, runtime: Runtime, host_pattern: str, frame_ancestors: str = "'self'"):
        super().initialize(runtime, frame_ancestors)
        self.host_pattern = re.compile(host_pattern)

    def check_host(self) -> bool:
        # Jupyter's check (local names only, unless allow_remote_access) is for
        # Jupyter's own pages; this host serves none.  Its port is checked in
        # prepare, against the template.
        return self.host_pattern.match(self.request.host_name) is not None

    def _credentials(self) -> tuple[str, str, str]:
        match = self.host_pattern.match(self.request.host_name)
        project_id = match.group("project") if match else ""
        path = self.request.path
        if path.startswith(ENTER):
            self._entering = True
            return project_id, path[len(ENTER) :], ""
        return project_id, self.get_cookie(TOKEN_COOKIE) or "", path

    def _enter(self, token: str) -> None:
        """Trade the link's token for this host's cookie, then go to the app."""
        to = self.get_query_argument("to", "/")
        if not to.startswith("/") or to.startswith(("//", "/\\")):
            to = "/"
        secure = self.request.protocol == "https" or _is_localhost(self.request.host_name)
        # In a frame of Jupyter's page the preview is a third party: a cookie
        # partitioned by that page's site (CHIPS) is still sent, and only there.
        attributes = "; SameSite=None; Secure; Partitioned" if secure else "; SameSite=Lax"
        self._headers = httputil.HTTPHeaders()
        self._secure_headers()
        self.set_header("Cache-Control", "no-store")
        self.add_header("Set-Cookie", f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly{attributes}")
        self.redirect(to, status=303)


class OriginPreviewHandler(OriginPreview, PreviewProxyHandler):
    pass


class OriginPreviewSocketHandler(OriginPreview, PreviewSocketHandler):
    pass


def _is_localhost(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")


_VARY_IGNORED = frozenset({"origin", "accept-encoding", "accept"})
"""What an answer may vary on and still be kept: the proxy sets or drops the CORS
headers itself, sends no Accept-Encoding upstream, and keys answers by Accept."""


_GREETINGS = ('{"type":"connected"}', '{"type":"pong"}', '{"type":"ping"}')


def _is_greeting(message: str | bytes) -> bool:
    """Vite's hello and keep-alive messages, which change nothing."""
    if isinstance(message, bytes):
        return False
    return message.replace(" ", "") in _GREETINGS


def _keepable(upstream: aiohttp.ClientResponse) -> bool:
    """A whole answer (200) with an ETag, not a page, that the dev server does not
    forbid keeping."""
    cache_control = upstream.headers.get("Cache-Control", "").lower()
    return (
        upstream.status == 200
        and "text/html" not in upstream.headers.get("Content-Type", "")
        and "ETag" in upstream.headers
        and "no-store" not in cache_control
        and "private" not in cache_control
        and _VARY_IGNORED.issuperset(
            v.strip().lower() for v in upstream.headers.get("Vary", "").split(",") if v.strip()
        )
    )


_NOT_KEPT = frozenset({"date", *(name.lower() for name in _DROPPED_RESPONSE_HEADERS)})


def _kept(headers: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The headers of an answer to keep: not its date, nor what the proxy drops."""
    return tuple((name, value) for name, value in headers if name.lower() not in _NOT_KEPT)


async def _read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to ``limit`` bytes (all of it if it is shorter)."""
    chunks, size = [], 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _status_page(status: str, detail: str | None, error: str | None, *, refresh: int) -> str:
    """What a stopped, starting or failed preview shows instead of the app; it
    reloads itself after ``refresh`` seconds (0: never)."""
    title = {"installing": "Installing…", "starting": "Starting…"}.get(status, f"Preview {status}")
    lines = [html.escape(x) for x in (detail, error) if x]
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        + (f'<meta http-equiv="refresh" content="{refresh}">' if refresh else "")
        + f"<title>{html.escape(title)}</title><style>body{{font:14px system-ui,sans-serif;"
        "color:#444;margin:2em}pre{white-space:pre-wrap;color:#a00}</style></head><body>"
        f"<h3>{html.escape(title)}</h3>"
        + "".join(f"<pre>{line}</pre>" for line in lines)
        + ("" if refresh else "<p>Reload to try again.</p>")
        + "</body></html>"
    )
