"""A project's edit history: a git repository the server owns, beside the work tree.

    <project>/
      app/           the work tree: what the dev server sees, and may write
      history.git/   a bare repository: only the server reads and writes it

Every change, by the AI or by hand, is a commit on ``main``.  Undo moves
``main`` back one commit and pushes the undone commit on a redo stack
(``history.git/reactbox-redo``); redo moves it forward again; any new commit
clears the stack.  The user's uncommitted changes are committed first, so undo
never loses them.

**The work tree is only ever data.**  Code in a preview can write every file
under ``app/`` (a ``.git`` folder, ``.gitattributes``, ``.gitmodules``, nested
repositories, links), so git never gets ``app/`` as a work tree: it runs on
the bare repository alone, with no system or global configuration, so every
program git could run (hooks, filters, diff and merge drivers, fsmonitor,
pagers, credential helpers) would have to be named in ``history.git/config``,
which only the server writes.  Attributes and ignore files in the app are
never read: git is not told the app exists.  This module reads the work tree
itself, through ``worktree`` (no link followed, regular files only, bounded),
hashes it as git would, and hands git bytes (``fast-import``); it writes the
work tree itself from blobs it asks git for (``cat-file --batch``).

A change that writes files runs as a ``change``: a marker in ``history.git``
names the commit to go back to, and is removed only once the change is
committed (or rolled back).  If the server dies in between, ``repair`` at the
next start finds the marker and puts the project back at that commit.  One
writer at a time per project: every write holds the project's lock.

Projects made by older versions kept their repository in ``app/.git``, where
the container could write it; ``migrate`` moves its commits (objects only,
checked with ``fsck`` as they are fetched) into ``history.git`` and removes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import boxes, worktree
from .errors import DiskFull, HistoryError, NoSuchPoint, UserError

_REV_RE = re.compile(r"^(?:[0-9a-f]{7,40}|HEAD)(?:~\d{1,4})?$")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_IDENTITY = "jupyter-reactbox <reactbox@localhost>"
_DISK_FULL = ("No space left on device", "Out of diskspace")
_REF_LOCKS = ("HEAD.lock", "refs/heads/main.lock", "packed-refs.lock", "config.lock")
# Written once into history.git/config: nothing unreachable is ever pruned (the redo
# stack points at commits off `main`), and gc never detaches into the background.
_CONFIG = {
    "gc.pruneExpire": "never",
    "gc.reflogExpireUnreachable": "never",
    "gc.autoDetach": "false",
    "core.logAllRefUpdates": "false",
}

NOT_HISTORY_DIRS = frozenset(
    {".git", "node_modules", "dist", "build", ".vite", ".next", ".cache", ".parcel-cache",
     ".turbo", ".svelte-kit", "coverage"}
)  # fmt: skip
"""Folders, at any depth, that are reinstalled or rebuilt: never the user's work."""
DATA_DIR = "src/reactbox-data"
"""Notebook data: replaced each time it is published, never a change to undo."""
MAX_BLOB = 32 << 20
"""Files larger than this stay out of the history (and Undo leaves them alone)."""
_NOT_HISTORY_FILE = re.compile(r"\.timestamp-\d+-[0-9a-f]+\.mjs$")  # Vite's bundled config


@dataclass(frozen=True)
class Commit:
    sha: str
    message: str
    time: int

    def to_json(self) -> dict:
        return {"sha": self.sha, "message": self.message, "time": self.time}


def git_dir(app_dir: Path) -> Path:
    return boxes.folder_of(app_dir) / "history.git"


def _skip_dir(rel: str) -> bool:
    return rel.rsplit("/", 1)[-1] in NOT_HISTORY_DIRS or rel == DATA_DIR


def in_history(rel: str) -> bool:
    """Whether the history tracks the file ``rel`` (by its path alone)."""
    parts = rel.split("/")
    return not (
        any(_skip_dir("/".join(parts[: i + 1])) for i in range(len(parts) - 1))
        or parts[-1] == ".git"
        or worktree.TEMP_RE.match(parts[-1])
        or _NOT_HISTORY_FILE.search(parts[-1])
    )


# -- git, on the bare repository only ----------------------------------------------


def git(app_dir: Path, *args: str, input: bytes | None = None) -> str:
    """Run git on the project's history: no work tree, and only our configuration."""
    return _git(git_dir(app_dir), *args, input=input).decode("utf-8", "replace")


