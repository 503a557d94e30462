"""Which framework an app uses, and how to install and serve it behind a prefix.

The dev server must know its public base path (``{base_url}reactbox/preview/
<project>/<token>/``): the app's asset URLs, client routes and the HMR
websocket are all built from it.  Each plan therefore takes the base path and
returns the exact argv and environment of the dev server.  Commands are argv
lists, never shell strings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import managers, worktree
from .errors import UnsupportedApp
from .managers import NPM, Manager

# Paths (relative to the preview base) that the dev server serves somewhere else:
# create-react-app's WDS_SOCKET_PATH only tells the browser where to connect;
# webpack-dev-server itself keeps listening on /ws.
UPSTREAM_PATHS: dict[str, dict[str, str]] = {"cra": {"ws": "/ws"}}

ROOT_WITHOUT_SLASH = frozenset({"next"})
"""Dev servers whose root under a basePath is the base with no trailing slash
(Next.js redirects ``<base>/`` to ``<base>``): the preview's root goes upstream so."""

CROSS_SITE_CHECKED = frozenset({"next"})
"""Dev servers that refuse cross-site requests for their dev resources (Next.js
15+ checks ``Origin`` and ``Sec-Fetch-Site``); the sandboxed page is cross-site
to everyone (``Origin: null``), so the proxy, which has checked the preview's
token, presents these requests as the dev server's own."""


@dataclass(frozen=True)
class AppPlan:
    framework: str
    """'vite', 'cra' or 'next'."""
    port: int
    manager: Manager = NPM
    dev_argv_template: tuple[str, ...] = field(default=())
    env_template: tuple[tuple[str, str], ...] = field(default=())

    @property
    def package_manager(self) -> str:
        """'npm', 'yarn' or 'pnpm'."""
        return self.manager.name

    @property
    def lockfile(self) -> str | None:
        return self.manager.lockfile

    def install_argv(self, *, ignore_scripts: bool = True, frozen: bool = True) -> list[str]:
        """The argv that installs the app's dependencies into ./node_modules."""
        return self.manager.install_argv(ignore_scripts=ignore_scripts, frozen=frozen)

    def dev_argv(self, base: str) -> list[str]:
        return [a.format(base=base, port=self.port) for a in self.dev_argv_template]

    def dev_env(self, base: str) -> dict[str, str]:
        return {k: v.format(base=base, port=self.port) for k, v in self.env_template}


SUPPORT = "/opt/reactbox/support"
"""Where a dev server finds jupyter-reactbox's own scripts (``sandbox/support/``,
read-only): a launcher that adds our Vite plugin to the app's own config."""

VITE = AppPlan(
    framework="vite",
    port=5173,
    dev_argv_template=(
        "node",
        f"{SUPPORT}/vite-serve.mjs",
        "--port",
        "{port}",
        "--base",
        "{base}",
    ),
    # No browser to open in a container: `server.open` in an app's config would
    # crash the dev server on a missing xdg-open (the launcher also turns it off).
    env_template=(("BROWSER", "none"),),
)

