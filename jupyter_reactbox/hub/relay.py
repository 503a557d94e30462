"""A user's server under JupyterHub: the REST API and the previews, relayed to
the jupyter-reactbox service.

The server keeps its paths (``{base_url}reactbox/api/...`` and
``{base_url}reactbox/preview/...``), so the kernel's client, the magics, the
widget and the Lab extension work as on a single-user server.  It holds no
engine and no AI key: each call goes on to the service with this server's own
hub token (``$JUPYTERHUB_API_TOKEN``), which is what the service checks; the
caller's cookies and credentials stay here.

* The API needs Jupyter's login here first, as every other API of the server.
* A preview needs none (an opaque-origin page sends no credentials): its
  capability token is checked by the service, which also answers with the
  preview's own headers (its sandbox and frame policy, not the hub's
  ``frame-ancestors 'none'``).
"""

from __future__ import annotations

import asyncio
import os
from urllib.parse import unquote, urlsplit

import aiohttp
import yarl
from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from jupyter_server_proxy.handlers import ProxyHandler
from tornado import httputil, web

from ..answers import Answers, JsonAnswers
from ..errors import BadRequest, NotAnswering, ServiceRefused
from ..proxy import unsafe_path
from ..runtime import pooled_session

FORWARDED_REQUEST_HEADERS = (
    "Accept",
    "Content-Type",
    "Last-Event-ID",
    "If-None-Match",
    "If-Match",
    "If-Modified-Since",
    # For previews: what tells a page load from the app's own requests.
    "Sec-Fetch-Mode",
    "Sec-Fetch-Dest",
    "Sec-Fetch-Site",
    "Origin",
    "Referer",
    "User-Agent",
)
NOT_COPIED = {"content-length", "transfer-encoding", "connection", "keep-alive", "server", "date"}


