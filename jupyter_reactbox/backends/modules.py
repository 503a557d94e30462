"""Installed dependencies, reused: a ``node_modules`` cache keyed by the lockfile.

What decides the content of ``node_modules`` is the manifest, the lockfile,
the install command and the few settings allowed from ``.npmrc``
(``InstallInputs``); their hash (the *fingerprint*) names a finished install.
An install never runs in the project folder: the server copies those inputs
into a staging folder beside it, the install container sees only that, and the
finished tree is kept in the cache before it is moved into the project, so no
preview has touched what the cache keeps.  After an install, a copy of the tree is kept under
``<cache>/modules/<fingerprint>``; a project whose fingerprint is there (a
re-upload, a second project from the same template) gets a copy instead of an
install.  A copy, not hard links or a shared mount: a project's dev server
runs code nobody reviewed and may write into its ``node_modules``, and that
must never reach another project's files.

The copy is made ahead: after a tree is used, the server makes a *spare* copy of
it beside the kept one (at the lowest CPU priority, a few seconds later), and
the next project of that lockfile takes the spare by a rename, so no copy is on
a start's path.  A spare is the server's copy of the kept tree, in the cache
folder no sandbox sees; once taken it is that project's alone.

All functions here block (file work) and are called on threads.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .. import managers, workspaces, worktree

MARKER = ".reactbox-installed"
SPARE = "spare"
"""Beside a kept tree: a copy of it, ready to be moved into the next project."""


SETTINGS = frozenset(
    {"legacy-peer-deps", "strict-peer-deps", "engine-strict", "auto-install-peers",
     "strict-peer-dependencies", "shamefully-hoist", "install-strategy", "prefer-dedupe",
     "dedupe-peer-dependents", "resolution-mode", "include-workspace-root"}
)  # fmt: skip
"""``.npmrc`` keys an install honours: how the tree is laid out, never where packages
come from, what runs, or where anything is written."""
_SETTING_VALUE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class InstallInputs:
    """Everything an install is given, taken from the project as data by the server:
    the manifest and lockfiles (as bytes), and the allowed settings (as environment).
    Nothing else of the project reaches the install: no ``.npmrc`` beyond those
    keys, no ``.pnpmfile.cjs``, ``.yarnrc.yml``, ``.yarn/`` or ``.corepack.env``."""

    files: dict[str, bytes]
    settings: dict[str, str]
    argv: tuple[str, ...]

    @functools.cached_property
    def fingerprint(self) -> str:
        """The hash of what decides ``node_modules`` (lockfiles can be megabytes: once)."""
        h = hashlib.sha256(" ".join(self.argv).encode())
        for name, data in sorted(self.files.items()):
            h.update(name.encode() + b"\0" + data + b"\0")
        for key, value in sorted(self.settings.items()):
            h.update(f"{key}={value}\0".encode())
        return h.hexdigest()

    @property
    def env(self) -> dict[str, str]:
        return {"npm_config_" + k.replace("-", "_"): v for k, v in self.settings.items()}

    @property
    def members(self) -> list[str]:
        """The workspace members whose manifests the install is given (sorted)."""
        return sorted(name.rpartition("/")[0] for name in self.files if "/" in name)

    def write(self, folder: Path, registry: str) -> None:
        for name, data in self.files.items():
            target = folder / name  # names are worktree-checked relative paths
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(managers.point_lockfile_at(registry, name, data))


def install_inputs(
    app_dir: Path, argv: list[str], pins: dict[str, str] | None = None, manager: str = "npm"
) -> InstallInputs:
    files = managers.read_inputs(app_dir)
    files.update(workspaces.member_manifests(app_dir))
    if pins:
        files["package.json"] = pinned(files.get("package.json", b"{}"), pins, manager)
    return InstallInputs(files, _settings(app_dir), tuple(argv))


def pinned(manifest: bytes, pins: dict[str, str], manager: str) -> bytes:
    """``package.json`` with each package of ``pins`` at its version, for the app
    (its own dependency) and for every package that depends on it (an override:
    ``overrides`` for npm, ``resolutions`` for yarn, ``pnpm.overrides``)."""
    pkg = json.loads(manifest)
    for section in ("dependencies", "devDependencies", "optionalDependencies"):
        deps = pkg.get(section)
        if isinstance(deps, dict):
            deps.update({name: v for name, v in pins.items() if name in deps})
    if manager == "pnpm":
        pkg.setdefault("pnpm", {}).setdefault("overrides", {}).update(pins)
    else:
        pkg.setdefault("resolutions" if manager == "yarn" else "overrides", {}).update(pins)
    return json.dumps(pkg, indent=2).encode()


def _settings(app_dir: Path) -> dict[str, str]:
    try:
        raw = worktree.read_bytes(app_dir, ".npmrc", 1 << 16) or b""
    except worktree.NotAFile:
        return {}
    found = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        key, sep, value = line.strip().partition("=")
        key, value = key.strip(), value.strip()
        if sep and key in SETTINGS and _SETTING_VALUE.match(value):
            found[key] = value
    return found


def installed(app_dir: Path) -> str | None:
    """The fingerprint ``app_dir/node_modules`` was installed for, if any."""
    try:
        data = worktree.read_bytes(app_dir, f"node_modules/{MARKER}", 256)
    except (OSError, worktree.NotAFile):
        return None
    return None if data is None else data.decode("ascii", "replace")


def mark(app_dir: Path, fp: str) -> None:
    worktree.write_bytes(app_dir, f"node_modules/{MARKER}", fp.encode())


def _copy_tree(src: Path, dst: Path, *, idle: bool = False) -> None:
    """``cp -a`` (reflinks where the filesystem has them); shutil when cp is missing.
    ``idle``: at the lowest CPU priority (``nice``), for copies nothing waits on."""
    if shutil.which("cp"):
        nice = ["nice", "-n", "19"] if idle and shutil.which("nice") else []
        subprocess.run(
            [*nice, "cp", "-a", "--reflink=auto", "--", str(src), str(dst)],
            check=True,
            capture_output=True,
        )
    else:  # pragma: no cover - every supported host has GNU cp
        shutil.copytree(src, dst, symlinks=True)


class ModulesCache:
    """Finished ``node_modules`` trees of one owner, at most ``keep`` of them."""

    def __init__(self, root: Path, keep: int = 10):
        self.root = Path(root)
        self.keep = keep

    def _entry(self, fp: str) -> Path:
        return self.root / fp / "node_modules"

    def tree(self, fp: str) -> Path | None:
        """The kept tree installed for ``fp`` (never to be written), if there is one."""
        entry = self._entry(fp)
        return entry if self.keep > 0 and (entry / MARKER).is_file() else None

    def restore(self, fp: str, app_dir: Path) -> bool:
        """Give ``app_dir`` a copy of the tree installed for ``fp``; False if none is kept."""
        if self.keep <= 0:
            return False
        entry = self._entry(fp)
        if not (entry / MARKER).is_file():
            return False
        staging = Path(tempfile.mkdtemp(prefix=".modules-", dir=app_dir.parent))
        try:
            if not self._take_spare(fp, staging):
                _copy_tree(entry, staging / "node_modules")
            replace_tree(app_dir / "node_modules", staging / "node_modules")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        os.utime(entry.parent)  # recently used: pruned last
        return True

    def _take_spare(self, fp: str, staging: Path) -> bool:
        """Move the spare copy of ``fp``'s tree to ``staging/node_modules``: one
        rename, which only one taker can win.  False if there is none, or it is on
        another filesystem than the project."""
        try:
            os.rename(self.root / fp / SPARE, staging / "node_modules")
        except OSError:
            return False
        return True

    def make_spare(self, fp: str) -> bool:
        """Copy ``fp``'s kept tree beside it, for the next restore to take (at the
        lowest CPU priority): False if there is one already or nothing is kept."""
        entry = self._entry(fp)
        spare = self.root / fp / SPARE
        if self.keep <= 0 or spare.exists() or not (entry / MARKER).is_file():
            return False
        staging = Path(tempfile.mkdtemp(prefix=".spare-", dir=self.root))
        try:
            _copy_tree(entry, staging / "node_modules", idle=True)
            os.rename(staging / "node_modules", spare)  # a spare made meanwhile: ENOTEMPTY
        except (OSError, subprocess.CalledProcessError):
            return False
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return True

    def save(self, fp: str, app_dir: Path) -> None:
        """Keep a copy of ``app_dir/node_modules`` (installed for ``fp``), then prune."""
        if self.keep <= 0 or self._entry(fp).is_dir():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        try:
            _copy_tree(app_dir / "node_modules", staging / "node_modules")
            os.rename(staging, self.root / fp)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not self._entry(fp).is_dir():
                raise
        self.prune()

    def prune(self) -> None:
        """Remove the least recently used trees beyond ``keep``, and interrupted copies."""
        prune_lru(self.root, self.keep)


def prune_lru(root: Path, keep: int) -> None:
    """Keep the ``keep`` most recently used entries of ``root`` (by mtime); remove the
    rest, and interrupted copies (dot-names) older than an hour."""
    if not root.is_dir():
        return
    entries = []
    for child in root.iterdir():
        if child.name.startswith("."):
            if time.time() - child.stat().st_mtime > 3600:
                shutil.rmtree(child, ignore_errors=True)
            continue
        entries.append((child.stat().st_mtime, child))
    entries.sort(reverse=True)
    for _, child in entries[max(keep, 0) :]:
        shutil.rmtree(child, ignore_errors=True)


def place_member_trees(app_dir: Path, staging: Path, members: list[str]) -> None:
    """Move the ``node_modules`` an install made in workspace members' folders of
    ``staging`` into the same members of the work tree.  The work tree is walked
    one folder at a time without following links (``worktree.opened_dir``), so a
    member swapped for a link cannot send the tree anywhere else."""
    for member in members:
        made = staging / member / "node_modules"
        if made.is_symlink() or not made.is_dir():
            continue
        try:
            with worktree.opened_dir(app_dir, worktree.parts_of(member)) as dfd:
                doomed = f".node_modules-old-{os.getpid()}-{time.monotonic_ns()}"
                with contextlib.suppress(FileNotFoundError):
                    os.rename("node_modules", doomed, src_dir_fd=dfd, dst_dir_fd=dfd)
                    shutil.rmtree(doomed, dir_fd=dfd, ignore_errors=True)
                os.rename(made, "node_modules", dst_dir_fd=dfd)
        except (worktree.NotAFile, FileNotFoundError, NotADirectoryError):
            continue  # the member is gone (or is a link now): it gets no tree


def replace_tree(target: Path, new: Path) -> None:
    """Put ``new`` at ``target``, removing what was there (a link is removed, never
    followed)."""
    if target.is_symlink():
        target.unlink()
    elif target.exists():
        doomed = target.with_name(f".{target.name}-old-{os.getpid()}-{time.monotonic_ns()}")
        os.rename(target, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    os.rename(new, target)


def expected_packages(app_dir: Path) -> list[str]:
    """Folders an npm lockfile says an install creates (optional ones left out)."""
    for name in ("package-lock.json", "npm-shrinkwrap.json"):
        try:
            lock = worktree.read_json(app_dir, name)
        except (OSError, ValueError, worktree.NotAFile):
            continue
        packages = lock.get("packages") if isinstance(lock, dict) else None
        if not isinstance(packages, dict):
            return []
        return [
            path
            for path, meta in packages.items()
            if path.startswith("node_modules/")
            and isinstance(meta, dict)
            and not meta.get("optional")
            and not meta.get("link")
        ]
    return []


def count_present(app_dir: Path, folders: list[str]) -> int:
    """How many of ``folders`` hold a package.json now (install progress)."""
    return sum(1 for f in folders if worktree.is_file(app_dir, f"{f}/package.json"))


@dataclass(frozen=True)
class Usage:
    bytes: int
    files: int
    """Files, folders and links: what a filesystem spends an inode on."""


def disk_usage(root: Path, *, max_files: int = 0) -> Usage:
    """Bytes allocated under ``root`` (like ``du -x``) and how many entries it holds,
    links not followed, on ``root``'s filesystem only (a project's own filesystem,
    ``boxes``, counts as the blocks its image takes); the walk stops once it has
    seen more than ``max_files`` entries (when given), so a folder of millions costs
    a bounded walk."""
    total = files = 0
    try:
        device = os.stat(root).st_dev
    except OSError:
        return Usage(0, 0)
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    files += 1
                    if max_files and files > max_files:
                        return Usage(total, files)
                    if entry.is_dir(follow_symlinks=False) and st.st_dev == device:
                        stack.append(entry.path)
        except OSError:
            continue
    return Usage(total, files)
