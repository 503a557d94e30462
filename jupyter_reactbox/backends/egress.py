"""An install's only way out: a CONNECT proxy that reaches the package registry alone.

Install containers run on an ``internal`` network, with no route anywhere.  The
server listens on that network's gateway address (the host's side of its bridge,
reachable from that network only) and tunnels ``CONNECT`` requests whose target
is the registry's host and port, and nothing else; every other target is a 403
and no connection is made.  TLS runs end to end through the tunnel, so the
proxy sees host names, never content.  The package managers are pointed at it
by ``npm_config_https_proxy`` and ``HTTPS_PROXY``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 8192
MAX_TUNNELS = 64
TIMEOUT = 15.0
_CONNECT_RE = re.compile(rb"^CONNECT ([A-Za-z0-9.-]+):(\d{1,5}) HTTP/1\.[01]\r\n")


def registry_target(url: str) -> tuple[str, int]:
    """(host, port) of an https registry URL; ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"not an https registry: {url!r}")
    return parts.hostname.lower(), parts.port or 443


class RegistryProxy:
    def __init__(self, allowed: tuple[str, int], log: logging.Logger | None = None):
        self.allowed = allowed
        self.log = log or logging.getLogger(__name__)
        self._server: asyncio.AbstractServer | None = None
        self._tunnels: set[asyncio.Task] = set()
        self.address: tuple[str, int] | None = None
        self.refused: list[str] = []
        """Targets refused since start (the last 100), for the install log and tests."""

    async def start(self, host: str) -> tuple[str, int]:
        """Listen on ``host`` (a free port); the address to point clients at."""
        self._server = await asyncio.start_server(self._serve, host, 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = (host, port)
        self.log.info("Registry proxy for installs on %s:%d -> %s:%d", host, port, *self.allowed)
        return self.address

    @property
    def url(self) -> str:
        assert self.address is not None
        return f"http://{self.address[0]}:{self.address[1]}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tunnels):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tunnels.add(task)
        try:
            await self._tunnel(reader, writer)
        except (
            OSError,
            asyncio.TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            self._tunnels.discard(task)
            writer.close()

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        match = _CONNECT_RE.match(head) if len(head) <= MAX_HEADER_BYTES else None
        target = (match.group(1).decode().lower(), int(match.group(2))) if match else None
        if target != self.allowed or len(self._tunnels) > MAX_TUNNELS:
            what = f"{target[0]}:{target[1]}" if target else head.split(b"\r\n", 1)[0][:200]
            self.refused = [*self.refused[-99:], str(what)]
            self.log.warning("Install egress refused: %s", what)
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*target), TIMEOUT)
        try:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(65536):
            dst.write(chunk)
            await dst.drain()
    finally:
        with contextlib.suppress(OSError):
            dst.write_eof()
