"""Which framework an app uses, and how to serve it behind a prefix.

One file per framework (``vite.py``, ``cra.py``, ``nextjs.py``; ``refused.py``
for those recognised but not run), each a :class:`~.base.Framework`.  Another
package adds one through the entry point group ``jupyter_reactbox.frameworks``
(an entry point names a Framework).  Package managers (npm, yarn, pnpm) are
``managers.py``'s, for every framework.

The dev server must know its public base path: the app's asset URLs, client
routes and the HMR websocket are all built from it, so a plan takes the base
(and the port and support folder its backend chose) and gives the exact argv
and environment of the dev server.
"""

from __future__ import annotations

import functools
import re
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .. import managers, workspaces, worktree
from ..errors import UnsupportedApp
from . import cra, nextjs, refused, vite
from .base import COMPILED_SUFFIXES, AppPlan, Framework

__all__ = ["COMPILED_SUFFIXES", "SUPPORT_DIR", "AppPlan", "Framework", "detect", "get", "runnable"]

SUPPORT_DIR = Path(__file__).parent / "support"
"""jupyter-reactbox's own scripts for dev servers (launchers, a Vite plugin, a
Next.js preload); a backend shows them to the dev server read-only, at the path
it passes as ``{support}``."""

BUILT_IN = (
    vite.FRAMEWORK,
    cra.FRAMEWORK,
    nextjs.FRAMEWORK,
    refused.REACT_ROUTER,
    refused.ASTRO,
    refused.GATSBY,
)
ENTRY_POINT_GROUP = "jupyter_reactbox.frameworks"


@functools.cache
def registry() -> tuple[Framework, ...]:
    """Every framework, built in or installed, in the order they are tried."""
    found = {f.name: f for f in BUILT_IN}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        framework = point.load()
        if not isinstance(framework, Framework):
            raise TypeError(f"Entry point {point.name!r} of {ENTRY_POINT_GROUP} is not a Framework")
        found[framework.name] = framework
    return tuple(sorted(found.values(), key=lambda f: f.order))


@functools.cache
def _by_name() -> dict[str, Framework]:
    return {f.name: f for f in registry()}


def get(name: str | None) -> Framework | None:
    """The framework of this name (as a backend's record keeps it), or None.
    The preview proxy asks on every request: one dict lookup."""
    return _by_name().get(name or "")


def _dependencies(pkg: Any) -> dict:
    deps: dict = {}
    for key in ("dependencies", "devDependencies"):
        section = pkg.get(key) if isinstance(pkg, dict) else None
        if isinstance(section, dict):
            deps.update(section)
    return deps


def runnable(pkg: Any) -> bool:
    """Whether the parsed ``package.json`` ``pkg`` is an app's (to run, or to
    refuse with a reason); one that names no framework (a monorepo's root, a
    backend) is not."""
    deps = _dependencies(pkg)
    return any(name in deps for f in registry() for name in f.packages)


def detect(app_dir: Path, member: str = "", *, own_origin: bool = False) -> AppPlan:
    """Read ``package.json`` (and the lockfile) in ``app_dir`` and plan how to run it;
    ``member``: the app is that folder of the workspace at ``app_dir``; ``own_origin``:
    its preview is at ``/`` of an origin of its own (``root_only`` frameworks run)."""
    try:
        pkg = worktree.read_json(app_dir, workspaces.manifest(member))
    except FileNotFoundError as exc:
        where = f"in {member}/" if member else "at its top level"
        raise UnsupportedApp(f"The app has no package.json {where}.") from exc
    except worktree.NotAFile as exc:
        raise UnsupportedApp(f"package.json cannot be read: {exc}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnsupportedApp(f"package.json is not valid JSON: {exc}.") from exc
    if not isinstance(pkg, dict):
        raise UnsupportedApp("package.json must hold a JSON object.")
    deps = _dependencies(pkg)
    for framework in registry():
        package = next((p for p in framework.packages if p in deps), None)
        if package is None:
            continue
        if framework.refused:
            raise UnsupportedApp(framework.refused.format(package=package))
        if framework.root_only and not own_origin:
            raise UnsupportedApp(framework.root_only.format(package=package))
        root = pkg if not member else _root_manifest(app_dir)
        return AppPlan(
            framework, _manager(root, app_dir), companions=_companions(pkg), member=member
        )
    names = [repr(p) for f in registry() if not (f.refused or f.root_only) for p in f.packages]
    names = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
    raise UnsupportedApp(
        f"Cannot tell how to run this app: package.json lists none of {names} in "
        "dependencies or devDependencies. Add Vite (npm create vite@latest) or upload a "
        "create-react-app or Next.js project."
    )


def _root_manifest(app_dir: Path) -> dict:
    """A workspace root's manifest (its ``packageManager`` chooses for every member)."""
    try:
        root = worktree.read_json(app_dir, "package.json")
    except (OSError, ValueError, UnicodeDecodeError, worktree.NotAFile) as exc:
        raise UnsupportedApp(f"The workspace's package.json cannot be read: {exc}") from exc
    return root if isinstance(root, dict) else {}


_RUNNERS = re.compile(r"\b(?:concurrently|npm-run-all|run-p)\b")


def _companions(pkg: dict) -> bool:
    """Whether the app's dev (or start) script runs several commands at once."""
    scripts = pkg.get("scripts")
    if not isinstance(scripts, dict):
        return False
    return any(
        isinstance(s, str) and _RUNNERS.search(s)
        for s in (scripts.get("dev"), scripts.get("start"))
    )


def _manager(pkg: dict, app_dir: Path) -> managers.Manager:
    try:
        files = managers.read_inputs(app_dir)
    except worktree.NotAFile as exc:
        raise UnsupportedApp(f"A lockfile cannot be read: {exc}") from exc
    lockfiles = {n: d for n, d in files.items() if n in managers.LOCKFILES}
    return managers.choose(pkg, lockfiles, managers.binary_lockfiles(app_dir))
