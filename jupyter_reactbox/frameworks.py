"""Which framework an app uses, and how to install and serve it behind a prefix.

The dev server must know its public base path (``{base_url}reactbox/preview/
<project>/<token>/``): the app's asset URLs, client routes and the HMR
websocket are all built from it.  Each plan therefore takes the base path and
returns the exact argv and environment of the dev server.  Commands are argv
lists, never shell strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from . import worktree
from .errors import UnsupportedApp

LOCKFILES = {
    "package-lock.json": "npm",
    "npm-shrinkwrap.json": "npm",
    "yarn.lock": "yarn",
    "pnpm-lock.yaml": "pnpm",
}


# Paths (relative to the preview base) that the dev server serves somewhere else:
# create-react-app's WDS_SOCKET_PATH only tells the browser where to connect;
# webpack-dev-server itself keeps listening on /ws.
UPSTREAM_PATHS: dict[str, dict[str, str]] = {"cra": {"ws": "/ws"}}


@dataclass(frozen=True)
class AppPlan:
    framework: str
    """'vite' or 'cra'."""
    package_manager: str
    """'npm', 'yarn' or 'pnpm'."""
    port: int
    lockfile: str | None = None
    dev_argv_template: tuple[str, ...] = field(default=())
    env_template: tuple[tuple[str, str], ...] = field(default=())

    def install_argv(self, *, ignore_scripts: bool = True) -> list[str]:
        """The argv that installs the app's dependencies into ./node_modules."""
        pm = self.package_manager
        if pm == "npm":
            verb = (
                "ci" if self.lockfile in ("package-lock.json", "npm-shrinkwrap.json") else "install"
            )
            argv = ["npm", verb, "--no-audit", "--no-fund", "--loglevel=error"]
        elif pm == "yarn":
            argv = ["corepack", "yarn", "install"]
            if self.lockfile:
                argv.append("--frozen-lockfile")
        else:
            argv = ["corepack", "pnpm", "install", "--config.node-linker=hoisted"]
            if self.lockfile:
                argv.append("--frozen-lockfile")
        if ignore_scripts:
            argv.append("--ignore-scripts")
        return argv

    def dev_argv(self, base: str) -> list[str]:
        return [a.format(base=base, port=self.port) for a in self.dev_argv_template]

    def dev_env(self, base: str) -> dict[str, str]:
        return {k: v.format(base=base, port=self.port) for k, v in self.env_template}


VITE = AppPlan(
    framework="vite",
    package_manager="npm",
    port=5173,
    dev_argv_template=(
        "node",
        "node_modules/vite/bin/vite.js",
        "--host",
        "0.0.0.0",
        "--port",
        "{port}",
        "--strictPort",
        "--base",
        "{base}",
    ),
    # No browser to open in a container: `server.open` in an app's config would
    # crash the dev server on a missing xdg-open.
    env_template=(("BROWSER", "none"),),
)

CRA = AppPlan(
    framework="cra",
    package_manager="npm",
    port=3000,
    dev_argv_template=("node", "node_modules/react-scripts/bin/react-scripts.js", "start"),
    env_template=(
        ("HOST", "0.0.0.0"),
        ("PORT", "{port}"),
        ("BROWSER", "none"),
        ("PUBLIC_URL", "{base}"),
        ("WDS_SOCKET_PATH", "{base}ws"),
        ("WDS_SOCKET_PORT", "0"),  # 0: the page's own port, i.e. Jupyter's
        # Only the preview proxy can reach the container (internal network),
        # and it sends the container's address as Host.
        ("DANGEROUSLY_DISABLE_HOST_CHECK", "true"),
        ("FAST_REFRESH", "true"),
    ),
)


def _package_manager(pkg: dict, app_dir: Path) -> tuple[str, str | None]:
    lockfile = next((name for name in LOCKFILES if worktree.is_file(app_dir, name)), None)
    declared = str(pkg.get("packageManager", "")).split("@", 1)[0]
    if declared in ("npm", "yarn", "pnpm"):
        return declared, lockfile if lockfile and LOCKFILES[lockfile] == declared else None
    if lockfile:
        return LOCKFILES[lockfile], lockfile
    return "npm", None


def detect(app_dir: Path) -> AppPlan:
    """Read ``package.json`` (and the lockfile) in ``app_dir`` and plan how to run it."""
    try:
        pkg = worktree.read_json(app_dir, "package.json")
    except FileNotFoundError as exc:
        raise UnsupportedApp("The app has no package.json at its top level.") from exc
    except worktree.NotAFile as exc:
        raise UnsupportedApp(f"package.json cannot be read: {exc}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnsupportedApp(f"package.json is not valid JSON: {exc}.") from exc
    if not isinstance(pkg, dict):
        raise UnsupportedApp("package.json must hold a JSON object.")
    deps: dict = {}
    for key in ("dependencies", "devDependencies"):
        section = pkg.get(key) or {}
        if isinstance(section, dict):
            deps.update(section)
    package_manager, lockfile = _package_manager(pkg, app_dir)
    if "vite" in deps:
        spec = VITE
    elif "react-scripts" in deps:
        spec = CRA
    elif "next" in deps:
        raise UnsupportedApp(
            "This is a Next.js app; jupyter-reactbox runs Vite and create-react-app apps. "
            "Next.js support is planned."
        )
    else:
        raise UnsupportedApp(
            "Cannot tell how to run this app: package.json lists neither 'vite' nor "
            "'react-scripts' in dependencies or devDependencies. Add Vite "
            "(npm create vite@latest) or upload a create-react-app project."
        )
    return replace(spec, package_manager=package_manager, lockfile=lockfile)
