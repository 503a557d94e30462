"""The lifecycle of each project's preview: install -> start -> running.

One ``asyncio.Lock`` per project serialises start and stop, so concurrent
requests never start two dev servers.  Every start mints a fresh capability
token; the preview path carries it and the proxy checks it, so a stopped or
restarted preview invalidates every link to the old one.  A failed start
clears what it made before recording the error.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field

import aiohttp
from jupyter_server.utils import url_path_join
from tornado import httpclient

from .errors import ReactBoxError, SandboxError
from .sandbox.base import Endpoint, Sandbox
from .store import Project, ProjectStore

COMPILED_SUFFIXES = (
    ".js",
    ".jsx",
    ".mjs",
    ".ts",
    ".tsx",
    ".mts",
    ".css",
    ".scss",
    ".vue",
    ".svelte",
)


@dataclass
class PreviewState:
    status: str = "stopped"
    """installing | starting | running | stopped | failed"""
    error: str | None = None
    framework: str | None = None
    token: str | None = None
    base: str | None = None
    endpoint: Endpoint | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task | None = None


class Runtime:
    def __init__(
        self,
        store: ProjectStore,
        sandbox: Sandbox,
        *,
        base_url: str,
        start_timeout: float = 180,
        preview_origin_template: str = "",
        log: logging.Logger | None = None,
    ):
        self.store = store
        self.sandbox = sandbox
        self.base_url = base_url
        self.start_timeout = start_timeout
        self.preview_origin_template = preview_origin_template
        self.log = log or logging.getLogger(__name__)
        self._states: dict[str, PreviewState] = {}
        self._session: aiohttp.ClientSession | None = None

    def http_session(self) -> aiohttp.ClientSession:
        """The pooled client of the preview proxy: upstream connections are kept alive."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=64, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=300),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    def state(self, project_id: str) -> PreviewState:
        return self._states.setdefault(project_id, PreviewState())

    def preview_base(self, project_id: str, token: str) -> str:
        """The public path the dev server serves under (ends with '/')."""
        return url_path_join(self.base_url, "reactbox", "preview", project_id, token) + "/"

    def preview_origin(self, project_id: str) -> str | None:
        """The origin of a project's preview in separate-origin mode, else None."""
        if not self.preview_origin_template:
            return None
        return self.preview_origin_template.format(project=project_id)

    def preview_url(self, project_id: str) -> str | None:
        st = self.state(project_id)
        if not st.base or st.status not in ("starting", "running"):
            return None
        return (self.preview_origin(project_id) or "") + st.base

    def info(self, project: Project) -> dict:
        st = self.state(project.id)
        return {
            **project.to_json(),
            "status": st.status,
            "error": st.error,
            "preview_url": self.preview_url(project.id),
        }

    def authorize(self, project_id: str, token: str) -> PreviewState | None:
        """The running preview that ``token`` opens, or None."""
        st = self._states.get(project_id)
        if st is None or st.token is None or st.endpoint is None:
            return None
        if not hmac.compare_digest(st.token.encode(), token.encode()):
            return None
        return st

    # -- lifecycle -----------------------------------------------------------

    async def recover(self) -> None:
        """Adopt the dev servers that are still running from before a restart."""
        known = {p.id for p in self.store.list()}
        for found in await self.sandbox.find_running():
            if found.project_id not in known:
                self.log.warning("Removing orphan preview container of %s", found.project_id)
                await self.sandbox.remove(found.project_id)
                continue
            st = self.state(found.project_id)
            st.status, st.token, st.base = "running", found.token, found.base
            st.framework = found.framework
            st.endpoint, st.error = found.endpoint, None
            self.log.info("Re-attached the running preview of %s", found.project_id)

    def start(self, project: Project) -> PreviewState:
        """Start the preview in the background unless it is running or starting."""
        st = self.state(project.id)
        if st.task is None or st.task.done():
            if st.status != "running":
                st.status, st.error = "installing", None
                st.task = asyncio.create_task(self._start(project, st))
        return st

    async def _start(self, project: Project, st: PreviewState) -> None:
        async with st.lock:
            try:
                plan = project.plan()
                st.framework = plan.framework
                st.status = "installing"
                await self.sandbox.install(project.id, project.app_dir, plan, project.install_log)
                st.status = "starting"
                st.token = secrets.token_urlsafe(24)
                st.base = self.preview_base(project.id, st.token)
                st.endpoint = await self.sandbox.run(
                    project.id, project.app_dir, plan, base=st.base, token=st.token
                )
                await self._wait_ready(project.id, st)
                st.status = "running"
                self.log.info("Preview of %s is running", project.id)
            except asyncio.CancelledError:
                await self._clear(project.id, st, "stopped")
                raise
            except ReactBoxError as exc:
                self.log.warning("Preview of %s failed: %s", project.id, exc)
                await self._clear(project.id, st, "failed", str(exc))
            except Exception as exc:
                self.log.exception("Preview of %s failed", project.id)
                await self._clear(project.id, st, "failed", f"Internal error: {exc!r}")

    async def _clear(self, project_id: str, st: PreviewState, status: str, error=None) -> None:
        st.token = st.endpoint = st.base = None
        st.status, st.error = status, error
        try:
            await self.sandbox.stop(project_id)
        except Exception:
            self.log.exception("Could not remove the dev server of %s", project_id)

    async def _wait_ready(self, project_id: str, st: PreviewState) -> None:
        """Until the dev server answers under its base path (or dies, or times out)."""
        assert st.endpoint and st.base
        url = f"http://{st.endpoint.host}:{st.endpoint.port}{st.base}"
        client = httpclient.AsyncHTTPClient()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            try:
                response = await client.fetch(
                    url, raise_error=False, connect_timeout=2, request_timeout=30
                )
                if response.code < 500 and response.code != 599:
                    return
            except OSError:
                pass
            if not await self.sandbox.is_running(project_id):
                tail = (await self.sandbox.logs(project_id, tail=20)).strip()
                raise SandboxError(f"The dev server exited during start. Last output:\n{tail}")
            await asyncio.sleep(0.2)
        raise SandboxError(
            f"The dev server did not answer within {self.start_timeout:g} s; see its logs "
            "(GET .../logs), or raise c.ReactBoxApp.start_timeout."
        )

    async def compile_errors(self, project_id: str, paths: list[str]) -> str | None:
        """Ask the running dev server to compile ``paths``; its first error, or None.

        Vite compiles a module when it is requested; a query it has not seen
        makes it compile the file as it is on disk now, not from its cache.
        Other dev servers (and stopped previews) are not asked.
        """
        st = self._states.get(project_id)
        if st is None or st.status != "running" or st.framework != "vite" or not st.endpoint:
            return None
        client = httpclient.AsyncHTTPClient()
        nonce = secrets.token_hex(4)
        for path in paths:
            if not path.endswith(COMPILED_SUFFIXES):
                continue
            url = f"http://{st.endpoint.host}:{st.endpoint.port}{st.base}{path}?reactbox-check={nonce}"
            response = await client.fetch(url, raise_error=False, request_timeout=60)
            if response.code >= 400:
                text = (response.body or b"").decode("utf-8", "replace").strip()
                return f"{path}: {text[:2000] or f'HTTP {response.code}'}"
        return None

    async def stop(self, project_id: str) -> None:
        st = self.state(project_id)
        if st.task and not st.task.done():
            st.task.cancel()
        async with st.lock:
            await self._clear(project_id, st, "stopped")

    async def delete(self, project_id: str) -> None:
        await self.stop(project_id)
        await self.sandbox.remove(project_id)
        await asyncio.to_thread(self.store.delete, project_id)
        self._states.pop(project_id, None)

    async def close(self) -> None:
        for st in self._states.values():
            if st.task and not st.task.done():
                st.task.cancel()
        if self._session is not None:
            await self._session.close()
