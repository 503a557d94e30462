"""What an app may depend on: registry packages, and no Vite with known file leaks.

A git, URL or tarball dependency (or a path that leaves the project) would
fetch and build code from anywhere, past the registry an admin configured; its
``prepare`` script runs even with ``--ignore-scripts``.  Such an app is refused
at upload and again before every install (an edit may add one), unless
``c.ReactBoxApp.allow_remote_dependencies`` is set.

The preview runs the app's own Vite, and old Vite releases let a request read
files outside the app (``server.fs`` bypasses, ``vite:invoke`` over the HMR
socket).  An app whose lockfile (or exact version) asks for a Vite older than
the patched release of its major line is installed with that patched release
instead (``vite_pin``: an override in the install's copy of ``package.json``,
said in the install log and the project's JSON; the app's files are not
changed).  A Vite of a line with no patched release is refused at upload, and
whatever was installed is checked again before a dev server runs it, unless
``c.ReactBoxApp.allow_vulnerable_vite`` is set.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from . import managers, workspaces, worktree
from .errors import UnsupportedApp

SECTIONS = ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies")
_REMOTE_RE = re.compile(r"^(?:git\+|git:|github:|gitlab:|bitbucket:|gist:|https?:|ssh:)", re.I)
_SHORTHAND_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(?:#.*)?$")
"""``user/repo`` (npm reads it as a GitHub repository)."""
_LOCAL_RE = re.compile(r"^(?:file:|link:|portal:)(.*)$")


def _outside(spec: str, app_dir: Path, member: str = "") -> bool:
    """Whether ``spec`` (of the manifest in ``member``) comes from outside the
    registry and the project; ``workspace:`` specs name members of the project."""
    spec = spec.strip()
    if spec.startswith("npm:"):  # an alias of a registry package
        spec = spec[4:].rpartition("@")[2] or spec
    local = _LOCAL_RE.match(spec)
    if local:
        target = (app_dir / member / local.group(1)).resolve()
        return not target.is_relative_to(app_dir.resolve())
    return bool(_REMOTE_RE.match(spec) or _SHORTHAND_RE.match(spec))


def outside_registry(app_dir: Path) -> list[str]:
    """``name: spec`` of every dependency that does not come from the registry (in
    the project's manifest, and its workspace members')."""
    found: list[str] = []
    for member in ("", *workspaces.members(app_dir)):
        try:
            pkg = worktree.read_json(app_dir, workspaces.manifest(member))
        except (OSError, ValueError, worktree.NotAFile):
            continue  # detect() says what is wrong with it
        where = f"{member}: " if member else ""
        for section in SECTIONS:
            deps = pkg.get(section) if isinstance(pkg, dict) else None
            for name, spec in (deps or {}).items() if isinstance(deps, dict) else ():
                if isinstance(spec, str) and _outside(spec, app_dir, member):
                    found.append(f"{where}{name}: {spec}")
    try:
        lock = worktree.read_json(app_dir, "package-lock.json")
    except (OSError, ValueError, worktree.NotAFile):
        lock = {}
    packages = lock.get("packages") if isinstance(lock, dict) else None
    for path, entry in (packages or {}).items() if isinstance(packages, dict) else ():
        resolved = entry.get("resolved") if isinstance(entry, dict) else None
        if isinstance(resolved, str) and (
            resolved.startswith(("git+", "git:", "github:", "ssh:"))
            or (resolved.startswith("file:") and _outside(resolved, app_dir))
            or (entry.get("link") is True and _outside(f"file:{resolved}", app_dir))
        ):
            found.append(f"{path or 'the app'}: {resolved}")
    return found


_TARBALL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#]*(/[^?#]*)", re.I)
_YARN_KEY_RE = re.compile(r'^"?((?:@[^@/"\s]+/)?[^@"\s]+)@')
_PNPM_KEY_RE = re.compile(r"^  '?/?((?:@[^@/\s]+/)?[^@\s(]+)@([^:(\s']+)")


def tarball_problem(url: str, name: str, version: str) -> str | None:
    """Why a lockfile's tarball URL is not the registry's tarball of ``name`` at
    ``version``, or None.  An install fetches every tarball from the configured
    registry whatever host the lockfile names, so only the path tells which file
    it gets: it must be ``<name>/-/<name's last part>-<version>.tgz``, after at most
    a registry's own prefix (which must not name a scope: that would be another
    package's path)."""
    found = _TARBALL_RE.match(url)
    if not found:
        return None  # not a URL: git and paths are outside_registry's
    path = found.group(1).replace("%40", "@").replace("%2f", "/").replace("%2F", "/")
    expected = f"/{name}/-/{name.rpartition('/')[2]}-{version}.tgz"
    prefix = path[: -len(expected)] if path.endswith(expected) else None
    if prefix is None or any(
        part.startswith("@") or part in (".", "..") for part in prefix.split("/")
    ):
        return f"{name}@{version} is locked to the tarball {found.group(0)}"
    return None


