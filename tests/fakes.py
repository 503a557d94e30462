"""A backend that runs nothing: each "dev server" is a real little HTTP server on
127.0.0.1 that answers 200, so the runtime's state machine (starts, readiness,
idle culling, crashes and backoff, max_running, recovery) is tested with no
engine, no Node and no install, in milliseconds; and a Jupyter server's API and
proxy are tested through it with no engine (the first tier: see the README).  The
real backends have their own tests (test_lifecycle.py, test_local.py)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from jupyter_reactbox.backends.base import Backend, Endpoint, Exit, Isolation, Record
from jupyter_reactbox.frameworks import AppPlan


class Clock:
    """An injected monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeServer:
    server: asyncio.Server
    framework: str
    token: str
    base: str
    exit_code: int | None = None

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.server.sockets[0].getsockname()[1])


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A page that says what reached the dev server: its request line and headers
    (``<script id="seen">``, JSON), for tests of what the proxy passes on."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    line, *fields = head.split("\r\n")
    seen = {
        "request": line,
        "headers": dict(f.split(": ", 1) for f in fields if ": " in f),
    }
    body = (
        "<!doctype html><title>fake dev server</title><h1>ok</h1>"
        f'<script id="seen" type="application/json">{json.dumps(seen)}</script>'
    ).encode()
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    writer.close()


def seen(page: bytes) -> dict:
    """What the fake dev server says reached it, from the page it answered."""
    start = page.index(b'<script id="seen" type="application/json">')
    return json.loads(page[page.index(b">", start) + 1 : page.index(b"</script>", start)])


class FakeBackend(Backend):
    name = "fake"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.servers: dict[str, FakeServer] = {}
        self.kept: dict[str, tuple[str, str, str]] = {}
        """What a stopped preview keeps: (framework, token, base)."""
        self.calls: list[tuple[str, str]] = []

    def isolation(self) -> Isolation:
        return Isolation(self.name, True, "nothing runs")

    async def install(
        self, project_id, app_dir, plan, log, progress=None, *, pins=None, gate=None
    ) -> str:
        self.calls.append(("install", project_id))
        return "installed"

    async def launch(self, project_id, app_dir: Path, plan: AppPlan, *, base, token) -> Endpoint:
        self.calls.append(("launch", project_id))
        await self.stop(project_id)
        server = await asyncio.start_server(_answer, "127.0.0.1", 0)
        self.servers[project_id] = FakeServer(server, plan.framework, token, base)
        self.kept[project_id] = (plan.framework, token, base)
        return self.servers[project_id].endpoint

    async def resume(self, project_id, app_dir, plan) -> Record | None:
        if project_id not in self.kept:
            return None
        framework, token, base = self.kept[project_id]
        endpoint = await self.launch(project_id, app_dir, plan, base=base, token=token)
        return Record(project_id, framework, token, base, endpoint)

    def crash(self, project_id: str, code: int = 1) -> None:
        """The dev server dies by itself."""
        fake = self.servers[project_id]
        fake.server.close()
        fake.exit_code = code

    async def poll(self, project_id) -> Exit | None:
        fake = self.servers.get(project_id)
        if fake is None:
            return Exit(None, why="it is not running")
        return None if fake.exit_code is None else Exit(fake.exit_code)

    async def running(self) -> set[str]:
        return {p for p, s in self.servers.items() if s.exit_code is None}

    async def freeze(self, project_id) -> bool:
        if project_id not in self.servers:
            return False
        self.calls.append(("freeze", project_id))
        return True

    async def thaw(self, project_id) -> None:
        self.calls.append(("thaw", project_id))

    async def stop(self, project_id) -> None:
        fake = self.servers.pop(project_id, None)
        if fake is not None:
            self.calls.append(("stop", project_id))
            fake.server.close()

    async def discard(self, project_id) -> None:
        await self.stop(project_id)
        self.kept.pop(project_id, None)

    async def remove(self, project_id) -> None:
        await self.discard(project_id)

    async def recover(self, known: set[str]) -> list[Record]:
        for project_id in set(self.kept) - known:
            await self.discard(project_id)
        return [
            Record(
                project_id,
                framework,
                token,
                base,
                self.servers[project_id].endpoint if project_id in self.servers else None,
            )
            for project_id, (framework, token, base) in self.kept.items()
        ]

    async def logs(self, project_id, *, tail=500) -> str:
        fake = self.servers.get(project_id)
        return f"fake dev server exited with {fake.exit_code}\n" if fake else ""

    async def close(self) -> None:
        for project_id in list(self.servers):
            await self.stop(project_id)
