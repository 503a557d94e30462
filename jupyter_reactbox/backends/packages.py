"""Package folders of an owner's npm installs, kept by integrity: a lockfile no
install has seen, whose packages earlier installs all fetched, is assembled from
copies of them, and no package manager runs.

Only trees that npm alone wrote are kept: installs with lifecycle scripts off
(the default), from a lockfile whose every package is a registry tarball pinned
by its integrity, so no code but npm's ran while the tree was made, and every
folder is the extraction of the tarball that integrity names.  The store takes
them from the install's staging tree (or the kept copy of it) before any preview
has seen them, as the ``node_modules`` cache does; a project gets copies, never
links, for its dev server may write into its ``node_modules``.

What npm does beyond extracting, the assembly does too: folders at the
lockfile's paths, ``node_modules/.bin`` links (and the bin targets executable,
as they were in the tree they came from), and the hidden lockfile
(``node_modules/.package-lock.json``) that a later ``npm install`` reads.  Any
lockfile it cannot reproduce exactly (workspaces, links, bundled dependencies,
overrides, a lockfile out of step with ``package.json``, a package missing from
the store) is left to npm.

Lockfiles are the app's, and attacker-written: every path and bin name is
checked before anything is made from it, and nothing is written outside the
target.  All functions block (file work) and are called on threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as _platform
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import NotAPackage
from .modules import prune_lru

HIDDEN_LOCKFILE = ".package-lock.json"

_SEGMENT = re.compile(r"^(?:@[A-Za-z0-9._~-]+/)?[A-Za-z0-9_~-][A-Za-z0-9._~-]*$")
"""A folder name npm installs a package under (scoped or not); never ``.``/``..``."""
_BIN_NAME = re.compile(r"^[A-Za-z0-9_~@+-][A-Za-z0-9._~@+-]*$")
_INTEGRITY = re.compile(r"^sha512-[A-Za-z0-9+/]{86}==$")
_UNSUPPORTED = ("link", "inBundle", "extraneous")
"""Entries npm makes in ways other than extracting a tarball at their path."""
_DEPENDENCY_FIELDS = (
    "dependencies",
    "devDependencies",
    "optionalDependencies",
    "peerDependencies",
)


@dataclass(frozen=True)
class Platform:
    """What npm compares a package's ``os``, ``cpu`` and ``libc`` with."""

    os: str
    cpu: str
    libc: str

    @classmethod
    def here(cls) -> Platform:
        """This machine's, as Node names it (the sandboxes run on its kernel and CPU)."""
        machine = _platform.machine().lower()
        cpu = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "armv7l": "arm"}.get(
            machine, machine
        )
        libc = "glibc" if _platform.libc_ver()[0] == "glibc" else "musl"
        return cls("linux", cpu, libc)

    def accepts(self, meta: dict) -> bool:
        """Whether npm installs a package with this ``os``/``cpu``/``libc`` here."""
        return all(
            _allowed(meta.get(key), value)
            for key, value in (("os", self.os), ("cpu", self.cpu), ("libc", self.libc))
        )


def _allowed(spec: object, value: str) -> bool:
    """npm's rule for ``os``/``cpu``/``libc`` lists: ``!x`` excludes, and if any
    entry is positive the value must be one of them."""
    if spec is None:
        return True
    items = [spec] if isinstance(spec, str) else spec
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        return False
    if f"!{value}" in items:
        return False
    positive = [i for i in items if not i.startswith("!")]
    return not positive or value in positive


def package_path(path: object) -> PurePosixPath | None:
    """A lockfile key (``node_modules/a/node_modules/@s/b``) as a relative path, or
    None when it is anything else (``..``, absolute, a link's target, a workspace)."""
    if not isinstance(path, str) or not path.startswith("node_modules/"):
        return None
    parts = path.split("/node_modules/")
    parts[0] = parts[0].removeprefix("node_modules/")
    if not all(_SEGMENT.match(p) for p in parts):
        return None
    return PurePosixPath(path)


