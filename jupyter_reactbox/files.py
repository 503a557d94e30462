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

import json
import re
from pathlib import Path

from . import history, worktree
from .ai import validate
from .ai.edits import safe_path
from .errors import UserError

MAX_FILE_BYTES = 1 << 20
DATA_DIR = history.DATA_DIR
DATA_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_SKIPPED_DIRS = {".git", "node_modules", "dist", "build", ".vite"}


class FileNotInProject(UserError):
    status = 404


class NotAText(UserError):
    status = 415


class SyntaxRefused(UserError):
    status = 422


def _skipped(rel: str) -> bool:
    return rel.rsplit("/", 1)[-1] in _SKIPPED_DIRS


def list_files(app: Path) -> list[str]:
    """The project's own files (not its dependencies, build output or history)."""
    return [entry.path for entry in worktree.walk(app, _skipped)]


def read_file(app: Path, path: str) -> str:
    clean = safe_path(path)
    try:
        data = worktree.read_bytes(app, clean, MAX_FILE_BYTES)
    except worktree.NotAFile as exc:
        raise NotAText(f"{clean} is not shown: {exc}") from None
    if data is None:
        raise FileNotInProject(f"The project has no file {clean!r}.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise NotAText(f"{clean} is not a UTF-8 text file.") from None


def write_file(app: Path, path: str, content: str) -> str | None:
    """Write one file by hand and commit it; the new commit, or None if nothing changed."""
    clean = safe_path(path)
    if len(content.encode()) > MAX_FILE_BYTES:
        raise UserError(f"{clean} would be larger than {MAX_FILE_BYTES >> 20} MiB.")
    with history.writing(app):
        try:
            raw = worktree.read_bytes(app, clean, MAX_FILE_BYTES)
        except worktree.NotAFile as exc:
            raise SyntaxRefused(f"Not written: {exc}") from None
        old = None if raw is None else raw.decode("utf-8", errors="replace")
        problem = validate.check(clean, old, content)
        if problem:
            raise SyntaxRefused(f"Not written, the change adds a syntax error: {problem}")
        if old == content:
            return None
        history.commit_all(app, "Changes before a hand edit")
        with history.change(app, history.head(app), f"hand edit of {clean}"):
            worktree.write_bytes(app, clean, content.encode())
            return history.commit_all(app, f"Edit {clean} by hand")


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