def _git(gdir: Path, *args: str, input: bytes | None = None) -> bytes:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(gdir),  # no ~/.gitconfig of the server's user either
        "GIT_DIR": str(gdir),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "jupyter-reactbox",
        "GIT_AUTHOR_EMAIL": "reactbox@localhost",
        "GIT_COMMITTER_NAME": "jupyter-reactbox",
        "GIT_COMMITTER_EMAIL": "reactbox@localhost",
        "LC_ALL": "C",
    }
    try:
        out = subprocess.run(
            ["git", *args], cwd=gdir, env=env, input=input, check=True, capture_output=True
        )
    except subprocess.CalledProcessError as exc:
        if any(sign.encode() in (exc.stderr or b"") for sign in _DISK_FULL):
            raise DiskFull(gdir.parent.parent) from exc
        raise
    return out.stdout


# -- one writer at a time ------------------------------------------------------------

_writers: dict[Path, threading.RLock] = {}
_writers_lock = threading.Lock()


@contextlib.contextmanager
def writing(app_dir: Path) -> Iterator[None]:
    """Hold the project's write lock (re-entrant: a change may commit inside it)."""
    with _writers_lock:
        lock = _writers.setdefault(git_dir(app_dir), threading.RLock())
    with lock:
        yield


# -- reading the work tree as git would ----------------------------------------------

_blob_cache: dict[tuple[Path, str], tuple[tuple, str]] = {}
"""(history, path) -> (stat key, blob id): a file whose inode, size, mtime and ctime are
unchanged is not read again.  ctime cannot be set back by the file's writer."""


@dataclass
class _File:
    mode: str
    blob: str
    data: bytes | None = None


def _snapshot(
    app_dir: Path, keep_data_unless: dict[str, tuple[str, str]] | None = None
) -> dict[str, _File]:
    """The tracked files of the work tree with their mode and blob id; with
    ``keep_data_unless`` (a tree listing), the bytes of those that differ from it."""
    gdir = git_dir(app_dir)
    out: dict[str, _File] = {}
    for entry in worktree.walk(app_dir, _skip_dir):
        if not in_history(entry.path) or entry.stat.st_size > MAX_BLOB:
            continue
        st = entry.stat
        mode = "100755" if st.st_mode & stat.S_IXUSR else "100644"
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        cached = _blob_cache.get((gdir, entry.path))
        data = None
        if cached and cached[0] == key:
            blob = cached[1]
        else:
            try:
                data = entry.read(MAX_BLOB)
            except (worktree.NotAFile, FileNotFoundError):
                continue  # replaced while we walked: not a file any more
            blob = worktree.blob_id(data)
            _blob_cache[(gdir, entry.path)] = (key, blob)
        if keep_data_unless is not None and keep_data_unless.get(entry.path) != (mode, blob):
            if data is None:
                try:
                    data = entry.read(MAX_BLOB)
                except (worktree.NotAFile, FileNotFoundError):
                    continue
                blob = worktree.blob_id(data)
            out[entry.path] = _File(mode, blob, data=data)
        else:
            out[entry.path] = _File(mode, blob)
    return out


def _tree(app_dir: Path, rev: str) -> dict[str, tuple[str, str]]:
    """path -> (mode, blob) of the files of a commit."""
    raw = _git(git_dir(app_dir), "ls-tree", "-r", "-z", "--full-tree", rev)
    listing = {}
    for record in raw.split(b"\x00"):
        if not record:
            continue
        meta, path = record.split(b"\t", 1)
        mode, kind, sha = meta.decode().split()
        if kind == "blob":
            listing[path.decode("utf-8", "surrogateescape")] = (mode, sha)
    return listing


def _quote(path: str) -> bytes:
    raw = path.encode("utf-8", "surrogateescape")
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\n", b"\\n") + b'"'