def _npm_tarballs(lock: dict) -> list[tuple[str, str, str, str]]:
    """(where, name, version, resolved) of an npm lockfile's registry entries."""
    out = []
    packages = lock.get("packages")
    for key, entry in (packages or {}).items() if isinstance(packages, dict) else ():
        if not (isinstance(entry, dict) and "node_modules/" in key):
            continue
        name = entry.get("name") or key.rpartition("node_modules/")[2]
        resolved, version = entry.get("resolved"), entry.get("version")
        if isinstance(resolved, str) and isinstance(version, str) and isinstance(name, str):
            out.append((key, name, version, resolved))

    def walk(deps: object, where: str) -> None:  # lockfile v1: nested "dependencies"
        for name, entry in (deps or {}).items() if isinstance(deps, dict) else ():
            if not isinstance(entry, dict):
                continue
            here = f"{where}node_modules/{name}"
            resolved, version = entry.get("resolved"), entry.get("version")
            if isinstance(resolved, str) and isinstance(version, str):
                real = version[4:].rpartition("@") if version.startswith("npm:") else None
                if real:  # an alias: "npm:real-name@1.2.3"
                    name, version = real[0], real[2]
                out.append((here, name, version, resolved))
            walk(entry.get("dependencies"), here + "/")

    if "packages" not in lock:
        walk(lock.get("dependencies"), "")
    return out


def _yarn_tarballs(text: str) -> list[tuple[str, str, str, str]]:
    """(where, name, version, resolved) of a yarn 1 lockfile's entries."""
    out: list[tuple[str, str, str, str]] = []
    key = version = None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            key, version = line.rstrip(":"), None
        elif key and line.startswith("  version "):
            version = line.split(None, 1)[1].strip().strip('"')
        elif key and version and line.startswith("  resolved "):
            spec = key.split(",")[0].strip().strip('"')
            alias = spec.partition("@npm:")[2]  # "alias@npm:real@^1"
            found = _YARN_KEY_RE.match(alias or spec)
            if found:
                resolved = line.split(None, 1)[1].strip().strip('"')
                out.append((key, found.group(1), version, resolved))
    return out


def _pnpm_tarballs(text: str) -> list[tuple[str, str, str, str]]:
    """(where, name, version, tarball) of a pnpm lockfile's packages with a tarball."""
    out = []
    current = None
    for line in text.splitlines():
        found = _PNPM_KEY_RE.match(line)
        if found and line.rstrip().endswith(":"):
            current = (line.strip().rstrip(":"), found.group(1), found.group(2))
        elif current and "tarball:" in line:
            url = line.split("tarball:", 1)[1].strip().rstrip("}").split(",")[0].strip()
            out.append((*current, url.strip("'\"")))
    return out


_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def bun_lock(data: bytes) -> dict:
    """A ``bun.lock`` (JSON with trailing commas), parsed; ValueError if it is not one."""
    text = data.decode("utf-8")
    lock = json.loads(_TRAILING_COMMA.sub(r"\1", text))
    if not isinstance(lock, dict):
        raise ValueError("bun.lock is not an object")
    return lock


