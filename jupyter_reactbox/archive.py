"""Safe extraction of an uploaded ZIP into a fresh folder.

Every entry is checked before a byte of it is written: no absolute paths, no
``..``, no links, devices or duplicate names, no encrypted entries.  Limits on
the number of entries, the total size and the compression ratio are enforced
on the bytes actually inflated, not on what the headers claim.  A single
wrapping top-level folder (a GitHub "Download ZIP") is stripped, and
``node_modules/`` and ``.git/`` are dropped wherever they appear: dependencies
are always reinstalled, and a foreign ``.git`` could make our own git run
commands.

The app is the folder whose ``package.json`` can be run: the top level, or,
when that has none (or one that runs nothing, as a monorepo's root), the one
subfolder that has (``frontend/`` beside a ``backend/``).  Only that folder is
imported, unless it is a member of a workspace (``workspaces``): then the
workspace's root is, and the app is its member (``Extracted.member``).  With
several apps, the caller picks one (``path``); the error lists them.
"""

from __future__ import annotations

import io
import json
import shutil
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from . import workspaces
from .errors import ArchiveError, ArchiveTooLarge, UnsupportedApp

DROPPED_DIRS = frozenset({"node_modules", ".git"})
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Limits:
    max_entries: int = 5_000
    max_total_bytes: int = 200 * 1024 * 1024
    max_ratio: float = 100.0
    """Largest allowed ratio of inflated bytes to compressed bytes, per entry
    and for the whole archive."""


@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]
    is_dir: bool


_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".7z", ".rar")


def _entry_kind(info: zipfile.ZipInfo) -> str:
    """'file', 'dir' or the name of what else it is (from the Unix mode bits)."""
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 where the tool wrote no Unix type
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            return "symbolic link"
        return "device or special file"
    return "dir" if info.is_dir() else "file"


def _split(name: str) -> tuple[str, ...]:
    """The path components of an entry name, or an ArchiveError saying why not."""
    shown = repr(name)[:200]
    if "\x00" in name:
        raise ArchiveError(f"The ZIP has an entry whose name contains a NUL byte: {shown}.")
    if "\\" in name:
        raise ArchiveError(
            f"The ZIP has an entry with a backslash in its name: {shown}. "
            "Create the archive with a tool that writes '/' separators."
        )
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"The ZIP has an entry with an absolute path: {shown}.")
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if ".." in parts:
        raise ArchiveError(f"The ZIP has an entry that points outside the app: {shown}.")
    return parts


def _check_entries(zf: zipfile.ZipFile, limits: Limits) -> list[_Entry]:
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise ArchiveTooLarge(
            f"The ZIP has {len(infos)} entries; the limit is {limits.max_entries}. "
            "Leave out node_modules and build output, or ask your admin to raise "
            "c.ReactBoxApp.max_upload_entries."
        )
    entries: list[_Entry] = []
    seen: set[tuple[str, ...]] = set()
    for info in infos:
        # orig_filename: zipfile cuts ``filename`` at a NUL byte, hiding it.
        parts = _split(info.orig_filename)
        if not parts:
            continue
        if DROPPED_DIRS.intersection(parts):
            # Reinstalled or recreated by us; links in there are common and harmless
            # because nothing of it is written.
            continue
        kind = _entry_kind(info)
        if kind not in ("file", "dir"):
            raise ArchiveError(
                f"The ZIP has a {kind} at {info.filename!r}; only files and folders are accepted."
            )
        if info.flag_bits & 0x1:
            raise ArchiveError(
                f"The ZIP entry {info.filename!r} is encrypted; upload it unencrypted."
            )
        if parts in seen:
            raise ArchiveError(f"The ZIP has two entries named {info.filename!r}.")
        seen.add(parts)
        entries.append(_Entry(info, parts, kind == "dir"))
    if not entries:
        raise ArchiveError("The ZIP is empty: it has no files to import.")
    return entries