def _import(
    app_dir: Path,
    ref: str,
    message: str,
    parent: str | None,
    changed: dict[str, _File],
    removed: list[str],
) -> str:
    """Commit ``changed`` and ``removed`` on top of ``parent`` as ``ref`` (fast-import:
    git is given bytes, never a path to read)."""
    msg = message.encode()
    out = [b"reset %s\n" % ref.encode()] if ref != "refs/heads/main" else []
    out += [
        b"commit %s\n" % ref.encode(),
        b"mark :1\n",
        b"committer %s now\n" % _IDENTITY.encode(),
        b"data %d\n%s\n" % (len(msg), msg),
    ]
    if parent:
        out.append(b"from %s\n" % parent.encode())
    for path in removed:
        out.append(b"D %s\n" % _quote(path))
    for path, f in sorted(changed.items()):
        assert f.data is not None
        out.append(b"M %s inline %s\ndata %d\n" % (f.mode.encode(), _quote(path), len(f.data)))
        out += [f.data, b"\n"]
    out.append(b"get-mark :1\ndone\n")  # the new commit's id, on stdout
    made = _git(
        git_dir(app_dir),
        "fast-import",
        "--quiet",
        "--done",
        "--date-format=now",
        input=b"".join(out),
    )
    return made.decode().strip()


def _changes(app_dir: Path, base: str) -> tuple[dict[str, _File], list[str]]:
    listing = _tree(app_dir, base)
    work = _snapshot(app_dir, keep_data_unless=listing)
    changed = {p: f for p, f in work.items() if listing.get(p) != (f.mode, f.blob)}
    removed = sorted(set(listing) - set(work))
    return changed, removed


# -- creating, migrating ---------------------------------------------------------------


def create(app_dir: Path, message: str = "Import uploaded app") -> str:
    """Start the history of ``app_dir`` with one commit of its files."""
    gdir = git_dir(app_dir)
    _init_bare(gdir)
    work = _snapshot(app_dir, keep_data_unless={})
    return _import(app_dir, "refs/heads/main", message, None, work, [])


def _init_bare(gdir: Path) -> None:
    gdir.mkdir(mode=0o700)
    _git(gdir, "init", "--bare", "--quiet", "--template=", "--initial-branch=main")
    for key, value in _CONFIG.items():
        _git(gdir, "config", key, value)


