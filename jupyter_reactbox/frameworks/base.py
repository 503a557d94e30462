"""What a framework plugin says, and the plan to run one app with it.

A framework is data plus one optional probe: how to detect it (the packages
that name it), the dev server's argv and environment for a base, a port and
the folder of jupyter-reactbox's support scripts, the paths its dev server
serves somewhere else, how the preview proxy must present requests to it,
the files an AI edit should see first, and how to ask it to compile a
module.  Commands are argv lists, never shell strings.  A framework that is
recognised but not run carries ``refused``: the message that says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..managers import NPM, Manager

COMPILED_SUFFIXES = (
    *(".js", ".jsx", ".mjs", ".ts", ".tsx", ".mts"),
    *(".css", ".scss", ".vue", ".svelte"),
)
"""Files a dev server compiles (the compile check asks only about these)."""


@dataclass(frozen=True)
class Framework:
    name: str
    """Short and stable: it is kept in the backend's records ('vite', 'next')."""
    packages: tuple[str, ...]
    """A package.json that depends on any of these is this framework's app."""
    order: int = 100
    """Lower is tried first when an app depends on packages of several."""
    dev_argv: tuple[str, ...] = ()
    """The dev server's argv; ``{base}``, ``{host}``, ``{port}`` and ``{support}``
    (where the support scripts are) are filled in by the backend."""
    env: tuple[tuple[str, str], ...] = ()
    upstream_paths: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Paths (relative to the base) that its dev server serves somewhere else."""
    root_without_slash: bool = False
    """Its root under a base is the base without its trailing slash."""
    cross_site_checked: bool = False
    """It refuses cross-site requests for its dev resources, so the proxy (after
    the token check) presents them as from the dev server's own host."""
    root_paths: tuple[str, ...] = ()
    """Paths its pages name from the origin's root although it serves them under
    the base too (Next's ``/__nextjs_font/``): the proxy puts them under the base
    in the bodies it rewrites."""
    build_argv: tuple[str, ...] = ()
    """Its production build's argv, for the base it will be served under; ``{base}``,
    ``{out}`` (the folder it must write, outside the app) and ``{support}`` are
    filled in by the backend.  Empty: it has no build that runs here."""
    build_env: tuple[tuple[str, str], ...] = ()
    entry_files: tuple[str, ...] = ()
    """What an AI edit's context shows first, when the app has it."""
    refused: str | None = None
    """Recognised, not run: why, and what to do instead."""
    root_only: str | None = None
    """Run only where the preview has an origin of its own (at ``/``); under
    Jupyter's path, refused with this: why, and how to run it."""

    async def compile_errors(self, root: str, paths: list[str]) -> str | None:
        """Ask the dev server at ``root`` (its URL with the base) to compile
        ``paths`` as they are on disk now; its first error, or None.  A framework
        that cannot be asked answers None."""
        return None

    def upstream_query(self, path: str, query: str, base: str) -> str:
        """The query of a request for ``path`` (below the base) as its dev server
        must get it: as it came, unless the framework says otherwise."""
        return query


@dataclass(frozen=True)
class AppPlan:
    """How to install and serve one app."""

    spec: Framework
    manager: Manager = NPM
    companions: bool = False
    """Its dev script starts other commands beside the UI (``concurrently``,
    ``npm-run-all``): they run in the sandbox too (``support/companions.mjs``)."""
    member: str = ""
    """The app's folder in a workspace ('' : the project's top): its dev server runs
    there (``support/in-member.mjs``), its dependencies install at the top."""

    @property
    def framework(self) -> str:
        return self.spec.name

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

    def dev_argv(self, **where: str | int) -> list[str]:
        """The dev server's argv, given ``base``, ``host``, ``port`` and ``support``."""
        argv = [a.format(**where) for a in self.spec.dev_argv]
        if self.companions:
            argv = ["node", f"{where['support']}/companions.mjs", "--", *argv]
        if self.member:
            argv = ["node", f"{where['support']}/in-member.mjs", self.member, *argv]
        return argv

    def dev_env(self, **where: str | int) -> dict[str, str]:
        return {k: v.format(**where) for k, v in self.spec.env}

    def build_argv(self, **where: str | int) -> list[str]:
        """The production build's argv, given ``base``, ``out`` and ``support``."""
        argv = [a.format(**where) for a in self.spec.build_argv]
        if self.member:
            argv = ["node", f"{where['support']}/in-member.mjs", self.member, *argv]
        return argv

    def build_env(self, **where: str | int) -> dict[str, str]:
        env = {"NODE_ENV": "production", "NO_COLOR": "1", "FORCE_COLOR": "0"}
        return {**env, **{k: v.format(**where) for k, v in self.spec.build_env}}