def _wrapping_folder(entries: list[_Entry]) -> int:
    """1 if every entry sits in one common top-level folder, else 0."""
    tops = {e.parts[0] for e in entries}
    if len(tops) != 1:
        return 0
    (top,) = tops
    if any(len(e.parts) == 1 and not e.is_dir for e in entries):
        return 0  # a lone top-level file, not a folder
    return 1 if any(e.parts[0] == top and len(e.parts) > 1 for e in entries) else 0


_MAX_PACKAGE_JSON = 1 << 20
_MAX_APP_DEPTH = 4


def _manifest(zf: zipfile.ZipFile, entry: _Entry) -> Any:
    """A ``package.json`` entry, parsed (None if it is too large or not JSON)."""
    if entry.info.file_size > _MAX_PACKAGE_JSON:
        return None
    try:
        with zf.open(entry.info) as f:
            return json.loads(f.read(_MAX_PACKAGE_JSON + 1))
    except (ValueError, zipfile.BadZipFile, EOFError, NotImplementedError):
        return None


def _app_root(
    zf: zipfile.ZipFile,
    entries: list[_Entry],
    strip: int,
    path: str | None,
    runnable: Callable[[Any], bool],
) -> tuple[tuple[str, ...], str]:
    """(the folder, parts below the wrapping folder, that is imported; the app's
    folder inside it when it is a workspace's member, else '')."""
    manifests = {
        e.parts[strip:-1]: e
        for e in entries
        if not e.is_dir
        and e.parts[-1] == "package.json"
        and len(e.parts) - strip - 1 <= _MAX_APP_DEPTH
    }
    if path is not None:
        wanted = tuple(p for p in PurePosixPath(path).parts if p not in ("", ".", "/"))
        if wanted not in manifests:
            raise UnsupportedApp(
                f"The ZIP has no package.json in {path!r}. "
                + _listing(sorted(manifests), "Folders with one")
            )
        return _in_workspace(zf, entries, strip, manifests, wanted)
    if () in manifests and runnable(_manifest(zf, manifests[()])):
        return (), ""
    apps = sorted(
        folder for folder, e in manifests.items() if folder and runnable(_manifest(zf, e))
    )
    if len(apps) == 1:
        return _in_workspace(zf, entries, strip, manifests, apps[0])
    if len(apps) > 1:
        raise UnsupportedApp(
            "The ZIP holds several apps. Pick one with ?path=<folder>. " + _listing(apps, "Apps")
        )
    return (), ""  # the top level's package.json, if any: detection says what it lacks


def _in_workspace(
    zf: zipfile.ZipFile,
    entries: list[_Entry],
    strip: int,
    manifests: dict[tuple[str, ...], _Entry],
    app: tuple[str, ...],
) -> tuple[tuple[str, ...], str]:
    """(what is imported, the member) for the app folder ``app``: the nearest
    workspace root above it that names it a member, or the app folder alone."""
    files = {e.parts[strip:]: e for e in entries if not e.is_dir}
    for depth in range(len(app) - 1, -1, -1):
        root = app[:depth]
        if root not in manifests:
            continue
        pnpm = files.get((*root, workspaces.PNPM_FILE))
        globs = workspaces.patterns(
            _manifest(zf, manifests[root]), _read_small(zf, pnpm) if pnpm else None
        )
        if globs and workspaces.matches("/".join(app[depth:]), globs):
            return root, "/".join(app[depth:])
    return app, ""


def _read_small(zf: zipfile.ZipFile, entry: _Entry) -> bytes | None:
    if entry.info.file_size > _MAX_PACKAGE_JSON:
        return None
    try:
        with zf.open(entry.info) as f:
            return f.read(_MAX_PACKAGE_JSON + 1)
    except (zipfile.BadZipFile, EOFError, NotImplementedError):
        return None


def _listing(folders: list[tuple[str, ...]], what: str) -> str:
    shown = ", ".join("/".join(f) or "." for f in folders[:20])
    return f"{what}: {shown}." if folders else ""