def _bun_entries(lock: dict) -> list[tuple[str, str, str, str]]:
    """(where, name, version or spec, the second field: a tarball URL or '') of a
    bun.lock's packages."""
    out = []
    packages = lock.get("packages")
    for key, entry in (packages or {}).items() if isinstance(packages, dict) else ():
        if not (isinstance(entry, list) and entry and isinstance(entry[0], str)):
            continue
        at = entry[0].find("@", 1)  # past a scope's own @
        name, version = (entry[0][:at], entry[0][at + 1 :]) if at > 0 else (entry[0], "")
        where = entry[1] if len(entry) > 1 and isinstance(entry[1], str) else ""
        out.append((key, name, version, where))
    return out


def _bun_problems(app_dir: Path, data: bytes) -> tuple[list[str], list[str]]:
    """(tarballs of other packages, entries from outside the registry) of a bun.lock."""
    try:
        lock = bun_lock(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnsupportedApp(
            f"bun.lock cannot be read ({exc}); write it again with `bun install`."
        ) from exc
    mismatched, outside = [], []
    for key, name, version, url in _bun_entries(lock):
        if version.startswith(("workspace:", "root:")):
            continue
        if _outside(version, app_dir):
            outside.append(f"bun.lock: {key}: {version}")
        elif url and (problem := tarball_problem(url, name, version)):
            mismatched.append(f"bun.lock: {key}: {problem}")
    return mismatched, outside


def mismatched_tarballs(app_dir: Path) -> list[str]:
    """Lockfile entries whose tarball is not their own package's: with the registry
    host put in place of any other (as installs do), such a URL would install one
    registry package under another's name."""
    found = []
    for lockfile, tarballs in (
        ("package-lock.json", lambda data: _npm_tarballs(json.loads(data))),
        ("npm-shrinkwrap.json", lambda data: _npm_tarballs(json.loads(data))),
        ("yarn.lock", lambda data: _yarn_tarballs(data.decode("utf-8", "replace"))),
        ("pnpm-lock.yaml", lambda data: _pnpm_tarballs(data.decode("utf-8", "replace"))),
    ):
        try:
            data = worktree.read_bytes(app_dir, lockfile, worktree.MAX_MANIFEST)
            entries = tarballs(data) if data else []
        except (OSError, ValueError, worktree.NotAFile):
            continue  # what is wrong with the file itself, the install says
        for where, name, version, url in entries:
            problem = tarball_problem(url, name, version)
            if problem:
                found.append(f"{lockfile}: {where}: {problem}")
    return found


@dataclass(frozen=True)
class Policy:
    allow_remote_dependencies: bool = False
    allow_vulnerable_vite: bool = False


VITE_MINIMUMS = {5: (5, 4, 20), 6: (6, 4, 2), 7: (7, 3, 2), 8: (8, 0, 5)}
"""Per major line, the first release with every fix for reading files through the
dev server on Linux (GHSA advisories of 2025-2026).  Older lines are refused;
newer ones are taken as fixed."""
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


_LOCKED_VITE = {
    "yarn.lock": re.compile(rb'^"?vite@[^\n]*:\n\s+version:? "?(\d+\.\d+\.\d+[^"\s]*)', re.M),
    "pnpm-lock.yaml": re.compile(rb"^\s+/?vite@(\d+\.\d+\.\d+[^:(\s]*)[:(]", re.M),
}


def locked_vite(files: dict[str, bytes]) -> str | None:
    """The Vite an install of these inputs gets, where the inputs say so: the
    lockfile's, else an exact version in ``package.json``."""
    try:
        if "package-lock.json" in files or "npm-shrinkwrap.json" in files:
            data = files.get("package-lock.json") or files["npm-shrinkwrap.json"]
            return json.loads(data)["packages"]["node_modules/vite"]["version"]
        for name, pattern in _LOCKED_VITE.items():
            if name in files:
                found = pattern.search(files[name])
                return found.group(1).decode() if found else None
        spec = _vite_spec(files)
        return spec if _EXACT_RE.match(spec) else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _vite_spec(files: dict[str, bytes]) -> str:
    pkg = json.loads(files.get("package.json", b"{}"))
    specs = [pkg.get(section, {}).get("vite") for section in SECTIONS]
    return next((s.strip() for s in specs if isinstance(s, str)), "")


_EXACT_RE = re.compile(r"^\d+\.\d+\.\d+$")
_LINE_RE = re.compile(r"^[\^~]?(\d+)(?:\.(?:\d+|x|\*))*$")
"""A range that stays within one major line: ``^4.3.2``, ``~4.3``, ``4.x``, ``4``."""


def vite_line(files: dict[str, bytes]) -> int | None:
    """The major line of Vite the app can get, when ``package.json`` allows only one."""
    try:
        found = _LINE_RE.match(_vite_spec(files))
    except (ValueError, TypeError, AttributeError):
        return None
    return int(found.group(1)) if found else None


def vite_version(app_dir: Path, *, installed: bool, member: str = "") -> str | None:
    """The app's Vite: the one installed (in its own folder, else the workspace's
    top), or the one its lockfile pins."""
    try:
        if installed:
            for where in dict.fromkeys((f"{member}/" if member else "", "")):
                data = worktree.read_bytes(
                    app_dir, f"{where}node_modules/vite/package.json", 1 << 20
                )
                if data is not None:
                    return json.loads(data).get("version")
            return None
        return locked_vite(managers.read_inputs(app_dir))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, worktree.NotAFile):
        return None


