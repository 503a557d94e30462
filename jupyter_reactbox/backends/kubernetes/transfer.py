"""Files between the service and a pod: what a sync sends, and what an install
sends back (checked before any of it is written here)."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tarfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ...errors import SandboxError

SKIP = {"node_modules"}
"""Top-level folders of the project that a sync leaves alone (sent whole at launch)."""


def manifest(app_dir: Path) -> dict[str, tuple[int, int, int]]:
    """Every file and link of the project but ``node_modules``: path -> (mode, size,
    mtime in ns), from lstat (links are not followed)."""
    out: dict[str, tuple[int, int, int]] = {}
    for root, dirs, files in os.walk(app_dir):
        rel = Path(root).relative_to(app_dir)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in SKIP]
        for name in [*files, *(d for d in dirs if os.path.islink(os.path.join(root, d)))]:
            st = os.lstat(os.path.join(root, name))
            out[(rel / name).as_posix()] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def top_level(app_dir: Path) -> list[str]:
    """What the project folder holds at its top, ``node_modules`` included."""
    return sorted(os.listdir(app_dir))


def pack(app_dir: Path, paths: list[str], out: io.BufferedIOBase, *, uid: int) -> None:
    """A tar of ``paths`` (relative to ``app_dir``; folders recursively), owned by
    ``uid``: regular files, folders and links only."""

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if not (info.isfile() or info.isdir() or info.issym()):
            return None
        info.uid = info.gid = uid
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path in paths:
            tar.add(app_dir / path, arcname=path, recursive=True, filter=owned)


def unpack_modules(archive: BinaryIO, staging: Path, members: tuple[str, ...] = ()) -> None:
    """Unpack an install pod's ``node_modules`` into ``staging``: what npm could have
    written there itself, and nothing else.  Every member is under ``node_modules``
    (or a workspace member's, of ``members``) with no ``..``, a folder, a regular
    file or a link (no devices, no hard links), never written through a link or
    over anything the archive made before, with no set-uid, set-gid or sticky
    bits, owned by this process."""
    uid, gid = os.getuid(), os.getgid()
    tops = {("node_modules",), *(tuple(PurePosixPath(m, "node_modules").parts) for m in members)}
    with tarfile.open(fileobj=archive, mode="r|") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if (
                not parts
                or not any(parts[: len(top)] == top for top in tops)
                or member.name.startswith("/")
                or any(p in (".", "..") for p in parts)
                or not (member.isfile() or member.isdir() or member.issym())
            ):
                raise SandboxError(f"The install's node_modules has {member.name!r}: refused.")
            where = staging
            for part in parts[:-1]:
                where = where / part
                with contextlib.suppress(FileNotFoundError):
                    if not stat.S_ISDIR(os.lstat(where).st_mode):
                        raise SandboxError(f"{member.name!r} would be written through a link.")
            target = staging.joinpath(*parts)
            with contextlib.suppress(FileNotFoundError):
                there = os.lstat(target).st_mode
                if not (member.isdir() and stat.S_ISDIR(there)):
                    raise SandboxError(f"{member.name!r} is in the install's archive twice.")
            member.mode &= 0o777
            member.uid, member.gid, member.uname, member.gname = uid, gid, "", ""
            checked = {"filter": "fully_trusted"} if hasattr(tarfile, "data_filter") else {}
            tar.extract(member, staging, set_attrs=not member.issym(), **checked)
