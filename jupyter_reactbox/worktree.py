"""A project's work tree as data: every host-side read and write of its files.

The work tree (``<project>/app``) is written by code we do not trust: the dev
server, the app's own ``vite.config``, anything they import, while a preview
runs.  So a host-side program may take nothing from it but bytes, and this
module is how the server touches it:

* Paths are walked one component at a time from a descriptor of the app
  folder, each opened with ``O_NOFOLLOW``: a link planted anywhere on the way
  (``src -> /etc``) is refused, never followed, and a component swapped for a
  link after the check cannot redirect the open (there is no check-then-use).
* Only regular files are read (``O_NONBLOCK`` on open, so a FIFO cannot hang
  the server; ``fstat`` after it, so a device or a socket is refused), and at
  most ``limit`` bytes of them (a link to ``/dev/zero`` is not a file, and a
  huge file is an error, not a memory spike).
* Writes go to a fresh temporary sibling (``O_EXCL``) and are renamed over the
  target inside the same directory descriptor, so a reader never sees half a
  file and a planted link at the target is replaced, not written through.
* Walks never follow links and stop after ``max_files`` files.
* Two writes of one file are ``WATCH_GAP`` apart, so that the dev server's
  file watcher reports both.

Nothing here is a framework's or git's business: ``history`` uses it to read
and write the work tree as data, and so do the files API and the AI editor.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import NotAFile, TooManyFiles

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

TEMP_RE = re.compile(r"^\..+\.reactbox-[0-9a-f]{8}$")
"""Our temporary files: written beside their target, then renamed over it."""

MAX_FILES = 20_000
"""Files a walk visits at most (outside the skipped folders)."""


def parts_of(rel: str) -> list[str]:
    """The components of a relative path, refusing anything that could leave the root."""
    parts = PurePosixPath(rel).parts
    if (
        not parts
        or rel.startswith("/")
        or any(p in ("", ".", "..") or "\x00" in p or "\\" in p for p in parts)
    ):
        raise NotAFile(f"{rel!r} is not a path inside the project.")
    return list(parts)


def _refused(rel: str, exc: OSError) -> NotAFile:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.ENXIO):
        return NotAFile(f"{rel} is a link, a folder or a special file, not a regular file.")
    raise exc


@contextlib.contextmanager
def opened_dir(root: Path, parts: list[str], *, create: bool = False) -> Iterator[int]:
    """A descriptor of ``root/parts...``, reached without following any link
    (folders made on the way when ``create``, owned like ``root``)."""
    fd = os.open(root, O_DIR)
    try:
        for part in parts:
            try:
                child = os.open(part, O_DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, O_DIR, dir_fd=fd)
                _own_like(child, fd)
            except OSError as exc:
                raise _refused("/".join(parts), exc) from exc
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _own_like(fd: int, model_fd: int) -> None:
    """Give what a root server creates to the owner of the folder it is in, so the
    sandbox's user (which owns the work tree) can go on changing it."""
    if os.geteuid() != 0:
        return
    model = os.fstat(model_fd)
    mine = os.fstat(fd)
    if (mine.st_uid, mine.st_gid) != (model.st_uid, model.st_gid):
        os.fchown(fd, model.st_uid, model.st_gid)


def read_fd(fd: int, rel: str, limit: int) -> bytes:
    """The bytes of an open file, if it is a regular file of at most ``limit`` bytes."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise NotAFile(f"{rel} is not a regular file.")
    if st.st_size > limit:
        raise NotAFile(f"{rel} has {st.st_size} bytes, over the limit of {limit}.")
    chunks, left = [], limit + 1
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    data = b"".join(chunks)
    if len(data) > limit:  # it grew while we read
        raise NotAFile(f"{rel} is over the limit of {limit} bytes.")
    return data


def read_bytes(root: Path, rel: str, limit: int) -> bytes | None:
    """The content of the regular file ``rel``; None if it does not exist."""
    *dirs, name = parts_of(rel)
    try:
        with opened_dir(root, dirs) as dfd:
            try:
                fd = os.open(name, O_READ, dir_fd=dfd)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return None
                raise _refused(rel, exc) from exc
            try:
                return read_fd(fd, rel, limit)
            finally:
                os.close(fd)
    except FileNotFoundError:
        return None


MAX_MANIFEST = 32 << 20
"""``package.json`` and lockfiles larger than this are refused."""


def read_json(root: Path, rel: str, limit: int = MAX_MANIFEST) -> Any:
    """A JSON file of the project: FileNotFoundError if absent, NotAFile if it is a
    link, a special file or too large, ValueError if it is not JSON."""
    data = read_bytes(root, rel, limit)
    if data is None:
        raise FileNotFoundError(rel)
    return json.loads(data)


def file_stat(root: Path, rel: str) -> os.stat_result | None:
    """``lstat`` of ``rel`` (its folders reached without following links); None if absent."""
    *dirs, name = parts_of(rel)
    try:
        with opened_dir(root, dirs) as dfd:
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except (FileNotFoundError, NotAFile):
        return None


def is_file(root: Path, rel: str) -> bool:
    st = file_stat(root, rel)
    return st is not None and stat.S_ISREG(st.st_mode)


WATCH_GAP = 0.15
"""Seconds between two writes of one file.  Vite's file watcher (chokidar) drops a
change that comes within 50 ms of the last change it reported for the same path, and
the dev server then serves the old module until the file changes again: a hand edit
right after an AI edit's rollback, or data a notebook publishes in a loop, would never
reach the page.  The gap covers the watcher's window and its lag behind the write."""