def _copy_limited(src: IO[bytes], dst: IO[bytes], entry: _Entry, budget: list[int], limits: Limits):
    """Copy one entry, stopping as soon as a size or ratio limit is crossed."""
    compressed = max(entry.info.compress_size, 1)
    written = 0
    while chunk := src.read(_CHUNK):
        written += len(chunk)
        budget[0] -= len(chunk)
        if budget[0] < 0:
            raise ArchiveTooLarge(
                f"The unpacked app is larger than {limits.max_total_bytes} bytes. "
                "Leave out large assets, or ask your admin to raise "
                "c.ReactBoxApp.max_upload_bytes."
            )
        if written > 1024 * 1024 and written / compressed > limits.max_ratio:
            raise ArchiveTooLarge(
                f"The ZIP entry {entry.info.filename!r} inflates more than "
                f"{limits.max_ratio:g} times its packed size; that looks like a ZIP bomb."
            )
        dst.write(chunk)
    return written


class Extracted(list):
    """The relative paths of the files written; ``member``: the app's folder among
    them when they are a workspace of several packages ('' otherwise)."""

    member: str = ""


def extract(
    data: bytes,
    dest: Path,
    limits: Limits | None = None,
    *,
    path: str | None = None,
    runnable: Callable[[Any], bool] = lambda manifest: True,
) -> Extracted:
    """Extract the app in the ZIP ``data`` into the new folder ``dest``.

    ``dest`` must not exist; on any error it does not exist afterwards either.
    ``runnable`` says whether a parsed ``package.json`` is an app we can run;
    ``path`` names the app's folder in the ZIP (below a wrapping folder).
    """
    limits = limits or Limits()
    if not data:
        raise ArchiveError("The upload is empty; send a ZIP of your app.")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ArchiveError(
            "The upload is not a ZIP archive. Zip your app's folder and upload the .zip file."
        ) from exc
    dest.mkdir(parents=False)
    try:
        with zf:
            entries = _check_entries(zf, limits)
            strip = _wrapping_folder(entries)
            root, member = _app_root(zf, entries, strip, path, runnable)
            strip += len(root)
            budget = [limits.max_total_bytes]
            files = Extracted()
            files.member = member
            for entry in entries:
                if entry.parts[strip - len(root) : strip] != root:
                    continue  # beside the app (a backend/ next to its frontend/)
                parts = entry.parts[strip:]
                if not parts:
                    continue
                target = dest.joinpath(*parts)
                if entry.is_dir:
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(entry.info) as src, open(target, "xb") as dst:
                        _copy_limited(src, dst, entry, budget, limits)
                except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as exc:
                    raise ArchiveError(
                        f"The ZIP entry {entry.info.filename!r} cannot be read: {exc}."
                    ) from exc
                except (FileExistsError, IsADirectoryError, NotADirectoryError) as exc:
                    raise ArchiveError(
                        f"The ZIP entry {entry.info.filename!r} clashes with another entry."
                    ) from exc
                files.append("/".join(parts))
            total_in = sum(e.info.compress_size for e in entries) or 1
            total_out = limits.max_total_bytes - budget[0]
            if total_out > 1024 * 1024 and total_out / total_in > limits.max_ratio:
                raise ArchiveTooLarge(
                    f"The ZIP inflates more than {limits.max_ratio:g} times its packed size; "
                    "that looks like a ZIP bomb."
                )
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    if "package.json" not in files:
        shutil.rmtree(dest, ignore_errors=True)
        inner = [f for f in files if f.lower().endswith(_ARCHIVE_SUFFIXES)]
        if inner:  # archives inside are never opened: they stay files of the app
            raise ArchiveError(
                f"The ZIP holds another archive ({inner[0]}) but no package.json. Upload "
                "the app's folder zipped once, not an archive inside an archive."
            )
        raise ArchiveError(
            "The ZIP has no package.json at its top level (or inside one wrapping folder). "
            "Zip the folder that contains your app's package.json."
        )
    return files