def _bin_target(target: object) -> PurePosixPath | None:
    """A bin's file inside its package, or None if it points anywhere else."""
    if not isinstance(target, str) or not target or "\\" in target or "\0" in target:
        return None
    parts = [p for p in PurePosixPath(target).parts if p != "."]
    if not parts or target.startswith("/") or any(p == ".." for p in parts):
        return None
    return PurePosixPath(*parts)


@dataclass
class Assembly:
    """What an assembly makes: package folders (store key -> path) and bin links."""

    folders: list[tuple[str, PurePosixPath]] = field(default_factory=list)
    bins: list[tuple[PurePosixPath, str, PurePosixPath]] = field(default_factory=list)
    """(the ``.bin`` folder, the command's name, its target relative to that folder)"""
    entries: dict[str, dict] = field(default_factory=dict)
    """The hidden lockfile's packages."""
    missing: list[str] = field(default_factory=list)
    """Packages npm installs that the store lacks (only in a partial plan)."""
    header: dict = field(default_factory=dict)


def key(integrity: str) -> str:
    return hashlib.sha256(integrity.encode()).hexdigest()


def lockfile_of(files: dict[str, bytes]) -> dict | None:
    """The npm lockfile among an install's inputs, parsed; None without one."""
    for name in ("npm-shrinkwrap.json", "package-lock.json"):
        data = files.get(name)
        if data is None:
            continue
        try:
            lock = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return None
        return lock if isinstance(lock, dict) else None
    return None


def in_step(manifest: dict, lock: dict) -> bool:
    """Whether ``npm ci`` takes the lockfile as it is: its root entry asks for what
    package.json asks for, and nothing (workspaces, overrides, bundled dependencies)
    makes npm build the tree another way."""
    packages = lock.get("packages")
    if lock.get("lockfileVersion") not in (2, 3) or not isinstance(packages, dict):
        return False
    root = packages.get("")
    if not isinstance(root, dict):
        return False
    if any(k in manifest for k in ("workspaces", "overrides", "bundleDependencies",
                                   "bundledDependencies")):  # fmt: skip
        return False
    return all((manifest.get(f) or {}) == (root.get(f) or {}) for f in _DEPENDENCY_FIELDS)


def installed(entries: dict[str, dict], here: Platform) -> list[str]:
    """The lockfile's packages ``npm ci`` installs on ``here``: those the root reaches
    through dependencies, never through an optional one that does not run here
    (so neither the native binding for another CPU nor what only it needs)."""
    skipped = {
        path
        for path, meta in entries.items()
        if path and (meta.get("optional") or meta.get("devOptional")) and not here.accepts(meta)
    }
    reached, todo = [], [""]
    seen = {""}
    while todo:
        path = todo.pop()
        if path:
            reached.append(path)
        meta = entries.get(path) or {}
        for field_ in _DEPENDENCY_FIELDS:
            deps = meta.get(field_)
            if field_ == "devDependencies" and path:
                continue  # a package's own dev dependencies are never installed
            for name in deps if isinstance(deps, dict) else ():
                found = _resolve(entries, path, name)
                if found is not None and found not in seen and found not in skipped:
                    seen.add(found)
                    todo.append(found)
    return reached


def _resolve(entries: dict, path: str, name: str) -> str | None:
    """Where Node finds ``name`` required from the package at ``path``: its own
    node_modules, then each enclosing one up to the root's."""
    while True:
        candidate = f"{path}/node_modules/{name}" if path else f"node_modules/{name}"
        if candidate in entries:
            return candidate
        if not path:
            return None
        cut = path.rfind("/node_modules/")
        path = path[:cut] if cut >= 0 else ""


