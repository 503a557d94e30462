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
* An injected shim (``static/shim.js``) gives the opaque page in-memory
  ``localStorage`` and ``document.cookie`` and inlines external SVG sprites;
  references to files of the app's ``public/`` folder are rewritten to the
  preview base, so absolute paths like ``/icons.svg`` do not escape it.

In separate-origin mode (``c.ReactBoxApp.preview_origin_template``) the
preview has its own origin, so neither the sandbox nor the shim is needed.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server_proxy.handlers import ProxyHandler
from tornado import web

from .frameworks import UPSTREAM_PATHS
from .rewrite import inject_shim, public_files
from .runtime import PreviewState, Runtime

SANDBOX_POLICY = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"
_STRIPPED_REQUEST_HEADERS = ("Cookie", "Authorization", "X-XSRFToken", "Accept-Encoding")
_REWRITTEN_TYPES = ("text/html", "javascript", "text/css")
_DOT_SEGMENT_RE = re.compile(r"(?:^|/)\.\.?(?:/|$)|\\")
_ENCODED_SLASH_RE = re.compile(r"%2f|%5c", re.IGNORECASE)


class PreviewProxyHandler(ProxyHandler):
    """Proxies HTTP and websockets to one project's dev server, by capability token."""

    def initialize(self, runtime: Runtime, frame_ancestors: str = "'self'"):
        self.runtime = runtime
        self.frame_ancestors = frame_ancestors
        self.preview: PreviewState | None = None
        self.host_allowlist = self._is_upstream

        def rewrite(response):  # jupyter-server-proxy passes arguments by parameter name
            self._rewrite(response)

        self.rewrite_response = (rewrite,)

    # -- authorisation -------------------------------------------------------

    async def prepare(self):
        # Deliberately neither ProxyHandler.prepare (it demands the Jupyter login,
        # which an opaque-origin page never sends) nor JupyterHandler.prepare (it
        # would log in a request that carries Jupyter's token and set its cookie on
        # a preview response).  The token in the path is the only credential.
        if not self.check_host():
            raise web.HTTPError(403, "Host not allowed.")
        self.current_user = self._jupyter_current_user = None
        project_id, token, path = (*self.path_args, "", "", "")[:3]
        # ``path`` is decoded (catches %2e%2e); the raw path shows encoded slashes.
        if _DOT_SEGMENT_RE.search(path) or _ENCODED_SLASH_RE.search(self.request.path):
            raise web.HTTPError(400, "Preview paths may not contain '..', '.' or encoded slashes.")
        self.preview = self.runtime.authorize(project_id, token)
        if self.preview is None:
            raise web.HTTPError(
                403,
                "This preview link is not valid: the project does not exist, is not running, "
                "or was restarted. Open the preview again from Jupyter.",
            )
        origin = self.runtime.preview_origin(project_id)
        self.project_id = project_id
        if origin and urlsplit(origin).netloc != self.request.host:
            raise web.HTTPError(403, f"This preview is served at {origin}, not on this host.")

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
            return not self.runtime.preview_origin(self.project_id)
        return urlsplit(origin).netloc == self.request.host

    def write_error(self, status_code, **kwargs):
        """A short plain-text error: no Jupyter page, template or cookie on a preview path."""
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self._headers = type(self._headers)()
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "sandbox; default-src 'none'")
        self.finish(f"{status_code} {self._reason}: {message}\n")

    def check_xsrf_cookie(self):
        """No ambient credential is used (Cookie is stripped), so there is nothing to forge."""

    # -- the verbs -------------------------------------------------------------

    def _upstream(self):
        assert self.preview is not None and self.preview.endpoint is not None
        return self.preview.endpoint.host, self.preview.endpoint.port

    @allow_unauthenticated
    async def get(self, *args):
        return await super().get(*args)

    async def http_get(self, project_id, token, path):
        return await self.proxy(*self._upstream(), path)

    async def open(self, project_id, token, path):
        return await self.proxy_open(*self._upstream(), path)

    @allow_unauthenticated
    async def post(self, project_id, token, path):
        return await self.proxy(*self._upstream(), path)

    @allow_unauthenticated
    async def put(self, project_id, token, path):
        return await self.proxy(*self._upstream(), path)

    @allow_unauthenticated
    async def patch(self, project_id, token, path):
        return await self.proxy(*self._upstream(), path)

    @allow_unauthenticated
    async def delete(self, project_id, token, path):
        return await self.proxy(*self._upstream(), path)

    @allow_unauthenticated
    async def head(self, project_id, token, path):
        return await self.proxy(*self._upstream(), path)

    @allow_unauthenticated
    async def options(self, project_id, token, path):
        return await self.proxy(*self._upstream(), path)

    # -- what goes upstream ----------------------------------------------------

    def get_client_uri(self, protocol, host, port, proxied_path):
        """The raw public path as the browser sent it: the dev server serves under it."""
        jupyter_token = getattr(self.identity_provider, "token", None)
        query = [
            (k, v)
            for k, v in parse_qsl(self.request.query, keep_blank_values=True)
            # The HMR websocket's own ``token`` (Vite) must pass; Jupyter's never does.
            if not (k == "token" and (protocol == "http" or v == jupyter_token))
        ]
        assert self.preview is not None
        moved = UPSTREAM_PATHS.get(self.preview.framework or "", {}).get(proxied_path.lstrip("/"))
        uri = f"{protocol}://{host}:{port}{moved or self.request.path}"
        return uri + ("?" + urlencode(query) if query else "")

    def proxy_request_headers(self):
        headers = super().proxy_request_headers()
        for name in _STRIPPED_REQUEST_HEADERS:
            headers.pop(name, None)
        host, port = self._upstream()
        headers["Host"] = f"{host}:{port}"
        return headers

    # -- what comes back -------------------------------------------------------

    def _rewrite(self, response):
        headers = response.headers
        for name in (
            "Set-Cookie",
            "Access-Control-Allow-Credentials",
            "Access-Control-Allow-Origin",
        ):
            headers.pop(name, None)
        sandboxed = not self.runtime.preview_origin(self.project_id)
        policy = f"frame-ancestors {self.frame_ancestors}"
        if sandboxed:
            policy = f"{SANDBOX_POLICY}; {policy}"
            # Module scripts of an opaque origin are CORS requests with Origin: null.
            headers["Access-Control-Allow-Origin"] = "*"
        headers.add("Content-Security-Policy", policy)
        headers["Referrer-Policy"] = "no-referrer"
        headers["X-Content-Type-Options"] = "nosniff"
        content_type = headers.get("Content-Type", "")
        if response.body and any(t in content_type for t in _REWRITTEN_TYPES):
            assert self.preview is not None and self.preview.base is not None
            base = self.preview.base
            body = response.body
            if "%" in base:
                # Dev servers take the base as a decoded path and encodeURI() it in
                # some URLs (Vite's asset imports), turning '/a%40b/' into
                # '/a%2540b/'; the public base is already encoded, so undo that.
                body = body.replace(base.replace("%", "%25").encode(), base.encode())
            public = public_files(self.runtime.store.root / self.project_id / "app" / "public")
            body = public.rewrite(body, base)
            if sandboxed and "text/html" in content_type:
                body = inject_shim(body)
            response.body = body
