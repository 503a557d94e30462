"""Package managers: which one installs an app, with which argv, and what to do
when its lockfile no longer matches ``package.json``.

The sandbox image ships the managers (``SHIPPED``, under ``PM_DIR``), taken from
the package registry when the image is built.  Nothing is fetched when an app
installs: corepack, which downloads a manager on first use and checks it
against signing keys baked into its own release, refuses today's releases in
the Node 20 it comes with, and would be a second source beside the registry.

An app asks for a manager with its lockfile and ``packageManager`` field; it
gets the shipped release of the same major line (pnpm 8, 9 or 10; yarn 1 or
yarn 4, which also installs yarn 2 and 3 projects; bun 1), or the nearest one
with a line in the install log saying so.  bun is a native program, shipped
for the machine's CPU (``bun_package``); the app's dev server still runs on
Node, as with every other manager.  All of this reads the project as data
only, on the host, and decides among fixed argv.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from pathlib import Path

from . import worktree

PM_DIR = "/opt/reactbox/pm"
"""Where the image keeps the shipped managers, one folder (an npm package) each."""

SHIPPED: dict[str, str] = {
    "yarn-1": "yarn@1.22.22",
    "yarn-4": "@yarnpkg/cli-dist@4.18.1",
    "pnpm-8": "pnpm@8.15.9",
    "pnpm-9": "pnpm@9.15.9",
    "pnpm-10": "pnpm@10.34.9",
    "bun-1": "@oven/bun-linux-{cpu}@1.4.5",
}
"""Folder name in ``PM_DIR`` -> the registry package it is unpacked from (``{cpu}``:
``bun_package`` fills it in)."""


def bun_package(spec: str, machine: str | None = None) -> str:
    """bun's package for this machine's CPU: the baseline build on x86-64 (it needs
    no AVX2, so the image runs on any x86-64 host), the aarch64 one on ARM."""
    machine = (machine or platform.machine()).lower()
    cpu = "aarch64" if machine in ("aarch64", "arm64") else "x64-baseline"
    return spec.replace("{cpu}", cpu)


_ENTRY = {"yarn-1": "bin/yarn.js", "yarn-4": "bin/yarn.js", "bun-1": "bin/bun"}
_PNPM_MAJORS = (8, 9, 10)

LOCKFILES = {
    "package-lock.json": "npm",
    "npm-shrinkwrap.json": "npm",
    "yarn.lock": "yarn",
    "pnpm-lock.yaml": "pnpm",
    "bun.lock": "bun",
}

BINARY_LOCKFILES = {"bun.lockb": "bun"}
"""Lockfiles no host-side check can read (bun before 1.2): they choose the manager,
and the install resolves again from ``package.json`` (the supply rules check
every lockfile an install uses)."""


INPUTS = ("package.json", *LOCKFILES, "pnpm-workspace.yaml")
"""What decides an install: the manifest, the lockfiles (and a pnpm workspace's
members; ``workspaces.member_manifests`` adds every member's manifest)."""


def read_inputs(app_dir: Path) -> dict[str, bytes]:
    """Those of ``INPUTS`` the app has, as bytes (read as data, size-capped);
    ``worktree.NotAFile`` for one that is not a regular file."""
    files = {}
    for name in INPUTS:
        data = worktree.read_bytes(app_dir, name, worktree.MAX_MANIFEST)
        if data is not None:
            files[name] = data
    return files


def binary_lockfiles(app_dir: Path) -> tuple[str, ...]:
    """Those of ``BINARY_LOCKFILES`` the app has (never read)."""
    return tuple(name for name in BINARY_LOCKFILES if worktree.is_file(app_dir, name))


def entry(tool: str) -> str:
    """The script (bun: the program) in the image that runs ``tool`` (a key of
    ``SHIPPED``)."""
    return f"{PM_DIR}/{tool}/{_ENTRY.get(tool, 'bin/pnpm.cjs')}"


def _major(version: str) -> int | None:
    match = re.match(r"\s*v?(\d+)", version)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Manager:
    """The manager an install uses."""

    name: str
    """'npm', 'yarn', 'pnpm' or 'bun'."""
    tool: str
    """'npm', or a key of ``SHIPPED`` ('yarn-1', 'yarn-4', 'pnpm-9', ...)."""
    lockfile: str | None
    note: str = ""
    """Said in the install log: the app asked for a release the image does not ship."""

    def install_argv(self, *, ignore_scripts: bool = True, frozen: bool = True) -> list[str]:
        """The argv that installs the app's dependencies into ./node_modules; not
        ``frozen``: the lockfile may change (the install's copy of package.json was)."""
        frozen = frozen and self.lockfile is not None
        no_scripts = ["--ignore-scripts"] if ignore_scripts else []
        if self.tool == "npm":
            # Frozen, every package is pinned by its integrity: one in the cache needs
            # no request to the registry (about 0.6 s less for a small app here).
            verb = ["ci", "--prefer-offline"] if frozen else ["install"]
            return ["npm", *verb, "--no-audit", "--no-fund", "--loglevel=error", *no_scripts]
        # pnpm's default under CI=true is frozen, even with no lockfile: say it both ways.
        lock = ["--frozen-lockfile"] if frozen else []
        if self.name == "pnpm" and not frozen:
            lock = ["--no-frozen-lockfile"]
        if self.tool == "bun-1":
            # Hoisted: one node_modules tree as npm makes it (bun 1.3 isolates a
            # workspace's members by default), which the Node dev server reads.
            return [entry(self.tool), "install", "--linker=hoisted", *lock, *no_scripts]
        run = ["node", entry(self.tool), "install"]
        if self.tool == "yarn-1":
            return [*run, "--non-interactive", "--network-timeout", "600000", *lock, *no_scripts]
        if self.tool == "yarn-4":
            # Berry has no --ignore-scripts; skip-build is the same. Its lockfile may
            # be rewritten for this release (yarn 2 and 3 projects): not --immutable.
            return [*run, *(["--mode=skip-build"] if ignore_scripts else [])]
        return [*run, "--config.node-linker=hoisted", *lock, *no_scripts]

    def env(self, registry: str | None, proxy: str | None) -> dict[str, str]:
        """What this manager needs beyond npm's ``npm_config_*`` settings."""
        if self.tool == "bun-1":
            env = {
                "BUN_INSTALL_CACHE_DIR": "/cache/bun",
                "DO_NOT_TRACK": "1",
            }
            if registry:
                env["BUN_CONFIG_REGISTRY"] = registry
            return env
        if self.tool == "yarn-1":
            env = {"SKIP_YARN_COREPACK_CHECK": "1"}
            if registry:
                env["YARN_REGISTRY"] = registry
            return env
        if self.tool == "yarn-4":
            env = {
                "YARN_GLOBAL_FOLDER": "/cache/yarn-berry",
                "YARN_ENABLE_GLOBAL_CACHE": "true",
                "YARN_ENABLE_TELEMETRY": "0",
                "YARN_ENABLE_PROGRESS_BARS": "false",
                "YARN_ENABLE_IMMUTABLE_INSTALLS": "false",  # CI=true would turn it on
                "YARN_NODE_LINKER": "node-modules",
            }
            if registry:
                env["YARN_NPM_REGISTRY_SERVER"] = registry.rstrip("/")
            if proxy:
                env["YARN_HTTPS_PROXY"] = env["YARN_HTTP_PROXY"] = proxy
            return env
        return {}

    def fallback(self, argv: list[str], output: str) -> tuple[list[str], str] | None:
        """When an install failed only because the lockfile no longer matches
        ``package.json`` (common in tutorials): (the argv that resolves again from
        ``package.json``, the line that says so in the log); else None."""
        if argv[:2] == ["npm", "ci"] and _NPM_OUT_OF_SYNC in output:
            rest = [a for a in argv[2:] if a != "--prefer-offline"]  # resolving: ask
            return ["npm", "install", *rest], "package-lock.json does not match package.json"
        if "--frozen-lockfile" in argv and any(s in output for s in _FROZEN_REFUSED):
            rest = [a for a in argv if a != "--frozen-lockfile"]
            if self.name == "pnpm":
                rest.append("--no-frozen-lockfile")
            return rest, f"{self.lockfile} does not match package.json"
        return None


NPM = Manager("npm", "npm", None)
"""An app with no lockfile and no ``packageManager``."""

_NPM_OUT_OF_SYNC = "package.json and package-lock.json or npm-shrinkwrap.json are in sync"
_FROZEN_REFUSED = (
    "Your lockfile needs to be updated",  # yarn 1
    "ERR_PNPM_OUTDATED_LOCKFILE",
    "ERR_PNPM_LOCKFILE_CONFIG_MISMATCH",
    "ERR_PNPM_LOCKFILE_MISSING_DEPENDENCY",
    "lockfile had changes, but lockfile is frozen",  # bun
)


def choose(pkg: dict, lockfiles: dict[str, bytes], binary: tuple[str, ...] = ()) -> Manager:
    """The manager for an app: its ``packageManager`` field, else its lockfile
    (``binary``: the names of ``BINARY_LOCKFILES`` it has)."""
    declared_name, _, declared_version = str(pkg.get("packageManager", "")).partition("@")
    present = next((name for name in LOCKFILES if name in lockfiles), None)
    if not declared_name and (present == "bun.lock" or (not present and binary)):
        declared_name = "bun"
    if declared_name == "bun" and (present is None or LOCKFILES[present] == "bun"):
        note = ""
        if present is None and binary:
            note = (
                f"{binary[0]} is bun's binary lockfile (bun before 1.2), which cannot be "
                "checked: the install resolves again from package.json. Run `bun install` "
                "with bun 1.2 or later to write bun.lock."
            )
        return Manager("bun", "bun-1", present, note)
    if declared_name in ("npm", "yarn", "pnpm"):
        name = declared_name
        lockfile = present if present and LOCKFILES[present] == name else None
        if lockfile is None:  # a yarn app may have only its yarn.lock of the other kind
            lockfile = next((n for n in lockfiles if LOCKFILES[n] == name), None)
    elif present:
        name, lockfile, declared_version = LOCKFILES[present], present, ""
    else:
        return NPM
    data = lockfiles.get(lockfile, b"") if lockfile else b""
    if name == "npm":
        return Manager("npm", "npm", lockfile)
    if name == "yarn":
        major = _major(declared_version)
        berry = (major or 1) >= 2 or b"__metadata:" in data[:4096]
        tool = "yarn-4" if berry else "yarn-1"
        note = ""
        if major and major > 4:
            note = f"This app asks for yarn {declared_version}; the image's yarn 4 installs it."
        return Manager("yarn", tool, lockfile, note)
    major = _major(declared_version)
    if major is None and data:
        found = re.search(rb"^lockfileVersion:\s*'?(\d+)", data[:4096], flags=re.M)
        lock_major = int(found.group(1)) if found else None
        major = {5: 8, 6: 8, 9: 10}.get(lock_major or 0)
    if major in _PNPM_MAJORS:
        return Manager("pnpm", f"pnpm-{major}", lockfile)
    nearest = min(_PNPM_MAJORS, key=lambda m: abs(m - (major or 10)))
    note = (
        f"This app asks for pnpm {declared_version}; the image's pnpm {nearest} installs it."
        if major
        else ""
    )
    return Manager("pnpm", f"pnpm-{nearest}", lockfile, note)


_RESOLVED = re.compile(
    rb'^(\s+resolved\s+)"https?://[^/"\s]+/((?:@[^/"\s]+/)?[^/"\s]+/-/[^"\s]+)"', re.M
)


def point_lockfile_at(registry: str, name: str, data: bytes) -> bytes:
    """A yarn 1 lockfile names each tarball by a full URL, on whichever registry
    host the app's author used; yarn fetches it from there, whatever registry is
    configured (npm has ``replace-registry-host`` for this, yarn has nothing).
    Point registry tarball URLs at ``registry``: the only host an install reaches."""
    if name != "yarn.lock" or b"__metadata:" in data[:4096]:
        return data
    base = registry.rstrip("/").encode()
    return _RESOLVED.sub(lambda m: m.group(1) + b'"' + base + b"/" + m.group(2) + b'"', data)


_ERROR_LINE = re.compile(
    r"(npm ERR!|npm error|^error\b|ERR_PNPM_\w+|YN0001|➤ YN\d+: .*(?:error|Error)|"
    r"^\s*Error:|\bENOTFOUND\b|\bETIMEDOUT\b|\bE404\b|\bERESOLVE\b)",
    re.M,
)


def first_error(output: str) -> str | None:
    """The first line of an install's output that says what went wrong."""
    for line in output.splitlines():
        stripped = line.strip()
        if stripped and _ERROR_LINE.search(stripped) and not _boring(stripped):
            return stripped[:300]
    return None


def _boring(line: str) -> bool:
    """npm's log-file pointers and empty ERR! prefixes say nothing about the cause."""
    text = re.sub(r"^(npm ERR!|npm error)\s*", "", line)
    return not text or text.startswith(("A complete log of this run", "code ", "errno "))