_written: dict[tuple[str, tuple[str, ...]], float] = {}
_written_lock = threading.Lock()


@contextlib.contextmanager
def _watched_write(root: Path, parts: list[str]) -> Iterator[None]:
    """Wait until ``WATCH_GAP`` has passed since the last write of this file, then
    write it (the block) and note when.  A writer of the same file that comes
    meanwhile waits for this one's write, then the gap."""
    key = (os.fspath(root), tuple(parts))
    while True:
        with _written_lock:
            now = time.monotonic()
            wait = _written.get(key, -WATCH_GAP) + WATCH_GAP - now
            if wait <= 0:
                _written[key] = math.inf  # being written: others wait for the block
                break
        time.sleep(min(wait, WATCH_GAP))
    try:
        yield
    finally:
        with _written_lock:
            now = _written[key] = time.monotonic()
            if len(_written) > 1024:  # only the last WATCH_GAP matters
                for k in [k for k, t in _written.items() if now - t > WATCH_GAP]:
                    del _written[k]


def write_bytes(root: Path, rel: str, data: bytes, *, executable: bool | None = None) -> None:
    """Replace ``rel`` with ``data`` atomically (its folders made if missing).

    The new file keeps the old one's permission bits and owner; ``executable``
    sets the execute bits instead (for a file from the history)."""
    parts = parts_of(rel)
    *dirs, name = parts
    with _watched_write(root, parts), opened_dir(root, dirs, create=True) as dfd:
        replace_in(dfd, name, data, executable=executable)


def replace_in(dfd: int, name: str, data: bytes, *, executable: bool | None = None) -> None:
    """``write_bytes`` within an open folder."""
    try:
        old: os.stat_result | None = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        old = None
    if old is not None and stat.S_ISDIR(old.st_mode):
        raise NotAFile(f"{name} is a folder; a file cannot replace it.")
    mode = stat.S_IMODE(old.st_mode) if old is not None and stat.S_ISREG(old.st_mode) else 0o644
    if executable is not None:
        mode = (mode | 0o111) if executable else (mode & ~0o111)
    tmp = temporary_name(name)
    fd = os.open(tmp, O_NEW, mode, dir_fd=dfd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            if old is not None and os.geteuid() == 0:
                os.fchown(fd, old.st_uid, old.st_gid)
            else:
                _own_like(fd, dfd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise


def remove(root: Path, rel: str) -> bool:
    """Remove the file (or link) ``rel``, and the folders it leaves empty; False if absent."""
    parts = parts_of(rel)
    *dirs, name = parts
    try:
        with _watched_write(root, parts), opened_dir(root, dirs) as dfd:
            os.unlink(name, dir_fd=dfd)
    except (FileNotFoundError, NotAFile):
        return False
    except IsADirectoryError:
        return False
    for depth in range(len(dirs), 0, -1):  # as git does: no empty folders left behind
        try:
            with opened_dir(root, dirs[: depth - 1]) as dfd:
                os.rmdir(dirs[depth - 1], dir_fd=dfd)
        except OSError:
            break
    return True


def temporary_name(name: str) -> str:
    return f".{name}.reactbox-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Entry:
    path: str
    """Relative, with '/'."""
    stat: os.stat_result
    dir_fd: int
    """Valid only while the walk is at this entry."""
    name: str

    def read(self, limit: int) -> bytes:
        """The file's bytes (it is a regular file when the walk saw it; not trusted)."""
        try:
            fd = os.open(self.name, O_READ, dir_fd=self.dir_fd)
        except OSError as exc:
            raise _refused(self.path, exc) from exc
        try:
            return read_fd(fd, self.path, limit)
        finally:
            os.close(fd)


def walk(
    root: Path,
    skip: Callable[[str], bool],
    *,
    max_files: int = MAX_FILES,
) -> Iterator[Entry]:
    """The regular files under ``root``, in a stable order, never following a link.

    ``skip(path)`` is asked for every folder (its relative path); a skipped folder
    is not entered.  More than ``max_files`` files is ``TooManyFiles``."""
    count = 0
    for dirpath, dirnames, filenames, dfd in os.fwalk(root, follow_symlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        dirnames[:] = sorted(d for d in dirnames if not skip(prefix + d))
        for name in sorted(filenames):
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue  # links, FIFOs, sockets, devices: not the app's content
            count += 1
            if count > max_files:
                raise TooManyFiles(
                    f"The project has more than {max_files} files outside node_modules and "
                    "build output; remove generated files from the project."
                )
            yield Entry(prefix + name, st, dfd, name)


def remove_temporaries(root: Path, skip: Callable[[str], bool]) -> None:
    """Remove the temporary files a server that died mid-write left."""
    for dirpath, dirnames, filenames, dfd in os.fwalk(root, follow_symlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        dirnames[:] = [d for d in dirnames if not skip(prefix + d)]
        for name in filenames:
            if TEMP_RE.match(name):
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=dfd)


def blob_id(data: bytes) -> str:
    """The id git gives ``data`` as a blob."""
    return hashlib.sha1(b"blob %d\x00" % len(data) + data, usedforsecurity=False).hexdigest()