CRA = AppPlan(
    framework="cra",
    port=3000,
    # react-scripts 2 to 5: the launcher gives older releases what they need (the
    # legacy OpenSSL provider, the base as public path, the socket's path).
    dev_argv_template=("node", f"{SUPPORT}/cra-start.cjs"),
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


NEXT = AppPlan(
    framework="next",
    port=3000,
    dev_argv_template=(
        "node",
        "node_modules/next/dist/bin/next",
        "dev",
        "--port",
        "{port}",
        "--hostname",
        "0.0.0.0",
    ),
    env_template=(
        # The preview's base becomes Next's default basePath (no change to the
        # app's next.config; see sandbox/support/next-preload.cjs).
        ("NODE_OPTIONS", f"--require {SUPPORT}/next-preload.cjs"),
        ("REACTBOX_BASE", "{base}"),
        ("NEXT_TELEMETRY_DISABLED", "1"),
        ("BROWSER", "none"),
    ),
)


_NEXT_ROUTE_FILE = re.compile(
    r"^(?:src/)?(?P<router>app|pages)/(?P<route>.*?)(?:/?(?P<leaf>page|index))?\.(?:[jt]sx?|mdx)$"
)
_NEXT_DATA = re.compile(
    r'<script id="__NEXT_DATA__" type="application/json">(.*?)</script>', re.DOTALL
)


def next_routes(paths: list[str]) -> list[str]:
    """The routes (relative to the base) whose pages Next.js must render to compile
    ``paths``: a page's own route, else the root page (which compiles the layout
    and what it imports).  Next compiles a page when it is requested."""
    routes = []
    for path in paths:
        route = ""
        match = _NEXT_ROUTE_FILE.match(path)
        if match and (match["router"] == "pages" or match["leaf"] == "page"):
            segments = [s for s in match["route"].split("/") if s and not s.startswith(("(", "@"))]
            if all(not s.startswith(("[", "_")) for s in segments) and segments[:1] != ["api"]:
                route = "/".join(segments)
        if route not in routes:
            routes.append(route)
    return routes[:3]


def next_error(body: bytes) -> str | None:
    """What Next.js's development error page says went wrong (its ``__NEXT_DATA__``
    carries the compile or render error), or None."""
    match = _NEXT_DATA.search(body.decode("utf-8", "replace"))
    try:
        data = json.loads(match[1]) if match else None
    except ValueError:
        return None
    err = data.get("err") if isinstance(data, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    return message if isinstance(message, str) and message else None


def _manager(pkg: dict, app_dir: Path) -> Manager:
    try:
        files = managers.read_inputs(app_dir)
    except worktree.NotAFile as exc:
        raise UnsupportedApp(f"A lockfile cannot be read: {exc}") from exc
    return managers.choose(pkg, {n: d for n, d in files.items() if n in managers.LOCKFILES})


FRAMEWORK_PACKAGES = ("vite", "react-scripts", "next", "astro")
"""A ``package.json`` that depends on one of these is an app (to run, or to refuse
with a reason); one that does not (a monorepo's root, a backend) is not."""


def _dependencies(pkg: Any) -> dict:
    deps: dict = {}
    for key in ("dependencies", "devDependencies"):
        section = pkg.get(key) if isinstance(pkg, dict) else None
        if isinstance(section, dict):
            deps.update(section)
    return deps


def runnable(pkg: Any) -> bool:
    """Whether the parsed ``package.json`` ``pkg`` is an app's."""
    return any(name in _dependencies(pkg) for name in FRAMEWORK_PACKAGES)


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
    deps = _dependencies(pkg)
    server_routed = next((n for n in ("@react-router/dev", "@remix-run/dev") if n in deps), None)
    if server_routed:
        raise UnsupportedApp(
            f"This app uses {server_routed} (React Router's framework mode, or Remix), which "
            "matches every route on its own server against `basename` in its config. Behind "
            "the preview's path that needs the preview's base there, and jupyter-reactbox does "
            "not change an app's files to run it, so each page would be its 404. React "
            "Router in library mode (BrowserRouter, createBrowserRouter in a Vite app) runs "
            "as it is."
        )
    if "vite" in deps:
        spec = VITE
    elif "react-scripts" in deps:
        spec = CRA
    elif "next" in deps:
        spec = NEXT
    elif "astro" in deps:
        raise UnsupportedApp(
            "This is an Astro site. jupyter-reactbox runs React apps built with Vite, "
            "create-react-app or Next.js; Astro renders its pages on its own server, which "
            "would need the preview's base in astro.config (`base`) to match any route, and "
            "jupyter-reactbox does not change an app's files to run it. To preview its React "
            "components here, put them in a Vite app (npm create vite@latest -- --template react)."
        )
    else:
        raise UnsupportedApp(
            "Cannot tell how to run this app: package.json lists none of 'vite', "
            "'react-scripts' or 'next' in dependencies or devDependencies. Add Vite "
            "(npm create vite@latest) or upload a create-react-app or Next.js project."
        )
    return replace(spec, manager=_manager(pkg, app_dir))
