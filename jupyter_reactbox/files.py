"""A project's files as the notebook sees them: read, write by hand, and data.

Writes go through the same checks as the AI's edits (paths stay inside the
project, a change may not add a syntax error) and are committed, so Undo
steps back over them.  Data published from a notebook is not history: it lives
in ``src/reactbox-data/`` (ignored by the project's git) and is replaced, not
committed, each time the notebook publishes it again.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from . import history
from .ai import validate
from .ai.edits import UnsafePath, safe_path
from .errors import UserError

MAX_FILE_BYTES = 1 << 20
DATA_DIR = "src/reactbox-data"
DATA_EXCLUDE = f"/{DATA_DIR}/"
DATA_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_SKIPPED_DIRS = {".git", "node_modules", "dist", "build", ".vite"}


class FileNotInProject(UserError):
    status = 404


class NotAText(UserError):
    status = 415


class SyntaxRefused(UserError):
    status = 422


def _target(app: Path, path: str) -> tuple[str, Path]:
    clean = safe_path(path)
    target = (app / clean).resolve()
    if not target.is_relative_to(app.resolve()):
        raise UnsafePath(f"Refused the path {path!r}: it leads outside the project.")
    return clean, target


def list_files(app: Path) -> list[str]:
    """The project's own files (not its dependencies, build output or history)."""
    found = []
    for folder, dirs, names in os.walk(app):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        rel = Path(folder).relative_to(app)
        found += [(rel / n).as_posix() for n in sorted(names)]
    return found


def read_file(app: Path, path: str) -> str:
    clean, target = _target(app, path)
    if not target.is_file():
        raise FileNotInProject(f"The project has no file {clean!r}.")
    if target.stat().st_size > MAX_FILE_BYTES:
        raise NotAText(f"{clean} is larger than {MAX_FILE_BYTES >> 20} MiB; it is not shown.")
    try:
        return target.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise NotAText(f"{clean} is not a UTF-8 text file.") from None


def _replace(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` by renaming a finished sibling over it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = history.temporary_for(target)
    try:
        tmp.write_bytes(data)
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o777)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_file(app: Path, path: str, content: str) -> str | None:
    """Write one file by hand and commit it; the new commit, or None if nothing changed."""
    clean, target = _target(app, path)
    if len(content.encode()) > MAX_FILE_BYTES:
        raise UserError(f"{clean} would be larger than {MAX_FILE_BYTES >> 20} MiB.")
    old = target.read_text(encoding="utf-8", errors="replace") if target.is_file() else None
    problem = validate.check(clean, old, content)
    if problem:
        raise SyntaxRefused(f"Not written, the change adds a syntax error: {problem}")
    if old == content:
        return None
    history.commit_all(app, "Changes before a hand edit")
    with history.change(app, history.head(app), f"hand edit of {clean}"):
        _replace(target, content.encode())
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
    _exclude_data_dir(app)
    path = f"{DATA_DIR}/{name}.json"
    _replace(app / path, body)
    return path


def remove_data(app: Path, name: str) -> None:
    if not DATA_NAME_RE.match(name) or not (app / DATA_DIR / f"{name}.json").is_file():
        raise FileNotInProject(f"No data named {name!r} is published to this project.")
    (app / DATA_DIR / f"{name}.json").unlink()


def _exclude_data_dir(app: Path) -> None:
    exclude = app / ".git" / "info" / "exclude"
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if DATA_EXCLUDE not in lines:
        exclude.parent.mkdir(parents=True, exist_ok=True)
        exclude.write_text("".join(f"{line}\n" for line in [*lines, DATA_EXCLUDE]))
