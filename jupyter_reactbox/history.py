"""A project's edit history: its git repository, with undo and redo.

Every change, by the AI or by hand, is a commit on ``main``.  Undo moves
``main`` back one commit and pushes the undone commit on a redo stack
(``.git/reactbox-redo``); redo moves it forward again; any new commit clears
the stack.  The user's uncommitted changes are committed first, so undo never
loses them.

A change that writes files runs as a ``change``: a marker in ``.git`` names
the commit to go back to, and is removed only once the change is committed
(or rolled back).  If the server dies in between, ``repair`` at the next start
finds the marker and puts the project back at that commit, so a project is
never left half-edited, with a stale git lock, or with our temporary files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .store import git

_REV_RE = re.compile(r"^(?:[0-9a-f]{7,40}|HEAD(?:~\d{1,4})?)$")
TEMP_RE = re.compile(r"^\..+\.reactbox-[0-9a-f]{8}$")
"""Our temporary files: written beside their target, then renamed over it."""
_LOCKS = ("index.lock", "HEAD.lock", "refs/heads/main.lock", "packed-refs.lock")
_SKIPPED = {".git", "node_modules"}


class HistoryError(UserError):
    status = 409


@dataclass(frozen=True)
class Commit:
    sha: str
    message: str
    time: int

    def to_json(self) -> dict:
        return {"sha": self.sha, "message": self.message, "time": self.time}


def _redo_file(app_dir: Path) -> Path:
    return app_dir / ".git" / "reactbox-redo"


def _marker(app_dir: Path) -> Path:
    return app_dir / ".git" / "reactbox-change"


def begin(app_dir: Path, restore_to: str, what: str, record: dict | None = None) -> None:
    """A change starts: until ``end``, ``repair`` puts the project back at ``restore_to``
    (and hands back ``what`` and ``record``, to tell the user)."""
    marker = _marker(app_dir)
    pending = {"restore_to": restore_to, "what": what, "record": record}
    try:
        marker.write_text(json.dumps(pending))
    except BaseException:  # a full disk: the change does not begin
        marker.unlink(missing_ok=True)
        raise


def end(app_dir: Path) -> None:
    """The change is committed (or rolled back): nothing to repair."""
    _marker(app_dir).unlink(missing_ok=True)


@contextlib.contextmanager
def change(app_dir: Path, restore_to: str, what: str) -> Iterator[None]:
    """``begin`` and ``end`` around a block; on an error the project goes back at once."""
    begin(app_dir, restore_to, what)
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):  # if this fails too, the next start repairs
            repair(app_dir)
        raise
    end(app_dir)


def temporary_for(target: Path) -> Path:
    """Where ``target``'s new content is written before it is renamed into place
    (``repair`` removes those a dead server left)."""
    return target.with_name(f".{target.name}.reactbox-{secrets.token_hex(4)}")


def remove_temporaries(app_dir: Path) -> None:
    for folder, dirs, names in os.walk(app_dir):
        dirs[:] = [d for d in dirs if d not in _SKIPPED]
        for name in names:
            if TEMP_RE.match(name):
                Path(folder, name).unlink(missing_ok=True)


def repair(app_dir: Path) -> dict | None:
    """Undo a change that did not ``end`` (it failed, or the server died during it),
    and clear stale git locks and temporary files. The undone change's ``what`` and
    ``record``, if there was one."""
    if not (app_dir / ".git").is_dir():
        return None
    marker = _marker(app_dir)
    try:
        pending = json.loads(marker.read_text())
    except FileNotFoundError:
        pending = None
    except ValueError:  # cut short while being written: the change had not begun
        marker.unlink()
        pending = None
    for lock in _LOCKS:  # whatever held them has died or given up
        (app_dir / ".git" / lock).unlink(missing_ok=True)
    remove_temporaries(app_dir)
    if pending is None:
        return None
    reset(app_dir, pending["restore_to"])
    marker.unlink()
    return pending


def head(app_dir: Path) -> str:
    return git(app_dir, "rev-parse", "HEAD").strip()


def commit_all(app_dir: Path, message: str) -> str | None:
    """Commit every change in the work tree; the new sha, or None if there was none."""
    git(app_dir, "add", "--all")
    if not git(app_dir, "status", "--porcelain").strip():
        return None
    git(app_dir, "commit", "--quiet", "-m", message)
    _redo_file(app_dir).unlink(missing_ok=True)
    return head(app_dir)


def log(app_dir: Path, limit: int = 200) -> list[Commit]:
    out = git(app_dir, "log", f"-{limit}", "--format=%H%x00%ct%x00%s")
    commits = []
    for line in out.splitlines():
        sha, when, message = line.split("\x00", 2)
        commits.append(Commit(sha, message, int(when)))
    return commits


def reset(app_dir: Path, sha: str) -> None:
    git(app_dir, "reset", "--quiet", "--hard", sha)


def undo(app_dir: Path) -> Commit:
    """Step back one commit; return the commit now at HEAD."""
    commit_all(app_dir, "Manual changes")
    commits = log(app_dir, 2)
    if len(commits) < 2:
        raise HistoryError("Nothing to undo: this is the project as it was uploaded.")
    redo = _redo_file(app_dir)
    stack = redo.read_text().split() if redo.exists() else []
    with change(app_dir, commits[0].sha, "undo"):
        reset(app_dir, commits[1].sha)
        redo.write_text("\n".join([*stack, commits[0].sha]) + "\n")
    return commits[1]


def redo(app_dir: Path) -> Commit:
    """Step forward to the commit last undone."""
    commit_all(app_dir, "Manual changes")  # clears the stack if there were changes
    redo_path = _redo_file(app_dir)
    stack = redo_path.read_text().split() if redo_path.exists() else []
    if not stack:
        raise HistoryError("Nothing to redo.")
    sha = stack.pop()
    with change(app_dir, head(app_dir), "redo"):
        reset(app_dir, sha)
        redo_path.write_text("".join(f"{s}\n" for s in stack))
    return log(app_dir, 1)[0]


def diff(app_dir: Path, start: str, end: str | None = None) -> str:
    """The unified diff between two revisions (``end`` defaults to the work tree)."""
    for rev in (start, end):
        if rev is not None and not _REV_RE.match(rev):
            raise UserError(f"{rev!r} is not a revision: use a commit sha or HEAD~N.")
    args = ["diff", "--no-color", "--no-ext-diff", start] + ([end] if end else [])
    try:
        return git(app_dir, *args, "--")
    except subprocess.CalledProcessError as exc:
        raise UserError(f"Cannot diff {start}..{end or 'work tree'}: unknown revision.") from exc