class PackageStore:
    """``<root>/<sha256 of integrity>/``: one folder per package tarball, at most
    ``keep`` of them (the least recently used go first)."""

    def __init__(self, root: Path, keep: int = 20000):
        self.root = Path(root)
        self.keep = keep

    def _entry(self, integrity: str) -> Path:
        return self.root / key(integrity)

    # -- keeping --------------------------------------------------------------------

    def save(self, tree: Path, *, link: bool = False) -> int:
        """Keep the package folders of ``tree`` (a ``node_modules`` that npm alone
        wrote, with its hidden lockfile) that the store lacks; hard links when
        ``link`` (``tree`` is itself a kept copy no one writes), else copies.
        Returns how many were added."""
        if self.keep <= 0:
            return 0
        try:
            hidden = json.loads((tree / HIDDEN_LOCKFILE).read_bytes())
        except (OSError, ValueError):
            return 0
        packages = hidden.get("packages") if isinstance(hidden, dict) else None
        if not isinstance(packages, dict):
            return 0
        kept = {}
        for path, meta in packages.items():
            rel = package_path(path)
            integrity = meta.get("integrity") if isinstance(meta, dict) else None
            if rel is None or not isinstance(integrity, str) or not _INTEGRITY.match(integrity):
                # A git or file dependency: its `prepare` script may have run, even
                # with scripts off, and written anywhere in the tree.
                return 0
            if not any(meta.get(flag) for flag in _UNSUPPORTED):
                kept[rel] = integrity
        self.root.mkdir(parents=True, exist_ok=True)
        added = 0
        for rel, integrity in kept.items():
            entry = self._entry(integrity)
            if entry.is_dir():
                continue
            source = tree.parent / rel
            staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
            try:
                if not _copy_package(source, staging / "p", link=link):
                    continue  # a link or a special file: not what npm extracts
                os.rename(staging / "p", entry)
                added += 1
            except OSError:
                if not entry.is_dir():
                    raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        if added:
            self.prune()
        return added

    def prune(self) -> None:
        """Remove the least recently used packages beyond ``keep``, and interrupted
        copies."""
        prune_lru(self.root, self.keep)

    # -- assembling -----------------------------------------------------------------

    def plan(
        self, manifest: dict, lock: dict, here: Platform, *, partial: bool = False
    ) -> Assembly | None:
        """How to make the tree ``npm ci`` would make for ``lock`` from the store;
        None when npm must do it all (see the module's docstring).  With
        ``partial``, packages the store lacks (and those nested in them) are left
        out and listed in ``missing``, for npm to add."""
        if self.keep <= 0 or not in_step(manifest, lock):
            return None
        entries = lock["packages"]
        for path, meta in entries.items():
            if path and (package_path(path) is None or not isinstance(meta, dict)):
                return None
        wanted = installed(entries, here)
        seen_bins: set[tuple[PurePosixPath, str]] = set()
        bins: dict[str, list[tuple[PurePosixPath, str, PurePosixPath]]] = {}
        for path in wanted:
            meta = entries[path]
            if any(meta.get(flag) for flag in _UNSUPPORTED):
                return None
            if not here.accepts(meta):
                return None  # npm refuses (EBADPLATFORM): let it say so
            integrity = meta.get("integrity")
            if not isinstance(integrity, str) or not _INTEGRITY.match(integrity):
                return None
            commands = meta.get("bin") or {}
            if not isinstance(commands, dict):
                return None
            # The node_modules folder the package is in gets its commands in .bin.
            folder, _, name_in_it = path.rpartition("node_modules/")
            bin_dir = PurePosixPath(folder, "node_modules", ".bin")
            for name, target in commands.items():
                inside = _bin_target(target)
                if not isinstance(name, str) or not _BIN_NAME.match(name) or inside is None:
                    return None
                if (bin_dir, name) in seen_bins:
                    return None  # two packages claim one command: npm's choice
                seen_bins.add((bin_dir, name))
                link = PurePosixPath("..", name_in_it, inside)
                bins.setdefault(path, []).append((bin_dir, name, link))
        lacking = {p for p in wanted if not self._entry(entries[p]["integrity"]).is_dir()}
        if lacking and not partial:
            return None
        assembly = Assembly(header={
            k: lock[k] for k in ("name", "version") if isinstance(lock.get(k), str)
        })  # fmt: skip
        left: set[str] = set()
        for path in sorted(wanted, key=lambda p: p.count("/")):  # parents first
            if path in lacking or path.rpartition("/node_modules/")[0] in left:
                left.add(path)  # npm extracts it, and what is nested in it
                assembly.missing.append(path)
                continue
            assembly.folders.append((key(entries[path]["integrity"]), PurePosixPath(path)))
            assembly.entries[path] = entries[path]
            assembly.bins.extend(bins.get(path, ()))
        return assembly

    def assemble(
        self, assembly: Assembly, target: Path, owner: tuple[int, int] | None = None
    ) -> None:
        """Make ``target/node_modules`` (``target`` a new, empty folder) hold the
        tree, every file and folder of it ``owner``'s (uid, gid) when given."""
        now = time.time()
        modules = target / "node_modules"
        _make_dir(modules, owner)
        for digest, rel in assembly.folders:
            entry = self.root / digest
            _make_dir((target / rel).parent, owner)  # a scope's or a nested node_modules
            _copy_package(entry, target / rel, link=False, owner=owner)
            os.utime(entry, (now, now))  # recently used: pruned last
        for bin_dir, name, link in assembly.bins:
            _make_dir(target / bin_dir, owner)
            os.symlink(link, target / bin_dir / name)
            if owner:
                os.lchown(target / bin_dir / name, *owner)
            command = target / bin_dir / link
            st = os.lstat(command) if os.path.lexists(command) else None
            if st is not None and _is_regular(st):  # npm makes every bin executable
                os.chmod(command, st.st_mode | 0o111)
        hidden = {**assembly.header, "lockfileVersion": 3, "requires": True,
                  "packages": assembly.entries}  # fmt: skip
        (modules / HIDDEN_LOCKFILE).write_text(json.dumps(hidden, indent=2) + "\n")
        if owner:
            os.chown(modules / HIDDEN_LOCKFILE, *owner)


