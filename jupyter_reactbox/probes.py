"""Questions the runtime asks of a dev server and of the disk.

Is the dev server up under its base path; does a changed module compile (as
its framework knows how to ask); is the project within its quota; is the disk
where projects live full (what a dev server that died most likely died of).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from tornado import httpclient

from . import frameworks
from .backends.modules import disk_usage
from .errors import QuotaExceeded, SandboxError
from .previews import PreviewState


def root_url(st: PreviewState) -> str:
    """The dev server's own address of the preview's base, seen from this server."""
    assert st.endpoint and st.base
    return f"http://{st.endpoint.host}:{st.endpoint.port}{st.base}"


ASK_EVERY = 0.25
"""Seconds between asking the backend whether a starting dev server has ended."""


async def wait_ready(
    st: PreviewState, *, timeout: float, ended: Callable[[], Awaitable[str | None]]
) -> None:
    """Until the dev server answers under its base path with anything but a 5xx.

    ``ended`` is asked between tries: a reason (the dev server exited, and how)
    ends the wait with a SandboxError that says it.
    """
    url = root_url(st)
    client = httpclient.AsyncHTTPClient()
    deadline = time.monotonic() + timeout
    asked = 0.0
    while (now := time.monotonic()) < deadline:
        try:
            response = await client.fetch(
                url, raise_error=False, connect_timeout=2, request_timeout=30
            )
            if response.code < 500 and response.code != 599:
                return
        except (OSError, httpclient.HTTPClientError):  # 599: no connection (yet)
            pass
        # A refused connection costs next to nothing: tried often, so the preview is
        # running as soon as it answers; the backend is asked less often.
        if now - asked >= ASK_EVERY:
            asked = now
            why = await ended()
            if why is not None:
                raise SandboxError(why)
        await asyncio.sleep(0.01)
    raise SandboxError(
        f"The dev server did not answer within {timeout:g} s; see its logs "
        "(GET .../logs), or raise c.Runtime.start_timeout."
    )


async def compile_errors(st: PreviewState | None, paths: list[str]) -> str | None:
    """Ask a running dev server to compile ``paths``, as its framework knows how;
    its first error, or None (also for a preview that is not running)."""
    framework = frameworks.get(st.framework) if st is not None else None
    if st is None or st.status != "running" or not st.endpoint or framework is None:
        return None
    return await framework.compile_errors(root_url(st), paths)


def disk_full(root: Path) -> bool:
    """Less than 1 MiB left where the projects live: why a dev server died, most likely."""
    return shutil.disk_usage(root).free < 1 << 20


def check_quota(path: Path, *, disk_quota: int, file_quota: int) -> None:
    """QuotaExceeded if the project folder holds more bytes or files than allowed
    (0: no limit).  Counting stops early once over the file quota."""
    if disk_quota <= 0 and file_quota <= 0:
        return
    used = disk_usage(path, max_files=file_quota)
    if disk_quota > 0 and used.bytes > disk_quota:
        raise QuotaExceeded(
            f"The project uses {size(used.bytes)} of disk; its quota is "
            f"{size(disk_quota)}. Remove large files from it, or ask your admin to "
            "raise c.ReactBoxApp.disk_quota."
        )
    if file_quota > 0 and used.files > file_quota:
        raise QuotaExceeded(
            f"The project holds more than {file_quota} files and folders, its quota. "
            "Remove generated files from it, or ask your admin to raise "
            "c.ReactBoxApp.file_quota."
        )


def size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover
