"""Workspaces (monorepos): one install for several packages of one repository.

A workspace root's ``package.json`` names its members by glob in ``workspaces``
(npm, yarn, bun: a list, or ``{"packages": [...]}``), or its
``pnpm-workspace.yaml`` does in ``packages``.  The project is the whole root; the
app the preview serves is one member (``Project.member``), and every member's
``package.json`` goes to the install beside the root's manifest and lockfile, so
``workspace:*`` and ``file:`` links to members resolve as they do for the
repository's authors.

Globs are matched one path segment at a time (``*`` never crosses a ``/``; ``**``
crosses any number), ``!`` excludes, as the managers do.  Everything here reads
the project as data.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import worktree

PNPM_FILE = "pnpm-workspace.yaml"
MAX_DEPTH = 4
"""How deep below the root a member may be (``apps/web``, ``packages/ui/react``)."""
MAX_MEMBERS = 200
_SKIPPED = frozenset({"node_modules", ".git"})


def manifest(member: str) -> str:
    """The path of a member's ``package.json`` ('': the project's own)."""
    return f"{member}/package.json" if member else "package.json"


def patterns(pkg: Any, pnpm_yaml: bytes | None = None) -> list[str]:
    """The member globs a root (its parsed ``package.json``, its pnpm-workspace.yaml)
    declares (``[]``: not a workspace root)."""
    found: Any = None
    if isinstance(pkg, dict):
        found = pkg.get("workspaces")
        if isinstance(found, dict):
            found = found.get("packages")
    globs = [g for g in found if isinstance(g, str)] if isinstance(found, list) else []
    if pnpm_yaml:
        globs += _pnpm_packages(pnpm_yaml.decode("utf-8", "replace"))
    return [g for g in (_clean(g) for g in globs) if g]


def _pnpm_packages(text: str) -> list[str]:
    """The ``packages:`` list of a pnpm-workspace.yaml (block or flow style)."""
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            key, _, rest = line.partition(":")
            inside = key.strip() == "packages"
            if inside and rest.strip().startswith("["):
                out += [s.strip().strip("'\"") for s in rest.strip()[1:].split("]")[0].split(",")]
                inside = False
            continue
        item = re.match(r"^\s*-\s*(.+?)\s*(?:#.*)?$", line)
        if inside and item:
            out.append(item.group(1).strip("'\""))
    return out


def _clean(glob: str) -> str:
    glob = glob.strip()
    negated = glob.startswith("!")
    glob = glob.lstrip("!").strip().removeprefix("./").rstrip("/")
    return ("!" if negated else "") + glob if glob and glob != "." else ""


def matches(folder: str, globs: Iterable[str]) -> bool:
    """Whether the folder (relative, '/'-separated) is a member by these globs."""
    included = excluded = False
    for glob in globs:
        negated = glob.startswith("!")
        if _glob_match(folder, glob.lstrip("!")):
            if negated:
                excluded = True
            else:
                included = True
    return included and not excluded


def _glob_match(folder: str, glob: str) -> bool:
    return _match_parts(folder.split("/"), glob.split("/"))


def _match_parts(parts: list[str], wanted: list[str]) -> bool:
    if not wanted:
        return not parts
    if wanted[0] == "**":
        return any(_match_parts(parts[i:], wanted[1:]) for i in range(len(parts) + 1))
    return (
        bool(parts)
        and fnmatch.fnmatchcase(parts[0], wanted[0])
        and _match_parts(parts[1:], wanted[1:])
    )


def root_patterns(app_dir: Path) -> list[str]:
    """The member globs of the project's root (``[]`` if it is no workspace root)."""
    try:
        pkg = worktree.read_json(app_dir, "package.json")
    except (OSError, ValueError, UnicodeDecodeError, worktree.NotAFile):
        pkg = None
    try:
        pnpm = worktree.read_bytes(app_dir, PNPM_FILE, worktree.MAX_MANIFEST)
    except worktree.NotAFile:
        pnpm = None
    return patterns(pkg, pnpm)


def members(app_dir: Path) -> list[str]:
    """The member folders of the project's workspace, sorted ('' is never one)."""
    globs = root_patterns(app_dir)
    if not globs:
        return []

    def skip(folder: str) -> bool:
        name = folder.rpartition("/")[2]
        return name in _SKIPPED or name.startswith(".") or folder.count("/") >= MAX_DEPTH

    found = []
    for entry in worktree.walk(app_dir, skip):
        folder, _, name = entry.path.rpartition("/")
        if name == "package.json" and folder and matches(folder, globs):
            found.append(folder)
            if len(found) >= MAX_MEMBERS:
                break
    return sorted(found)


def member_manifests(app_dir: Path) -> dict[str, bytes]:
    """``<member>/package.json`` -> its bytes, for every member (read as data)."""
    out = {}
    for folder in members(app_dir):
        data = worktree.read_bytes(app_dir, manifest(folder), worktree.MAX_MANIFEST)
        if data is not None:
            out[manifest(folder)] = data
    return out
