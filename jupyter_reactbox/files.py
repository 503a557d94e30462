"""A project's files as the notebook sees them: read, write by hand, and data.

Writes go through the same checks as the AI's edits (paths stay inside the
project, a change may not add a syntax error) and are committed, so Undo
steps back over them.  Data published from a notebook is not history: it lives
in ``src/reactbox-data/`` (which the history leaves out) and is replaced, not
committed, each time the notebook publishes it again.  Every read and write
goes through ``worktree``: the folder is the sandbox's, so a planted link is
refused, never followed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from pathlib import Path

from . import history, worktree
from .ai import validate
from .ai.edits import UnsafePath, safe_path
from .errors import ChangedMeanwhile, FileNotInProject, NotAText, SyntaxRefused, UserError

MAX_FILE_BYTES = 1 << 20
DATA_DIR = history.DATA_DIR
DATA_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_SKIPPED_DIRS = {".git", "node_modules", "dist", "build", ".vite"}


def _skipped(rel: str) -> bool:
    return rel.rsplit("/", 1)[-1] in _SKIPPED_DIRS


CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def checked_path(path: str) -> str:
    """``path`` inside the project, normalised: no '..', no absolute path, nothing in
    .git or node_modules, no control character."""
    clean = safe_path(path)
    if CONTROL.search(clean):
        raise UnsafePath(f"Refused the path {path!r}: it holds a control character.")
    return clean


def version(data: bytes | None) -> str | None:
    """What a file's content is now, to compare on write (git's blob id)."""
    return None if data is None else worktree.blob_id(data)


def list_files(app: Path) -> list[str]:
    """The project's own files (not its dependencies, build output or history)."""
    return [entry.path for entry in worktree.walk(app, _skipped)]


def list_entries(app: Path) -> list[dict]:
    """The project's folders and files, as a file browser shows them: path, type
    ('directory' or 'file'), size and last change; no link is followed."""
    entries = []
    for dirpath, dirnames, filenames, dfd in os.fwalk(app, follow_symlinks=False):
        rel = os.path.relpath(dirpath, app)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        dirnames[:] = sorted(d for d in dirnames if not _skipped(prefix + d))
        for name in [*dirnames, *sorted(filenames)]:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
            if kind == "file" and not stat.S_ISREG(st.st_mode):
                continue  # links and special files: not the app's content
            if CONTROL.search(name) or worktree.TEMP_RE.match(name):
                continue
            entries.append({
                "path": prefix + name, "type": kind, "size": st.st_size, "mtime": st.st_mtime,
            })  # fmt: skip
        if len(entries) > worktree.MAX_FILES:
            raise worktree.TooManyFiles(
                f"The project has more than {worktree.MAX_FILES} files outside node_modules "
                "and build output."
            )
    return entries


def stat_path(app: Path, path: str) -> dict:
    """What a file browser asks before it saves: type, size, last change and, for a
    file, its version (no link is followed)."""
    clean = checked_path(path)
    st = worktree.file_stat(app, clean)
    if st is None or not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise FileNotInProject(f"The project has no file or folder {clean!r}.")
    entry = {"path": clean, "size": st.st_size, "mtime": st.st_mtime}
    if stat.S_ISDIR(st.st_mode):
        return {**entry, "type": "directory"}
    data = worktree.read_bytes(app, clean, MAX_FILE_BYTES)
    return {**entry, "type": "file", "version": version(data)}


def read_file(app: Path, path: str) -> str:
    return read_versioned(app, path)[0]


def read_versioned(app: Path, path: str) -> tuple[str, str]:
    """The file's text and its version."""
    clean = checked_path(path)
    try:
        data = worktree.read_bytes(app, clean, MAX_FILE_BYTES)
    except worktree.NotAFile as exc:
        raise NotAText(f"{clean} is not shown: {exc}") from None
    if data is None:
        raise FileNotInProject(f"The project has no file {clean!r}.")
    try:
        return data.decode("utf-8"), version(data)
    except UnicodeDecodeError:
        raise NotAText(f"{clean} is not a UTF-8 text file.") from None


def write_file(
    app: Path,
    path: str,
    content: str,
    *,
    expected: str | None = None,
    editor: bool = False,
) -> str | None:
    """Write one file by hand and commit it; the new commit, or None if nothing changed.
    ``expected``: the version the writer read (``"new"``: it must not exist yet); a
    file changed meanwhile (an AI edit, an undo, another tab) is not written (409).
    ``editor``: a save in JupyterLab's editor, as the timeline says."""
    clean = checked_path(path)
    if len(content.encode()) > MAX_FILE_BYTES:
        raise UserError(f"{clean} would be larger than {MAX_FILE_BYTES >> 20} MiB.")
    with history.writing(app):
        try:
            raw = worktree.read_bytes(app, clean, MAX_FILE_BYTES)
        except worktree.NotAFile as exc:
            raise SyntaxRefused(f"Not written: {exc}") from None
        _check_unchanged(clean, raw, expected)
        old = None if raw is None else raw.decode("utf-8", errors="replace")
        problem = validate.check(clean, old, content)
        if problem:
            raise SyntaxRefused(f"Not written, the change adds a syntax error: {problem}")
        if old == content:
            return None
        history.commit_all(app, "Changes before a hand edit")
        message = f"Save {clean} in the editor" if editor else f"Edit {clean} by hand"
        with history.change(app, history.head(app), f"hand edit of {clean}"):
            worktree.write_bytes(app, clean, content.encode())
            return history.commit_all(app, message)


