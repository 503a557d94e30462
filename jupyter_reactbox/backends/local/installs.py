"""How the local backend installs: the package manager in the bubblewrap sandbox
(with the network, and the same narrow view of the filesystem), or plainly
where there is none; yarn and pnpm as the Docker image ships them, packed from
the registry once by the server (never a download by corepack at install time).
The shared install steps (``install.py``) call ``run_once`` and ``route``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ... import managers
from ..install import InstallRun, Progress, install_env, report_progress, system_ca_bundle

if TYPE_CHECKING:
    from .backend import LocalBackend


class Installs:
    """The installs of one local backend."""

    def __init__(self, backend: LocalBackend):
        self.b = backend
        self._default: str | None = None
        self._lock = asyncio.Lock()

    async def route(self) -> tuple[str | None, str]:
        if self.b.registry:
            return None, self.b.registry
        if self._default is None:
            out = await asyncio.to_thread(
                subprocess.run,
                [str(self.b.node_path), str(self.b.npm_cli), "config", "get", "registry"],
                capture_output=True,
                text=True,
                env=self.b.processes.env({}),
                timeout=60,
            )
            self._default = out.stdout.strip()
        return None, self._default

    async def _ensure_managers(self, argv: list[str]) -> None:
        """yarn and pnpm as the Docker image ships them, packed from the registry
        once (never a download by corepack at install time)."""
        if not any(a.startswith(managers.PM_DIR + "/") for a in argv):
            return
        async with self._lock:
            await asyncio.to_thread(self._fetch_managers)

    def _fetch_managers(self) -> None:
        shipped = json.dumps(managers.SHIPPED, sort_keys=True)
        with contextlib.suppress(OSError):
            if (self.b.pm_dir / ".complete").read_text() == shipped:
                return  # these very releases, fetched before
        from ...image import fetch_managers

        self.b.pm_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".pm-", dir=self.b.pm_dir.parent))
        try:
            npm = [str(self.b.node_path), str(self.b.npm_cli)]
            fetch_managers(staging, self.b.log.info, npm)
            (staging / ".complete").write_text(shipped)
            shutil.rmtree(self.b.pm_dir, ignore_errors=True)
            staging.rename(self.b.pm_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    async def run_once(self, run: InstallRun, progress: Progress | None) -> tuple[int | None, str]:
        await self._ensure_managers(run.argv)
        sandbox = None
        if self.b.sandboxed:
            env = install_env(cache="/cache", registry=run.registry, settings=run.env)
            binds = [("rw", str(run.staging), "/project"), ("rw", str(run.cache), "/cache")]
            if self.b.pm_dir.is_dir():
                binds.append(("ro", str(self.b.pm_dir), managers.PM_DIR))
            sandbox = self.b.processes.sandbox(network=True, binds=binds, chdir="/project")
            command = self.b.processes.command(run.argv, pm=managers.PM_DIR)
        else:
            env = install_env(
                cache=str(run.cache), registry=run.registry, settings=run.env, work=str(run.staging)
            )
            command = self.b.processes.command(run.argv, pm=str(self.b.pm_dir))
        ca = system_ca_bundle()
        if ca:
            env["NODE_EXTRA_CA_CERTS"] = ca
        process = await self.b.processes.spawn(
            command, self.b.processes.env(env), run.staging, sandbox
        )
        self.b.log.info("Installing %s with %s (pid %d)", run.project_id, run.argv[:2], process.pid)
        output = asyncio.ensure_future(process.stdout.read())
        waiting = asyncio.ensure_future(process.wait())
        try:
            if progress is not None:
                await report_progress(run.staging, waiting, progress)
            try:
                code: int | None = await asyncio.wait_for(
                    asyncio.shield(waiting), self.b.install_timeout
                )
            except asyncio.TimeoutError:
                code = None
        finally:
            await asyncio.shield(self.b.processes.end(process))  # also when cancelled
        text = (await output).decode("utf-8", "replace")
        return code, text
