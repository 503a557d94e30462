"""A project's source as a ZIP: what a user takes away, and can upload again.

The export is the work tree as it is now, read as data (``worktree.walk``: no
link followed, regular files only): the files the history tracks, without
``node_modules``, build output or the history itself, and without the
notebook's data folder unless it is asked for.  Entries sit in one folder
named after the project, as a ZIP of a repository does; an upload of it finds
the app inside (``archive.py``).
"""

from __future__ import annotations

import stat
import time
import zipfile
from pathlib import Path
from typing import IO

from . import history, worktree
from .errors import NotAFile

EPOCH_1980 = 315532800
"""ZIP cannot say a time before 1980."""


def _skip(with_data: bool):
    def skip(rel: str) -> bool:
        if with_data and rel == history.DATA_DIR:
            return False
        return rel.rsplit("/", 1)[-1] in history.NOT_HISTORY_DIRS or rel == history.DATA_DIR

    return skip


def _exported(rel: str) -> bool:
    """A file the export carries: one the history would track, by its path (the data
    folder, when asked for, is walked only then)."""
    return history.in_history(rel) or rel.startswith(history.DATA_DIR + "/")


def write_zip(
    app_dir: Path, out: IO[bytes], *, top: str, data: bool = False
) -> tuple[int, list[str]]:
    """Write the project's files into ``out`` as a ZIP under the folder ``top``: (the
    number of files, the files left out for their size, over ``history.MAX_BLOB``
    as in the history).  Blocking; runs on a thread."""
    count, too_large = 0, []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for entry in worktree.walk(app_dir, _skip(data)):
            if not _exported(entry.path):
                continue
            if entry.stat.st_size > history.MAX_BLOB:
                too_large.append(entry.path)
                continue
            try:
                body = entry.read(history.MAX_BLOB)
            except (NotAFile, FileNotFoundError):
                continue  # replaced while we walked (the dev server writes here too)
            when = max(int(entry.stat.st_mtime), EPOCH_1980)
            info = zipfile.ZipInfo(f"{top}/{entry.path}", time.gmtime(when)[:6])
            mode = 0o755 if entry.stat.st_mode & stat.S_IXUSR else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, body)
            count += 1
    return count, too_large


def write_site_zip(site: Path, out: IO[bytes]) -> int:
    """Write a build's files (a folder the server wrote: ``builds.py``) into ``out`` as a
    ZIP, at its top, as a static host takes them; the number of files."""
    count = 0
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for path in sorted(site.rglob("*")):
            if path.is_file() and not path.is_symlink():
                zf.write(path, path.relative_to(site).as_posix())
                count += 1
    return count
