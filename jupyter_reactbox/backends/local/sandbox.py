"""How the local backend runs a command: in a bubblewrap sandbox (or, where there
is none, plainly), in a process group of its own with memory and process
limits, dying with this server, with a clean environment; and how it ends
one, and what relays the preview proxy's connections into a sandbox that has
no network.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import resource
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ... import managers

STOP_TIMEOUT = 5.0
TMP_SIZE = 256 << 20
"""Bytes of a sandbox's private /tmp (in memory), as a Docker container's (``tmp_size``)."""
"""Seconds a process group has after SIGTERM before SIGKILL."""
_ETC = ("ssl", "ca-certificates", "resolv.conf", "hosts", "nsswitch.conf", "passwd", "group")
_PR_SET_PDEATHSIG = 1


@functools.cache
def bubblewrap_problem(command: str = "bwrap") -> str | None:
    """None if bubblewrap (``command``) can make a sandbox here; else why not."""
    bwrap = shutil.which(command)
    if bwrap is None:
        return (
            f"bubblewrap ({command}) is not installed (Debian, Ubuntu: apt-get install bubblewrap)"
        )
    probe = [bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib64"):
        probe += ["--ro-bind-try", f"/{name}", f"/{name}"]
    try:
        result = subprocess.run([*probe, "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap does not run: {exc}"
    if result.returncode != 0:
        why = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"bubblewrap cannot make a sandbox here ({why}); user namespaces are off or blocked"
    return None


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(entry.path).st_uid == uid:
                    count += 1
    return count


def _limit_child(memory: int, processes: int | None) -> Callable[[], None]:
    """What the child runs before exec: the limits, and death with this server."""
    libc = ctypes.CDLL(None, use_errno=True)

    def apply() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if memory > 0:
            resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
        if processes is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))

    return apply


@dataclass(frozen=True)
class Processes:
    """The commands of one local backend, with its Node, npm and limits."""

    node: Path
    npm_cli: Path
    node_root: Path
    bwrap: str
    memory: int
    """RLIMIT_DATA of each process (0: none)."""
    pids_limit: int
    """Processes beyond this user's that a sandbox may have (0: no limit)."""

    def sandbox(self, *, network: bool, binds: list[tuple[str, str, str]], chdir: str) -> list:
        """bubblewrap's argv around a command: a root of read-only system folders,
        Node, and ``binds`` ((mode, host path, path inside))."""
        argv = [shutil.which(self.bwrap) or self.bwrap, "--die-with-parent", "--new-session"]
        argv += ["--unshare-all", "--cap-drop", "ALL"]
        if network:
            argv.append("--share-net")
        argv += ["--ro-bind", "/usr", "/usr"]
        for name in ("bin", "sbin", "lib", "lib32", "lib64"):
            argv += ["--ro-bind-try", f"/{name}", f"/{name}"]
        for name in _ETC:
            argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        # The private /tmp first: bubblewrap mounts in order, so Node bound after it
        # is seen even where it lives under /tmp (a throw-away virtual environment's).
        argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(TMP_SIZE), "--tmpfs", "/tmp"]
        node_root = str(self.node_root)
        if not node_root.startswith("/usr/"):
            argv += ["--ro-bind", node_root, node_root]
        npm_root = str(self.npm_cli.parent.parent)
        if not npm_root.startswith(("/usr/", node_root + "/")):
            argv += ["--ro-bind", npm_root, npm_root]
        for mode, host, inside in binds:
            argv += ["--bind" if mode == "rw" else "--ro-bind", host, inside]
        # The root bubblewrap makes is a tmpfs: read-only, so nothing is written
        # (into memory, without bound) outside the binds and the sized /tmp.
        argv += ["--remount-ro", "/", "--chdir", chdir]
        return argv

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        """A clean environment: nothing of this server's (its tokens, keys)."""
        path = f"{self.node.parent}:/usr/local/bin:/usr/bin:/bin"
        return {"PATH": path, "LANG": "C.UTF-8", "HOME": "/tmp", **extra}

    def command(self, argv: list[str], *, pm: str) -> list[str]:
        """``argv`` with Node and npm by path, and the shipped managers at ``pm``."""
        out = []
        for i, arg in enumerate(argv):
            if i == 0 and arg == "node":
                out.append(str(self.node))
            elif i == 0 and arg == "npm":
                out += [str(self.node), str(self.npm_cli)]
            elif arg.startswith(managers.PM_DIR + "/"):
                out.append(pm + arg[len(managers.PM_DIR) :])
            else:
                out.append(arg)
        return out

    async def spawn(
        self,
        command: list[str],
        env: dict[str, str],
        cwd: Path,
        sandbox: list[str] | None,
        listener: socket.socket | None = None,
    ):
        """``command`` in a process group of its own (in the ``sandbox`` that these
        bubblewrap options make, if any), with the limits, dying with this server;
        its environment is only ``env``."""
        processes = None
        argv = command
        if sandbox is not None:
            if os.geteuid() != 0 and self.pids_limit > 0:
                processes = await asyncio.to_thread(_processes_of, os.geteuid())
                processes += self.pids_limit
            setenv = [a for name, value in env.items() for a in ("--setenv", name, value)]
            argv = [*sandbox, "--clearenv", *setenv, *command]
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=str(cwd),
            env=env,
            start_new_session=True,
            preexec_fn=_limit_child(self.memory, processes),
            pass_fds=(listener.fileno(),) if listener is not None else (),
        )

    async def end(self, process: asyncio.subprocess.Process) -> None:
        """Its whole group, politely first."""
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


def _listen(path: Path) -> socket.socket:
    """A listening Unix socket at ``path`` (a folder of this server's only)."""
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen(128)
    except BaseException:
        listener.close()
        raise
    return listener


async def _relay(path: Path, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    """One connection of the preview proxy, passed to the sandbox's socket."""
    try:
        upstream_reader, upstream_writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        writer.close()
        return

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(64 * 1024):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.close()

    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


def _signal_tree(pid: int, signum: int) -> None:
    """``signum`` to ``pid`` and every descendant, parents first (so a stopped
    parent forks no more), twice for the children forked meanwhile.  The
    sandbox's processes are in a session of their own (bubblewrap's
    ``--new-session``): a process group does not reach them."""
    for _ in range(2):
        for member in process_tree(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member, signum)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, parents first, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    order = [pid]
    for member in order:  # grows as it goes: breadth first
        order += children.get(member, [])
    return order