def patched_release(version: str) -> str | None:
    """The patched release of this vulnerable Vite's own major line, if it has one."""
    match = _VERSION_RE.match(version)
    if not match or not vite_problem(version):
        return None
    minimum = VITE_MINIMUMS.get(int(match.group(1)))
    return ".".join(map(str, minimum)) if minimum else None


@dataclass(frozen=True)
class VitePin:
    """Install ``fixed`` where the app asks for the vulnerable ``found``."""

    found: str
    fixed: str

    @property
    def note(self) -> str:
        return (
            f"Vite {self.found} has known ways to read files outside the app through its dev "
            f"server; the preview runs Vite {self.fixed}, the patched release of its line. "
            f'To make it yours, set "vite": "^{self.fixed}" in package.json.'
        )


def vite_pin(files: dict[str, bytes], policy: Policy | None = None) -> VitePin | None:
    """The override an install of these inputs needs, if any."""
    if (policy or Policy()).allow_vulnerable_vite:
        return None
    found = locked_vite(files)
    fixed = found and patched_release(found)
    return VitePin(found, fixed) if found and fixed else None


def vite_problem(version: str) -> str | None:
    """Why this Vite version may not serve a preview, or None."""
    match = _VERSION_RE.match(version)
    if not match:
        return None
    release = tuple(int(n) for n in match.groups())
    oldest = min(VITE_MINIMUMS)
    if release[0] < oldest:
        return _unmaintained(version, release[0])
    minimum = VITE_MINIMUMS.get(release[0])
    if minimum and release < minimum:
        fixed = ".".join(map(str, minimum))
        return (
            f"Vite {version} has known ways to read files outside the app through its dev "
            f"server, fixed in {fixed}; update it (npm install vite@^{fixed})"
        )
    return None


def _unmaintained(shown: str, line: int) -> str:
    oldest = min(VITE_MINIMUMS)
    fixed = ".".join(map(str, VITE_MINIMUMS[oldest]))
    return (
        f"Vite {shown} is no longer maintained and has known ways to read files "
        f"outside the app, and no patched release of Vite {line} exists: set "
        f'"vite": "^{fixed}" in package.json (Vite {oldest} or later; update Vite '
        "plugins such as @vitejs/plugin-react to releases for it), or upload it "
        f"again with ?upgrade=vite to have that done as one change you can undo"
    )


UPGRADE_PLUGINS = {
    "@vitejs/plugin-react": (4, "^4.7.0"),
    "@vitejs/plugin-react-swc": (3, "^3.11.0"),
}
"""Vite's own React plugins, at the first releases that support Vite 5 (and
still Vite 4): a release of their line at most the given major is raised to it."""


@dataclass(frozen=True)
class ViteUpgrade:
    """``package.json`` with Vite of an unmaintained line raised to the oldest line
    with a patched release (and Vite's React plugins to releases for it)."""

    manifest: bytes
    changes: tuple[str, ...]
    """``name: old -> new`` for each dependency changed."""

    @property
    def message(self) -> str:
        return "Upgrade Vite to a maintained release: " + "; ".join(self.changes)


