"""Where an app's dependencies may come from: the package registry only.

A git, URL or tarball dependency (or a path that leaves the project) would
fetch and build code from anywhere, past the registry an admin configured; its
``prepare`` script runs even with ``--ignore-scripts``.  Such an app is refused
at upload and again before every install (an edit may add one), unless
``c.ReactBoxApp.allow_remote_dependencies`` is set.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import UnsupportedApp

SECTIONS = ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies")
_REMOTE_RE = re.compile(r"^(?:git\+|git:|github:|gitlab:|bitbucket:|gist:|https?:|ssh:)", re.I)
_SHORTHAND_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(?:#.*)?$")
"""``user/repo`` (npm reads it as a GitHub repository)."""
_LOCAL_RE = re.compile(r"^(?:file:|link:|portal:)(.*)$")


def _outside(spec: str, app_dir: Path) -> bool:
    spec = spec.strip()
    if spec.startswith("npm:"):  # an alias of a registry package
        spec = spec[4:].rpartition("@")[2] or spec
    local = _LOCAL_RE.match(spec)
    if local:
        target = (app_dir / local.group(1)).resolve()
        return not target.is_relative_to(app_dir.resolve())
    return bool(_REMOTE_RE.match(spec) or _SHORTHAND_RE.match(spec))


def outside_registry(app_dir: Path) -> list[str]:
    """``name: spec`` of every dependency that does not come from the registry."""
    found: list[str] = []
    try:
        pkg = json.loads((app_dir / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return found  # detect() says what is wrong with it
    for section in SECTIONS:
        deps = pkg.get(section) if isinstance(pkg, dict) else None
        for name, spec in (deps or {}).items() if isinstance(deps, dict) else ():
            if isinstance(spec, str) and _outside(spec, app_dir):
                found.append(f"{name}: {spec}")
    try:
        lock = json.loads((app_dir / "package-lock.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        lock = {}
    packages = lock.get("packages") if isinstance(lock, dict) else None
    for path, entry in (packages or {}).items() if isinstance(packages, dict) else ():
        resolved = entry.get("resolved") if isinstance(entry, dict) else None
        if isinstance(resolved, str) and (
            resolved.startswith(("git+", "git:", "github:", "ssh:"))
            or (resolved.startswith("file:") and _outside(resolved, app_dir))
        ):
            found.append(f"{path or 'the app'}: {resolved}")
    return found


def check(app_dir: Path, *, allowed: bool) -> None:
    """UnsupportedApp (422) unless every dependency comes from the registry or ``allowed``."""
    if allowed:
        return
    found = outside_registry(app_dir)
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise UnsupportedApp(
            "The app asks for dependencies from outside the package registry (git, URLs, "
            f"tarballs or paths outside the app), which are refused: {shown}. Use registry "
            "versions, or ask your admin to set c.ReactBoxApp.allow_remote_dependencies = True."
        )