def migrate(app_dir: Path) -> bool:
    """Move an older version's ``app/.git`` out of the container's reach (True if done).

    Only data is taken from it: its objects (copied as regular files, then fetched with
    ``fsck`` into the new repository, so a corrupt or crafted one is refused), and the
    ids of ``main``, the redo stack and a pending change, each checked to be an id.
    Its configuration, hooks, attributes and any other file are never read."""
    gdir = git_dir(app_dir)
    if gdir.exists():
        return False
    for debris in app_dir.parent.glob(".history-*"):  # a migration that died
        shutil.rmtree(debris, ignore_errors=True)
    old = app_dir / ".git"
    try:
        is_repo = stat.S_ISDIR(old.lstat().st_mode)
    except FileNotFoundError:
        is_repo = False
    if not is_repo:
        create(app_dir, "History started (no earlier history found)")
        return True
    staging = Path(tempfile.mkdtemp(prefix=".history-", dir=app_dir.parent))
    try:
        quarantine = staging / "old.git"
        _init_bare(quarantine)
        _copy_objects(app_dir, quarantine / "objects")
        main = _read_id(app_dir, ".git/refs/heads/main") or _packed_main(app_dir)
        redo = _read_ids(app_dir, ".git/reactbox-redo")
        pending = _read_pending(app_dir)
        new = staging / "history.git"
        _init_bare(new)
        fetched = False
        if main:
            refs = {"refs/heads/main": main, **{f"refs/redo/{i}": s for i, s in enumerate(redo)}}
            for ref, sha in refs.items():
                _git(quarantine, "update-ref", ref, sha)
            try:
                _git(
                    new,
                    "-c", "fetch.fsckObjects=true",
                    "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                    str(quarantine), "+refs/heads/main:refs/heads/main", "+refs/redo/*:refs/redo/*",
                )  # fmt: skip
                fetched = True
            except subprocess.CalledProcessError:
                fetched = False
        if fetched:
            if redo:
                (new / "reactbox-redo").write_text("".join(f"{s}\n" for s in redo))
            if pending:
                (new / "reactbox-change").write_text(json.dumps(pending))
            os.rename(new, gdir)
        else:  # nothing usable: the history starts from the files as they are
            shutil.rmtree(new)
            create(app_dir, "History started (the earlier history could not be read)")
        shutil.rmtree(old, ignore_errors=True)  # rmtree never follows links
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


_MAX_OLD_OBJECT = 256 << 20
"""A larger object file is not taken (a history it breaks starts afresh instead)."""
_OBJECT_RE = re.compile(r"^(?:[0-9a-f]{2}/[0-9a-f]{38}|pack/pack-[0-9a-f]{40}\.(?:pack|idx))$")


def _copy_objects(app_dir: Path, dest: Path) -> None:
    root = app_dir / ".git" / "objects"
    try:
        entries = worktree.walk(root, lambda rel: False, max_files=1_000_000)
        for entry in entries:
            if not _OBJECT_RE.match(entry.path) or entry.stat.st_size > _MAX_OLD_OBJECT:
                continue  # info/alternates and anything else: not data we take
            target = dest / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(entry.read(_MAX_OLD_OBJECT))
    except (FileNotFoundError, NotADirectoryError, worktree.NotAFile):
        return


def _read_id(app_dir: Path, rel: str) -> str | None:
    try:
        text = worktree.read_bytes(app_dir, rel, 4096)
    except (worktree.NotAFile, OSError):
        return None
    sha = (text or b"").decode("ascii", "replace").strip()
    return sha if _SHA_RE.match(sha) else None


def _read_ids(app_dir: Path, rel: str) -> list[str]:
    try:
        text = worktree.read_bytes(app_dir, rel, 1 << 16) or b""
    except (worktree.NotAFile, OSError):
        return []
    return [s for s in text.decode("ascii", "replace").split() if _SHA_RE.match(s)]


def _packed_main(app_dir: Path) -> str | None:
    for sha in _read_ids(app_dir, ".git/packed-refs"):
        return sha  # the only ref an older version wrote was main
    return None


def _read_pending(app_dir: Path) -> dict | None:
    try:
        raw = worktree.read_bytes(app_dir, ".git/reactbox-change", 1 << 16)
        pending = json.loads(raw) if raw else None
    except (worktree.NotAFile, OSError, ValueError):
        return None
    if not isinstance(pending, dict) or not _SHA_RE.match(str(pending.get("restore_to"))):
        return None
    record = pending.get("record")
    return {
        "restore_to": pending["restore_to"],
        "what": str(pending.get("what", "a change"))[:200],
        "record": record if isinstance(record, dict) else None,
    }


# -- changes, and repair after a crash -----------------------------------------------------


def _marker(app_dir: Path) -> Path:
    return git_dir(app_dir) / "reactbox-change"


def _redo_file(app_dir: Path) -> Path:
    return git_dir(app_dir) / "reactbox-redo"


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
    """``begin`` and ``end`` around a block, holding the write lock; on an error the
    project goes back at once."""
    with writing(app_dir):
        begin(app_dir, restore_to, what)
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):  # if this fails too, the next start repairs
                rollback(app_dir)
            raise
        end(app_dir)


def pending(app_dir: Path) -> dict | None:
    try:
        return json.loads(_marker(app_dir).read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # cut short while being written: the change had not begun
        _marker(app_dir).unlink()
        return None


def rollback(app_dir: Path) -> dict | None:
    """Undo a change that did not ``end``; what it was, if there was one."""
    with writing(app_dir):
        undone = pending(app_dir)
        if undone is not None:
            reset(app_dir, undone["restore_to"])
            _marker(app_dir).unlink()
        return undone


def repair(app_dir: Path) -> dict | None:
    """At start-up, before anyone writes: clear what a dead server left (git's locks in
    the history, our temporary files in the work tree) and undo its unfinished change."""
    gdir = git_dir(app_dir)
    if not gdir.is_dir():
        return None
    for lock in _REF_LOCKS:
        (gdir / lock).unlink(missing_ok=True)
    worktree.remove_temporaries(app_dir, _skip_dir)
    return rollback(app_dir)


# -- the history ---------------------------------------------------------------------------


def head(app_dir: Path) -> str:
    return git(app_dir, "rev-parse", "HEAD").strip()


def commit_all(app_dir: Path, message: str) -> str | None:
    """Commit every change in the work tree; the new sha, or None if there was none."""
    with writing(app_dir):
        parent = head(app_dir)
        changed, removed = _changes(app_dir, parent)
        if not changed and not removed:
            return None
        sha = _import(app_dir, "refs/heads/main", message, parent, changed, removed)
        _redo_file(app_dir).unlink(missing_ok=True)
        git(app_dir, "gc", "--auto", "--quiet")
        return sha


def squash(app_dir: Path, base: str, message: str) -> str:
    """Make every commit since ``base`` one commit on top of it (the same files):
    a change that took several steps is undone and redone as one."""
    with writing(app_dir):
        tree, base_tree = git(app_dir, "rev-parse", "HEAD^{tree}", f"{base}^{{tree}}").split()
        if tree == base_tree:
            sha = base  # the steps came to nothing: no empty commit
        else:
            sha = git(app_dir, "commit-tree", tree, "-p", base, "-m", message).strip()
        git(app_dir, "update-ref", "refs/heads/main", sha)
        return sha


def log(app_dir: Path, limit: int = 200) -> list[Commit]:
    out = git(app_dir, "log", f"-{limit}", "--format=%H%x00%ct%x00%s", "main")
    commits = []
    for line in out.splitlines():
        sha, when, message = line.split("\x00", 2)
        commits.append(Commit(sha, message, int(when)))
    return commits


def reset(app_dir: Path, sha: str) -> None:
    """Make the work tree's tracked files those of ``sha`` and move ``main`` there (as
    ``git reset --hard``: files the history does not track are left alone)."""
    with writing(app_dir):
        _check_out(app_dir, sha)
        git(app_dir, "update-ref", "refs/heads/main", sha)


def _check_out(app_dir: Path, sha: str) -> None:
    """Make the work tree's tracked files those of ``sha`` (``main`` stays)."""
    with writing(app_dir):
        old = _tree(app_dir, "HEAD")
        target = _tree(app_dir, sha)
        work = _snapshot(app_dir)
        wanted = {
            p: v for p, v in target.items() if p not in work or (work[p].mode, work[p].blob) != v
        }
        blobs = _blobs(app_dir, {blob for _, blob in wanted.values()})
        for path, (mode, blob) in sorted(wanted.items()):
            worktree.write_bytes(app_dir, path, blobs[blob], executable=mode == "100755")
        for path in sorted(set(old) - set(target)):
            worktree.remove(app_dir, path)


def _blobs(app_dir: Path, ids: set[str]) -> dict[str, bytes]:
    if not ids:
        return {}
    raw = _git(
        git_dir(app_dir), "cat-file", "--batch", input="".join(f"{i}\n" for i in ids).encode()
    )
    out, pos = {}, 0
    while pos < len(raw):
        eol = raw.index(b"\n", pos)
        sha, *found = raw[pos:eol].decode().split()
        if len(found) != 2:
            raise HistoryError(f"The history lacks the object {sha}: it is damaged.")
        start, size = eol + 1, found[1]
        out[sha] = raw[start : start + int(size)]
        pos = start + int(size) + 1
    return out


def undo(app_dir: Path) -> Commit:
    """Step back one commit; return the commit now at HEAD."""
    with writing(app_dir):
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
    with writing(app_dir):
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
    try:
        if end is None:
            end = _work_tree_commit(app_dir)
        return git(
            app_dir, "diff", "--no-color", "--no-ext-diff", "--no-textconv", start, end, "--"
        )
    except subprocess.CalledProcessError as exc:
        raise UserError(f"Cannot diff {start}..{end or 'work tree'}: unknown revision.") from exc


def changed_paths(app_dir: Path, start: str, end: str) -> list[str]:
    """The files that differ between two commits."""
    out = git(app_dir, "diff", "--name-only", "--no-renames", "-z", start, end, "--")
    return sorted(p for p in out.split("\0") if p)


def _work_tree_commit(app_dir: Path) -> str:
    """A commit of the work tree as it is (off ``main``), to diff against."""
    with writing(app_dir):
        parent = head(app_dir)
        changed, removed = _changes(app_dir, parent)
        if not changed and not removed:
            return parent
        return _import(app_dir, "refs/reactbox/work-tree", "Work tree", parent, changed, removed)


# -- the timeline: what made each change, restoring a point, named points ---------------

KINDS = (
    (re.compile(r"^Import uploaded app"), "upload"),
    (re.compile(r"^AI: (?P<detail>.*)"), "ai-edit"),
    (re.compile(r"^Save (?P<detail>.+) in the editor$"), "editor-save"),
    (re.compile(r"^(?:Edit|Delete|Rename) (?P<detail>.+) by hand$"), "hand-edit"),
    (re.compile(r"^Upload (?P<detail>.+)"), "file-upload"),
    (re.compile(r"^Restore to (?P<detail>.+)"), "restore"),
    (re.compile(r"^(?:Manual changes|Changes before a hand edit)$"), "outside"),
    (re.compile(r"^Upgrade "), "upgrade"),
)
"""What made a change, read from its message (so older histories read the same):
the upload, an AI edit (its instruction), a save in JupyterLab's editor, a hand
edit from the notebook or the API, a file uploaded into the project, a restore,
changes made outside (the app's own code, a terminal), an upgrade on request."""
POINT_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,80}$")
MAX_POINTS = 100


def kind_of(message: str) -> tuple[str, str]:
    """(kind, detail) of a change's message; ('change', '') for one of no known kind."""
    for pattern, kind in KINDS:
        match = pattern.match(message)
        if match:
            return kind, match.groupdict().get("detail") or ""
    return "change", ""


def timeline(app_dir: Path, limit: int = 200) -> list[dict]:
    """The project's changes, newest first: sha, message, time, what made it (``kind``
    and ``detail``: an AI edit's instruction, a file), the files it changed, and the
    names given to it."""
    out = git(
        app_dir, "log", f"-{limit}", "--format=%x01%H%x00%ct%x00%s", "--name-only",
        "--no-renames", "main",
    )  # fmt: skip
    named: dict[str, list[str]] = {}
    for point in points(app_dir):
        named.setdefault(point["sha"], []).append(point["name"])
    entries = []
    for record in out.split("\x01")[1:]:
        head_line, _, names = record.partition("\n")
        sha, when, message = head_line.split("\x00", 2)
        kind, detail = kind_of(message)
        entries.append({
            "sha": sha, "message": message, "time": int(when), "kind": kind,
            "detail": detail, "files": [n for n in names.splitlines() if n],
            "points": named.get(sha, []),
        })  # fmt: skip
    return entries


def resolve(app_dir: Path, rev: str) -> str:
    """The commit ``rev`` names: a point's name, a sha (or its first 7 or more
    characters) or ``HEAD~N``; a UserError if none."""
    for point in points(app_dir):
        if point["name"] == rev:
            return point["sha"]
    if not _REV_RE.match(rev):
        raise NoSuchPoint(f"{rev!r} is neither a named point nor a revision (a sha, HEAD~N).")
    try:
        return git(app_dir, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip()
    except subprocess.CalledProcessError:
        raise NoSuchPoint(f"The project's history has no {rev!r}.") from None


def restore(app_dir: Path, rev: str) -> Commit:
    """Make the app as it was at ``rev``, as one new change (so Undo takes the restore
    back); the commit now at HEAD."""
    with writing(app_dir):
        sha = resolve(app_dir, rev)
        commit_all(app_dir, "Manual changes")
        before = head(app_dir)
        label = rev if not _REV_RE.match(rev) else sha[:7]
        when = git(app_dir, "log", "-1", "--format=%s", sha).strip()
        with change(app_dir, before, f"restore to {label}"):
            _check_out(app_dir, sha)
            made = commit_all(app_dir, f"Restore to {label} ({when[:60]})")
        if made is None:
            raise HistoryError(f"The app is already as it was at {label}.")
        return log(app_dir, 1)[0]


def _points_file(app_dir: Path) -> Path:
    return git_dir(app_dir) / "reactbox-points.json"


def points(app_dir: Path) -> list[dict]:
    """The named points, newest first: name, sha, time named."""
    try:
        kept = json.loads(_points_file(app_dir).read_text())
    except (FileNotFoundError, ValueError):
        return []
    return sorted(kept, key=lambda p: p["time"], reverse=True)


def name_point(app_dir: Path, name: str, rev: str = "HEAD") -> dict:
    """Give the change ``rev`` a name ("before the redesign"); a name given before is
    moved to it."""
    name = " ".join(name.split())
    if not POINT_NAME.match(name):
        raise UserError("A point's name is 1 to 80 characters, with no control characters.")
    with writing(app_dir):
        sha = resolve(app_dir, rev)
        kept = [p for p in points(app_dir) if p["name"] != name]
        if len(kept) >= MAX_POINTS:
            raise UserError(f"A project keeps at most {MAX_POINTS} named points; remove one.")
        point = {"name": name, "sha": sha, "time": time.time()}
        _write_points(app_dir, [point, *kept])
        return point


def remove_point(app_dir: Path, name: str) -> None:
    with writing(app_dir):
        kept = points(app_dir)
        left = [p for p in kept if p["name"] != name]
        if len(left) == len(kept):
            raise NoSuchPoint(f"No point is named {name!r}.")
        _write_points(app_dir, left)


def _write_points(app_dir: Path, kept: list[dict]) -> None:
    path = _points_file(app_dir)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(kept))
    os.replace(tmp, path)