def vite_upgrade(manifest: bytes) -> ViteUpgrade | None:
    """The upgrade of a ``package.json`` whose Vite is of a line with no patched
    release (4 and older), or None when it needs none (or has no Vite)."""
    try:
        pkg = json.loads(manifest)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(pkg, dict):
        return None
    line = vite_line({"package.json": manifest})
    version = None if line is not None else locked_vite({"package.json": manifest})
    if line is None and version:
        line = int(version.split(".")[0])
    if line is None or line >= min(VITE_MINIMUMS):
        return None
    target = "^" + ".".join(map(str, VITE_MINIMUMS[min(VITE_MINIMUMS)]))
    changes = []
    for section in SECTIONS:
        deps = pkg.get(section)
        if not isinstance(deps, dict):
            continue
        for name, spec in list(deps.items()):
            if not isinstance(spec, str):
                continue
            if name == "vite":
                new = target
            elif name in UPGRADE_PLUGINS and (_major_of(spec) or 0) <= UPGRADE_PLUGINS[name][0]:
                new = UPGRADE_PLUGINS[name][1]
            else:
                continue
            if new != spec:
                deps[name] = new
                changes.append(f"{name} {spec} -> {new}")
    if not changes:
        return None
    changes.sort(key=lambda change: not change.startswith("vite "))  # Vite first
    indent = 2 if b'\n  "' in manifest or b"\n" not in manifest else 4
    text = json.dumps(pkg, indent=indent, ensure_ascii=False) + "\n"
    return ViteUpgrade(text.encode(), tuple(changes))


def _major_of(spec: str) -> int | None:
    found = re.match(r"^[\^~>=v\s]*(\d+)", spec)
    return int(found.group(1)) if found else None


def check(
    app_dir: Path, policy: Policy | None = None, *, installed: bool = False, member: str = ""
) -> None:
    """UnsupportedApp (422) for a dependency from outside the registry or a Vite with
    known file leaks (before the install: one no override can fix), unless the
    policy allows it.  ``member``: the app is that folder of a workspace."""
    policy = policy or Policy()
    checked = () if policy.allow_vulnerable_vite or installed else ("", member)
    for manifest_path in dict.fromkeys(workspaces.manifest(m) for m in checked):
        try:
            manifest = {"package.json": worktree.read_bytes(app_dir, manifest_path, 1 << 20)}
        except (OSError, worktree.NotAFile):
            manifest = {}
        line = vite_line(manifest) if manifest.get("package.json") else None
        if line is not None and line < min(VITE_MINIMUMS):
            problem = _unmaintained(_vite_spec(manifest), line)
            raise UnsupportedApp(
                f"{problem}, or ask your admin to set c.ReactBoxApp.allow_vulnerable_vite = True."
            )
    if not policy.allow_vulnerable_vite:
        version = vite_version(app_dir, installed=installed, member=member)
        problem = version and vite_problem(version)
        if problem and (installed or not patched_release(version)):
            raise UnsupportedApp(
                f"{problem}, or ask your admin to set c.ReactBoxApp.allow_vulnerable_vite = True."
            )
    if policy.allow_remote_dependencies:
        return
    mismatched, outside = mismatched_tarballs(app_dir), []
    try:
        bun = worktree.read_bytes(app_dir, "bun.lock", worktree.MAX_MANIFEST)
    except (OSError, worktree.NotAFile):
        bun = None
    if bun is not None:
        more, outside = _bun_problems(app_dir, bun)
        mismatched += more
    if mismatched:
        raise UnsupportedApp(
            "The lockfile names, for a package, the tarball of another package or "
            f"release, which is refused: {_shown(mismatched)}. Write the lockfile again "
            "(npm install, yarn, pnpm install), or ask your admin to set "
            "c.ReactBoxApp.allow_remote_dependencies = True."
        )
    found = outside_registry(app_dir) + outside
    if found:
        raise UnsupportedApp(
            "The app asks for dependencies from outside the package registry (git, URLs, "
            f"tarballs or paths outside the app), which are refused: {_shown(found)}. Use registry "
            "versions, or ask your admin to set c.ReactBoxApp.allow_remote_dependencies = True."
        )


def _shown(found: list[str]) -> str:
    return "; ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