def _make_dir(path: Path, owner: tuple[int, int] | None) -> None:
    """``mkdir -p`` whose new folders are ``owner``'s."""
    if path.is_dir():
        return
    _make_dir(path.parent, owner)
    path.mkdir()
    if owner:
        os.chown(path, *owner)


def _copy_package(
    source: Path, dest: Path, *, link: bool, owner: tuple[int, int] | None = None
) -> bool:
    """Copy a package folder (without its own ``node_modules``) to ``dest``, keeping
    modes; hard links instead of copies when ``link``; files and folders made
    ``owner``'s when given.  False, with nothing made, if it holds anything but
    folders and regular files (npm extracts nothing else)."""

    def fail(exc: OSError) -> None:
        raise exc  # a folder that vanished mid-copy must not make a partial package

    try:
        for folder, dirnames, filenames, dfd in os.fwalk(
            source, follow_symlinks=False, onerror=fail
        ):
            here = Path(folder)
            if here == source and "node_modules" in dirnames:
                dirnames.remove("node_modules")
            out = dest / here.relative_to(source)
            out.mkdir()
            os.chmod(out, os.stat(dfd).st_mode & 0o7777)
            if owner:
                os.chown(out, *owner)
            links = [d for d in dirnames if os.path.islink(os.path.join(folder, d))]
            for name in filenames + links:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if not _is_regular(st):
                    raise NotAPackage(name)
                if link:
                    os.link(name, out / name, src_dir_fd=dfd, follow_symlinks=False)
                else:
                    _copy_file(name, dfd, out / name, st, owner)
    except NotAPackage:
        shutil.rmtree(dest, ignore_errors=True)
        return False
    return True


def _is_regular(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)


def _copy_file(
    name: str, dfd: int, dest: Path, st: os.stat_result, owner: tuple[int, int] | None
) -> None:
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
    try:
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            remaining = st.st_size
            while remaining > 0:
                sent = os.sendfile(out, src, None, remaining)
                if sent == 0:
                    break
                remaining -= sent
            os.fchmod(out, st.st_mode & 0o7777)
            if owner:
                os.fchown(out, *owner)
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(out)
    finally:
        os.close(src)
