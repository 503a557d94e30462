"""The MCP tools over streamable HTTP, at ``{base_url}reactbox/mcp``.

Served by the Jupyter server (also a hub user's, which relays the API) and by
the JupyterHub service (a user's hub token).  Jupyter's login comes first, as
for every API of the server; then the SDK's own transport answers, stateless
and in JSON: each POST is one JSON-RPC message and its answer, so nothing of a
caller is kept between calls, and any number of the server's processes (or a
restart) serve a client alike.

The tools (``tools.py``) call the REST API on this same server over loopback,
with the credentials the caller came with: what an agent does here, it does as
that caller, through the same checks as the API, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib

from jupyter_server.base.handlers import APIHandler
from mcp.server.mcpserver import Context
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from tornado import web

from ..answers import JsonAnswers
from ..errors import NotAnswering
from ..kernel.client import ReactBoxClient
from .tools import Folders, make_server

PATH = "/reactbox/mcp"
MOST_BODY_BYTES = 40 << 20
"""A POST's body at most: an upload of ``files`` is the largest message (32 MB)."""
CLIENT_KEY = "reactbox.client"
"""Where the ASGI scope of a request holds the caller's client of the API."""
NOT_COPIED = {"content-length", "transfer-encoding", "connection", "date", "server"}


class Transport:
    """The SDK's streamable HTTP transport in this server's event loop (one per
    application), started at its first request and stopped with the server."""

    def __init__(self, folders: Folders):
        server = make_server(_client_of, folders)
        self.manager = StreamableHTTPSessionManager(
            server._lowlevel_server,
            json_response=True,
            stateless=True,
            # Jupyter has checked the Host and the login already.
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            max_request_body_size=MOST_BODY_BYTES,
        )
        self._running: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()

    async def ready(self) -> StreamableHTTPSessionManager:
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._run())
        await self._ready.wait()
        return self.manager

    async def _run(self) -> None:
        async with self.manager.run():
            self._ready.set()
            await self._stop.wait()

    async def close(self) -> None:
        if self._running is not None:
            self._stop.set()
            with contextlib.suppress(Exception):
                await self._running


def _client_of(ctx: Context) -> ReactBoxClient:
    request = ctx.request_context.request
    if request is None or CLIENT_KEY not in request.scope:
        raise NotAnswering("This tool call came without a caller.")
    return request.scope[CLIENT_KEY]


class MCPHandler(JsonAnswers, APIHandler):
    """``{base_url}reactbox/mcp``: Jupyter's login, then the SDK's transport."""

    @web.authenticated
    async def post(self):
        await self._serve()

    @web.authenticated
    async def get(self):
        await self._serve()  # a stateless server opens no stream: the SDK's 405

    @web.authenticated
    async def delete(self):
        await self._serve()

    def _caller(self) -> ReactBoxClient:
        """The API of this server, with the credentials this request came with."""
        url = self.settings.get("reactbox_self_url")
        if not url:
            raise NotAnswering(
                "MCP needs this server on a TCP port (it calls its own API over loopback)."
            )
        client = ReactBoxClient(url)
        headers = client.session.headers
        if auth := self.request.headers.get("Authorization"):
            headers["Authorization"] = auth
        elif token := self.get_query_argument("token", None):
            headers["Authorization"] = f"token {token}"
        elif cookie := self.request.headers.get("Cookie"):
            headers["Cookie"] = cookie
            if xsrf := self.get_cookie("_xsrf"):
                headers["X-XSRFToken"] = xsrf
        return client

    async def _serve(self) -> None:
        transport = self.settings.get("reactbox_mcp")
        if transport is None:
            transport = self.settings["reactbox_mcp"] = Transport(
                self.settings.get("reactbox_mcp_folders") or Folders(refused=NO_FOLDERS)
            )
        manager = await transport.ready()
        request = self.request
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": request.protocol,
            "path": request.path,
            "raw_path": request.path.encode(),
            "query_string": request.query.encode(),
            "root_path": "",
            "headers": [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in request.headers.get_all()
            ],
            "client": (request.remote_ip, 0),
            "server": ("127.0.0.1", 0),
            CLIENT_KEY: (caller := self._caller()),
        }
        sent = False

        async def receive() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            await asyncio.Event().wait()  # the body was all; a stateless answer is one

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                self.set_status(message["status"])
                self.clear_header("Content-Type")
                for name, value in message.get("headers", []):
                    if name.decode("latin-1").lower() not in NOT_COPIED:
                        self.set_header(name.decode("latin-1"), value.decode("latin-1"))
            elif message["type"] == "http.response.body":
                if body := message.get("body"):
                    self.write(body)
                if message.get("more_body"):
                    await self.flush()

        try:
            await manager.handle_request(scope, receive, send)
        finally:
            caller.session.close()  # its loopback connections, now
        if not self._finished:
            self.finish()


NO_FOLDERS = (
    "This server cannot read folders for you: upload the app's files instead "
    "({path: text}), or its ZIP through the notebook."
)


def handlers() -> list[tuple]:
    return [(PATH, MCPHandler)]