def add_binary(app: Path, path: str, data: bytes, *, expected: str | None = None) -> str | None:
    """A file that is not text (an image for public/, a font), uploaded as it is and
    committed; the commit."""
    clean = checked_path(path)
    if len(data) > MAX_FILE_BYTES * 8:
        raise UserError(f"{clean} would be larger than {MAX_FILE_BYTES * 8 >> 20} MiB.")
    with history.writing(app):
        try:
            raw = worktree.read_bytes(app, clean, MAX_FILE_BYTES * 8)
        except worktree.NotAFile as exc:
            raise SyntaxRefused(f"Not written: {exc}") from None
        _check_unchanged(clean, raw, expected)
        if raw == data:
            return None
        history.commit_all(app, "Changes before a hand edit")
        with history.change(app, history.head(app), f"upload of {clean}"):
            worktree.write_bytes(app, clean, data)
            return history.commit_all(app, f"Upload {clean}")


def _check_unchanged(clean: str, raw: bytes | None, expected: str | None) -> None:
    if expected is None or expected == version(raw) or (expected == "new" and raw is None):
        return
    if expected == "new":
        raise ChangedMeanwhile(f"{clean} exists already; open it, or choose another name.")
    if raw is None:
        raise ChangedMeanwhile(f"{clean} was deleted since you opened it.")
    raise ChangedMeanwhile(
        f"{clean} changed since you opened it (an AI edit, an undo or another tab): "
        "reload it to see the change, or save again to overwrite it."
    )


def _files_under(app: Path, clean: str) -> list[str]:
    """``clean`` if it is a file, else the files of the folder ``clean``."""
    if worktree.is_file(app, clean):
        return [clean]
    prefix = clean + "/"
    found = [p for p in list_files(app) if p.startswith(prefix)]
    if not found and not _is_dir(app, clean):
        raise FileNotInProject(f"The project has no file or folder {clean!r}.")
    return found


def _is_dir(app: Path, clean: str) -> bool:
    try:
        with worktree.opened_dir(app, worktree.parts_of(clean)):
            return True
    except (OSError, worktree.NotAFile):
        return False


def delete_path(app: Path, path: str, *, expected: str | None = None) -> str | None:
    """Remove a file, or a folder and its files, as one change; the commit."""
    clean = checked_path(path)
    with history.writing(app):
        doomed = _files_under(app, clean)
        if expected is not None and doomed == [clean]:
            _check_unchanged(clean, worktree.read_bytes(app, clean, MAX_FILE_BYTES), expected)
        history.commit_all(app, "Changes before a hand edit")
        with history.change(app, history.head(app), f"delete {clean}"):
            for rel in doomed:
                worktree.remove(app, rel)
            _remove_empty_dir(app, clean)
            return history.commit_all(app, f"Delete {clean} by hand")


def _remove_empty_dir(app: Path, clean: str) -> None:
    *parents, name = worktree.parts_of(clean)
    with contextlib.suppress(OSError, worktree.NotAFile), worktree.opened_dir(app, parents) as dfd:
        os.rmdir(name, dir_fd=dfd)


def rename_path(app: Path, path: str, new_path: str) -> str | None:
    """Move a file or a folder to ``new_path`` (which must not exist), as one change."""
    clean, target = checked_path(path), checked_path(new_path)
    if target == clean or target.startswith(clean + "/"):
        raise UserError(f"Cannot move {clean} to {target}.")
    with history.writing(app):
        moved = _files_under(app, clean)
        if worktree.file_stat(app, target) is not None:  # a file, folder or link
            raise ChangedMeanwhile(f"{target} exists already; choose another name.")
        history.commit_all(app, "Changes before a hand edit")
        with history.change(app, history.head(app), f"rename {clean}"):
            for rel in moved:
                data = worktree.read_bytes(app, rel, history.MAX_BLOB)
                if data is None:
                    continue
                executable = bool(worktree.file_stat(app, rel).st_mode & 0o111)
                worktree.write_bytes(app, target + rel[len(clean) :], data, executable=executable)
                worktree.remove(app, rel)
            if not moved:  # an empty folder
                with worktree.opened_dir(app, worktree.parts_of(target), create=True):
                    pass
            _remove_empty_dir(app, clean)
            return history.commit_all(app, f"Rename {clean} to {target} by hand")


def make_folder(app: Path, path: str) -> None:
    """A new, empty folder (the history keeps files, not folders)."""
    clean = checked_path(path)
    if worktree.file_stat(app, clean) is not None:
        raise ChangedMeanwhile(f"{clean} exists already.")
    with worktree.opened_dir(app, worktree.parts_of(clean), create=True):
        pass


def publish_data(app: Path, name: str, body: bytes) -> str:
    """Put notebook data (JSON) where the app imports it; the path it has there."""
    if not DATA_NAME_RE.match(name):
        raise UserError(
            f"{name!r} cannot name data: use letters, digits, '_' and '-' (starting with a "
            "letter or '_'), e.g. sales."
        )
    try:
        json.loads(body)
    except ValueError as exc:
        raise UserError(f"The data is not JSON: {exc}") from None
    path = f"{DATA_DIR}/{name}.json"
    worktree.write_bytes(app, path, body)  # a planted link on the way: NotAFile (422)
    return path


def remove_data(app: Path, name: str) -> None:
    if not DATA_NAME_RE.match(name) or not worktree.is_file(app, f"{DATA_DIR}/{name}.json"):
        raise FileNotInProject(f"No data named {name!r} is published to this project.")
    worktree.remove(app, f"{DATA_DIR}/{name}.json")