class Service:
    """Where the service is, and how this server speaks to it (one pooled client)."""

    def __init__(self, url: str, token: str):
        self.url = url if url.endswith("/") else url + "/"
        parts = urlsplit(self.url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    def check(self) -> None:
        """Before each relayed request: an error of ours if there is nowhere to relay it."""

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = pooled_session(sock_read=None)  # events and logs wait long
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


NOT_ANSWERING = "The jupyter-reactbox service of this JupyterHub is not answering."


async def forward(handler: web.RequestHandler, service: Service, url: str) -> None:
    """One request to the service, its answer streamed back as it comes (server-sent
    events and followed logs included)."""
    headers = {k: v for k in FORWARDED_REQUEST_HEADERS if (v := handler.request.headers.get(k))}
    headers["Authorization"] = f"token {service.token}"
    method = handler.request.method
    body = handler.request.body if method in ("POST", "PUT", "PATCH", "DELETE") else None
    try:
        upstream = await service.session().request(
            method,
            yarl.URL(url, encoded=True),
            headers=headers,
            data=body or None,
            allow_redirects=False,
        )
    except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
        raise NotAnswering(NOT_ANSWERING) from exc
    async with upstream:
        handler.set_status(upstream.status, upstream.reason)
        handler._headers = httputil.HTTPHeaders()  # the service's, not this server's
        for name, value in upstream.headers.items():
            if name.lower() not in NOT_COPIED:
                handler.add_header(name, value)
        async for chunk in upstream.content.iter_any():
            handler.write(chunk)
            await web.RequestHandler.flush(handler)
        handler.finish()


class ApiRelayHandler(JsonAnswers, APIHandler):
    """``{base_url}reactbox/api/<path>``: this server's user, logged in here, goes on
    to the service as this server."""

    def initialize(self, service: Service):
        self.service = service

    async def _relay(self, path: str) -> None:
        self.service.check()
        url = url_path_join(self.service.url, "reactbox/api", path)
        if self.request.query:
            url += "?" + self.request.query
        await forward(self, self.service, url)

    @web.authenticated
    async def get(self, path):
        await self._relay(path)

    @web.authenticated
    async def post(self, path):
        await self._relay(path)

    @web.authenticated
    async def put(self, path):
        await self._relay(path)

    @web.authenticated
    async def delete(self, path):
        await self._relay(path)

    @web.authenticated
    async def patch(self, path):
        await self._relay(path)


class PreviewRelayHandler(Answers, ProxyHandler):
    """``{base_url}reactbox/preview/...``: relayed as it came, path and all (the dev
    server serves under it); HTTP streamed, websockets (HMR) piped."""

    def initialize(self, service: Service):
        self.service = service
        self.host_allowlist = lambda _handler, host: host == self.service.host

    async def prepare(self):
        # No login here: the preview's capability token is checked by the service.
        # But this server's token goes with the request, so it must stay a preview
        # path on every hop: no '..', no encoded slash.
        self.current_user = self._jupyter_current_user = None
        if unsafe_path(unquote(self.request.path), self.request.path):
            raise BadRequest("Preview paths may not contain '..', '.' or encoded slashes.")
        self.service.check()

    def check_xsrf_cookie(self):
        """No credential of this server is used: there is nothing to forge."""

    def check_origin(self, origin=None):
        return True  # the service checks the websocket's Origin against the preview

    def get_client_uri(self, protocol, host, port, proxied_path):
        return f"{protocol}://{self.service.host}:{self.service.port}{self.request.uri}"

    def proxy_request_headers(self):
        headers = httputil.HTTPHeaders()
        for name in (*FORWARDED_REQUEST_HEADERS, "Sec-WebSocket-Protocol"):
            if value := self.request.headers.get(name):
                headers[name] = value
        headers["Authorization"] = f"token {self.service.token}"
        return headers

    def _record_activity(self):
        """Use is the service's to count (a person's page loads and input)."""

    @allow_unauthenticated
    async def get(self, *args):
        return await super().get(*args)

    async def http_get(self, *args):
        await forward(self, self.service, self.service.origin + self.request.uri)

    async def open(self, *args):
        return await self.proxy_open(self.service.host, self.service.port, self.request.path)

    @allow_unauthenticated
    async def post(self, *args):
        await self.http_get()

    @allow_unauthenticated
    async def put(self, *args):
        await self.http_get()

    @allow_unauthenticated
    async def patch(self, *args):
        await self.http_get()

    @allow_unauthenticated
    async def delete(self, *args):
        await self.http_get()

    @allow_unauthenticated
    async def head(self, *args):
        await self.http_get()

    @allow_unauthenticated
    async def options(self, *args):
        await self.http_get()

    def write_error(self, status_code, **kwargs):
        self.write_plain_error(status_code, **kwargs)


class BridgeRelayHandler(JsonAnswers, ProxyHandler):
    """``{base_url}reactbox/api/projects/<id>/bridge``: the kernel's end of its app's
    bridge (a websocket), logged in here as any API call, then piped to the service
    as this server."""

    def initialize(self, service: Service):
        self.service = service
        self.host_allowlist = lambda _handler, host: host == self.service.host

    @web.authenticated
    async def get(self, project_id):
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            raise BadRequest("The bridge is a websocket.")
        self.service.check()
        await self._check_project(project_id)
        await ProxyHandler.get(self, project_id)

    async def _check_project(self, project_id: str) -> None:
        """The service's answer for the project, before the upgrade: the kernel
        hears a 404 as a 404, not as a socket that closes at once."""
        url = url_path_join(self.service.url, "reactbox/api/projects", project_id)
        headers = {"Authorization": f"token {self.service.token}"}
        try:
            async with self.service.session().get(
                yarl.URL(url, encoded=True), headers=headers
            ) as r:
                if r.status != 200:
                    raise ServiceRefused("The service refused the bridge.", r.status)
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            raise NotAnswering(NOT_ANSWERING) from exc

    async def open(self, project_id):
        path = url_path_join(urlsplit(self.service.url).path, "reactbox/api/projects", project_id)
        return await self.proxy_open(self.service.host, self.service.port, path + "/bridge")

    def get_client_uri(self, protocol, host, port, proxied_path):
        return f"{protocol}://{host}:{port}{proxied_path}"

    def proxy_request_headers(self):
        headers = httputil.HTTPHeaders()
        headers["Authorization"] = f"token {self.service.token}"
        return headers

    def _record_activity(self):
        """A kernel's own traffic is not a person's use."""


def connect(service_url: str) -> Service:
    """The service, reached with this server's own hub token."""
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not token:
        raise RuntimeError(
            "c.ReactBoxApp.hub_service_url is set, but this server has no "
            "$JUPYTERHUB_API_TOKEN to call the service with: it is not a JupyterHub "
            "user server."
        )
    return Service(service_url, token)


def handlers(service: Service) -> list[tuple]:
    options = {"service": service}
    return [
        (r"/reactbox/api/projects/([a-z0-9][a-z0-9-]*)/bridge", BridgeRelayHandler, options),
        (r"/reactbox/api/(.*)", ApiRelayHandler, options),
        (r"/reactbox/preview(?:/.*)?", PreviewRelayHandler, options),
    ]
