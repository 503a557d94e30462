"""The jupyter-reactbox server extension: configuration and wiring.

Every setting is a trait of ``ReactBoxApp`` (``c.ReactBoxApp.<name>``) with its
help text, so ``jupyter server --help-all`` is the reference.
"""

from __future__ import annotations

import functools
import getpass
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from tornado.routing import AnyMatches, Rule
from traitlets import Bool, CaselessStrEnum, Float, Int, Type, Unicode, Union, default, validate

from . import admission, api, backends, boxes, bridge, history, origins, shared
from .ai import journal
from .ai.editor import AIEditor
from .archive import Limits as ArchiveLimits
from .backends.base import Backend
from .backends.docker import DockerBackend
from .builds import Builds
from .errors import ReactBoxError
from .hub import SERVICE_URL_ENV, relay
from .mcp import web as mcp_web
from .mcp.tools import Folders
from .moved import MovedSettings
from .peer import PeerServer
from .proxy import (
    KeptAnswers,
    OriginPreviewHandler,
    OriginPreviewSocketHandler,
    origin_host_pattern,
    preview_rules,
)
from .runtime import Runtime, stop_unused
from .shares import Shares
from .spaces import OneSpace, Space, Spaces
from .store import Project, ProjectStore, StoreLock, parse_size, slugify
from .supply import Policy as SupplyPolicy


class ReactBoxApp(MovedSettings, ExtensionApp):
    name = "jupyter_reactbox"
    description = "Live, isolated previews of uploaded React apps."
    spaces: Spaces | None = None
    """The spaces this process serves: its user's, or the hub service's users'."""

    projects_dir = Unicode(
        help="""Folder holding one sub-folder per project (its files, git history and
        logs). Defaults to `reactbox/projects` in the Jupyter data dir.""",
    ).tag(config=True)

    @default("projects_dir")
    def _default_projects_dir(self):
        return os.path.join(jupyter_data_dir(), "reactbox", "projects")

    cache_dir = Unicode(
        help="""Package-manager cache shared by this user's installs (npm, yarn, pnpm,
        corepack). Defaults to `.cache` in projects_dir.""",
    ).tag(config=True)

    @default("cache_dir")
    def _default_cache_dir(self):
        return os.path.join(self.projects_dir, ".cache")

    backend = Union(
        [Unicode(), Type(klass="jupyter_reactbox.backends.base.Backend")],
        default_value="auto",
        help="""Where dev servers run. 'auto': Docker when an engine answers (DOCKER_HOST
        or the local socket), else 'local'. 'docker': a hardened container per preview
        (c.DockerBackend.*). 'local': processes on this machine, in a bubblewrap
        sandbox where it can run (c.LocalBackend.*). Or a Backend class, or the name
        of one that a package adds (entry point group jupyter_reactbox.backends).""",
    ).tag(config=True)

    owner = Unicode(
        help="""Name that labels and names this server's containers and networks, so
        several Jupyter users can share one engine. Defaults to $JUPYTERHUB_USER,
        else the login name.""",
    ).tag(config=True)

    @default("owner")
    def _default_owner(self):
        return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()

    @validate("owner")
    def _validate_owner(self, proposal):
        slug = slugify(proposal["value"])
        if not slug:
            raise ValueError(f"owner {proposal['value']!r} has no letters or digits")
        return slug

    hub_service_url = Unicode(
        help=f"""The jupyter-reactbox JupyterHub service this server uses instead of
        running previews itself (`jupyter reactbox hub-config` sets it for user
        servers). This server then holds no engine and no AI key: its REST API and
        preview paths are relayed to the service with its own hub token. Defaults
        to ${SERVICE_URL_ENV}.""",
    ).tag(config=True)

    @default("hub_service_url")
    def _default_hub_service_url(self):
        return os.environ.get(SERVICE_URL_ENV, "")

    disk_quota = Unicode(
        "2g",
        help="""Most disk a project may use (files, node_modules, history), e.g. '500m',
        '2g'; checked at start and every 30 s while it runs. Empty or '0': no quota.""",
    ).tag(config=True)

    bridge_max_bytes = Unicode(
        "4m",
        help="""Largest message a preview's page may send its notebook over the bridge
        (a call's arguments, an event, a state value), e.g. '1m'. The notebook's
        answers may be up to 16 times as large.""",
    ).tag(config=True)

    bridge_call_timeout = Float(
        60,
        help="""Seconds a call from an app to a function its notebook exposed may take
        before the app's promise is rejected (the function itself runs on).""",
    ).tag(config=True)

    file_quota = Int(
        200_000,
        help="""Most files and folders a project may hold (its node_modules included):
        the inodes it spends, which a byte quota does not count; checked with
        disk_quota. 0: no limit.""",
    ).tag(config=True)

    disk_limits = CaselessStrEnum(
        ["auto", "image", "check"],
        default_value="auto",
        help="""How disk_quota and file_quota are kept. 'image': each project's work
        tree is a filesystem image of disk_quota bytes and file_quota files, mounted
        for it (needs root, loop devices and e2fsprogs): a write past them is refused
        at once by the kernel, inside that project, and no project can take the space
        of the others or of the server. 'check': projects are plain folders, counted at
        start and every 30 s (a project that writes faster fills that much more before
        it is stopped). 'auto': 'image' where this server can mount one, else 'check';
        `jupyter reactbox doctor` says which. Projects keep what they were made with.""",
    ).tag(config=True)

    def _box(self) -> tuple[int, int] | None:
        """(bytes, files) of each new project's filesystem, or None (plain folders)."""
        if self.disk_limits == "check":
            return None
        problem = boxes.problem()
        if problem is not None:
            if self.disk_limits == "image":
                self.log.error(
                    "c.ReactBoxApp.disk_limits is 'image', but %s: quotas are checked "
                    "every 30 s instead",
                    problem,
                )
            return None
        return parse_size(self.disk_quota), self.file_quota

    @validate("disk_quota")
    def _validate_quota(self, proposal):
        parse_size(proposal["value"])
        return proposal["value"]

    allow_remote_dependencies = Bool(
        False,
        help="""Allow dependencies from outside the package registry: git repositories,
        URLs, tarballs and paths outside the app. They fetch and build code from
        anywhere (a git dependency's `prepare` script runs even with ignore_scripts),
        so apps asking for them are refused at upload and before every install.""",
    ).tag(config=True)

    allow_vulnerable_vite = Bool(
        False,
        help="""Serve previews with a Vite release that has known ways to read files
        outside the app through its dev server (older than 5.4.20, 6.4.2, 7.3.2 or
        8.0.5 in its line, or older than 5). Such apps are refused at upload (by their
        lockfile) and after each install (by the Vite installed).""",
    ).tag(config=True)

    max_upload_bytes = Int(100 * 1024 * 1024, help="Largest accepted ZIP upload, in bytes.").tag(
        config=True
    )
    max_unpacked_bytes = Int(
        300 * 1024 * 1024, help="Largest total size of an upload's files once unpacked."
    ).tag(config=True)
    max_upload_entries = Int(
        10_000, help="Most entries (files and folders) an uploaded ZIP may have."
    ).tag(config=True)
    max_compression_ratio = Float(
        100.0, help="Largest unpacked-to-packed size ratio (ZIP-bomb guard)."
    ).tag(config=True)

    frame_ancestors = Unicode(
        "'self'",
        help="""CSP frame-ancestors of preview responses: who may embed a preview in a
        frame. 'self' lets JupyterLab and notebook outputs on this server's origin do
        it (JupyterHub's `frame-ancestors 'none'` does not apply to previews).""",
    ).tag(config=True)

    preview_origin_template = Unicode(
        "",
        help="""Serve each preview at / of its own origin instead of a sandboxed page
        under Jupyter's path, e.g. 'https://{project}.preview.example.org' (a wildcard
        name that reaches this server; a registrable domain of its own is best, so no
        preview shares a site with Jupyter). Set frame_ancestors to Jupyter's origin
        with it. Empty: as preview_origin says.""",
    ).tag(config=True)

    preview_origin = CaselessStrEnum(
        ["auto", "separate", "path"],
        default_value="auto",
        help="""Where previews are served. 'separate': each at / of an origin of its
        own: preview_origin_template's, or without one http://<project>.localhost:<port>
        (Chromium and Firefox send every *.localhost name to this machine), where the
        app's storage, cookies, service workers and absolute URLs work as under `npm
        run dev` and nothing of Jupyter is. 'path': under Jupyter's path, in a CSP
        sandbox (an opaque origin), which works behind any proxy (JupyterHub, Binder,
        a remote server). 'auto': 'separate' where a template is set or this server
        listens on this machine only (localhost, no TLS, no Unix socket), else 'path'.
        The project JSON, the Lab panel and `doctor` say which, and why.""",
    ).tag(config=True)

    LOCAL_TEMPLATE = origins.LOCAL_TEMPLATE

    def _origin_template(self, *, hub_service: bool = False) -> tuple[str, str]:
        """(the preview origin template, '' for path mode; why): ``origins.choose``."""
        return origins.choose(
            template=self.preview_origin_template,
            mode=self.preview_origin,
            server=self.serverapp,
            hub_service=hub_service,
        )

    @validate("preview_origin_template")
    def _validate_origin_template(self, proposal):
        return origins.checked(proposal["value"])

    def _make_editor(self, runtime: Runtime) -> AIEditor | None:
        """The owner's AI editor (``c.AIEditor``), or None where no model is set."""
        editor = AIEditor(
            parent=self,
            log=self.log,
            budget_file=runtime.store.root / ".ai-tokens.json",
            compile_check=runtime.views.compile_errors,
            pages=runtime.previews,
            screenshot=lambda project_id, browser: runtime.views.screenshot(
                project_id, browser, self._own_url()
            ),
            load_page=lambda project_id, browser: runtime.views.load_page(
                project_id, browser, self._own_url()
            ),
            queue=lambda project_id, tell: runtime.admission["edit"].place(
                runtime.owner, project_id, tell
            ),
            **self._moved_settings("AIEditor"),
        )
        return editor if editor.configured else None

    def _own_url(self) -> str | None:
        """This Jupyter server on a local address (its previews need no login), or
        None: in the hub service, or on a Unix socket or HTTPS."""
        server = self.serverapp
        if server is None or self.hub_service_url or server.sock or server.certfile:
            return None
        ip = server.ip if server.ip not in ("", "0.0.0.0", "::", "*", "localhost") else "127.0.0.1"
        return f"http://{f'[{ip}]' if ':' in ip else ip}:{server.port}"

    def _repair(self, project: Project) -> None:
        """Move an older project's history out of its app folder, and undo a change the
        last server died during.  The work tree is the sandbox's: if it blocks the
        repair (a folder where a file must go back), the project says so and waits,
        and the server starts all the same."""
        try:
            if history.migrate(project.app_dir):
                self.log.info("%s: history moved out of the app folder.", project.id)
            undone = history.repair(project.app_dir)
        except (ReactBoxError, OSError, subprocess.CalledProcessError) as exc:
            self.log.error("%s: its history could not be repaired: %s", project.id, exc)
            return
        if undone:
            self.log.warning(
                "%s: the server stopped during a change (%s); the project is as before it.",
                project.id,
                undone["what"],
            )
            if undone.get("record"):
                journal.record_interrupted(project, undone["record"])

    def _bridge_limits(self) -> bridge.Limits:
        largest = parse_size(self.bridge_max_bytes) or bridge.Limits.max_bytes
        return bridge.Limits(
            max_bytes=largest,
            kernel_max_bytes=16 * largest,
            call_timeout=self.bridge_call_timeout,
            bytes_per_second=max(2 * largest, 8 << 20),
        )

    @functools.cached_property
    def admission(self) -> admission.Admission:
        """The lines of installs, starts and edits (``c.Admission``), shared by every
        space this process serves (every user of the hub service)."""
        return admission.Admission(
            parent=self,
            log=self.log,
            make_room=self._make_room,
            **self._moved_settings("Admission"),
        )

    async def _make_room(self, short: int) -> int:
        """Stop previews nobody uses (frozen first, then the least recently used with no
        page open) to free about ``short`` bytes: how many it stopped."""
        spaces = self.spaces.all() if self.spaces is not None else []
        per = self.admission.memory.per_start or short
        return await stop_unused([s.runtime for s in spaces], -(-short // per))

    def make_space(
        self,
        owner: str,
        *,
        base_url: str,
        projects_dir: Path,
        cache_dir: Path | str,
        hub_service: bool = False,
    ) -> Space:
        """One owner's store, runtime (with its backend) and AI editor, as configured:
        a single-user server's own, or one user's in the hub service."""
        store = ProjectStore(
            projects_dir,
            ArchiveLimits(
                max_entries=self.max_upload_entries,
                max_total_bytes=self.max_unpacked_bytes,
                max_ratio=self.max_compression_ratio,
            ),
            supply_policy=SupplyPolicy(
                allow_remote_dependencies=self.allow_remote_dependencies,
                allow_vulnerable_vite=self.allow_vulnerable_vite,
            ),
            box=self._box(),
        )
        store.cleanup_staging()
        for project_id in store.mount_all():
            self.log.error("%s: its filesystem (box.img) could not be mounted", project_id)
        for project in store.list():
            self._repair(project)
        template, why = self._origin_template(hub_service=hub_service)
        runtime = Runtime(
            store,
            self._make_backend(owner, store.id, str(cache_dir), boxed=store.box is not None),
            parent=self,
            base_url=base_url,
            disk_quota=parse_size(self.disk_quota),
            file_quota=self.file_quota,
            preview_origin_template=template,
            preview_mode_why=why,
            bridge_limits=self._bridge_limits(),
            owner=owner,
            admission=self.admission,
            log=self.log,
            **self._moved_settings("Runtime"),
        )
        editor = self._make_editor(runtime)
        runtime.views.via = self._own_url
        if editor is not None:
            runtime.busy = editor.busy  # an edit in progress is use
            runtime.views.browser = editor.browser
        builds = Builds(parent=self, log=self.log, backend=runtime.backend, changed=runtime.notify)
        runtime.builds = builds
        # (The hub service gives each user's space shares of its own: hub/service.py.)
        shares = Shares(parent=self, log=self.log, store=store, builds=builds, base_url=base_url)
        return Space(owner, runtime, editor, builds=builds, shares=shares)

    def initialize_settings(self):
        self.settings["reactbox_max_upload_bytes"] = self.max_upload_bytes
        # MCP's upload reads app folders under the server's root, as its file browser.
        self.settings["reactbox_mcp_folders"] = Folders(Path(self.serverapp.root_dir))
        if self.hub_service_url:
            self.log.info(
                "jupyter-reactbox: previews run by the JupyterHub service at %s",
                self.hub_service_url,
            )
            self.spaces = None
            self.service = relay.connect(self.hub_service_url)
            return
        self.store_lock = StoreLock(Path(self.projects_dir))
        if not self.store_lock.acquire():
            # Another server manages this folder: relay to it (or say where it is).
            self.log.warning(
                "jupyter-reactbox: the projects in %s are managed by another Jupyter "
                "server; this one relays to it",
                self.projects_dir,
            )
            self.spaces = None
            self.service = PeerServer(self.store_lock, self.serverapp.base_url)
            return
        space = self.make_space(
            self.owner,
            base_url=self.serverapp.base_url,
            projects_dir=Path(self.projects_dir),
            cache_dir=self.cache_dir,
        )
        key = space.editor.api_key if space.editor is not None else ""
        if key and os.environ.get("OPENAI_API_KEY") == key:
            # Kernels and terminals started from now on do not inherit it; the
            # key stays in the editor's client.  (The server's initial
            # environment, in /proc, still holds it: docs/security.md.)
            del os.environ["OPENAI_API_KEY"]
        self.spaces = OneSpace(space)
        self.settings["reactbox_spaces"] = self.spaces

    def _make_backend(
        self, owner: str, store: str, cache_dir: str, *, boxed: bool = False
    ) -> Backend:
        cls, why = backends.choose(self.backend)
        settings = self._moved_settings("Backend", cls.__name__)
        if issubclass(cls, DockerBackend):
            settings.update(self._moved_settings("DockerBackend"))
        backend = cls(
            parent=self,
            log=self.log,
            owner=owner,
            store=store,
            boxed=boxed,
            cache_dir=cache_dir,
            **settings,
        )
        isolation = backend.isolation()
        self.log.info(
            "jupyter-reactbox runs previews with the %s backend (%s): %s",
            isolation.backend,
            why,
            isolation.how,
        )
        return backend

    def initialize_handlers(self):
        self.handlers.extend(mcp_web.handlers())  # calls the API below, relayed or not
        if self.spaces is None:  # the hub service's, or another server's of this folder
            self.handlers.extend(relay.handlers(self.service))
            return
        self.handlers.extend(api.handlers())
        self.handlers.extend(shared.handlers(self.spaces, self.frame_ancestors))
        runtime = self.spaces.space.runtime
        self._preview_options = options = {
            "runtime": runtime,
            "frame_ancestors": self.frame_ancestors,
        }
        # Preview routes are tornado rules (HTTP and websockets go to different
        # handlers).  They go first: a module request is not matched against
        # every route of Jupyter's before its own.
        app = self.serverapp.web_app
        base = app.settings["base_url"]
        previews = url_path_join(base, r"/reactbox/preview")
        app.add_handlers(
            ".*$",
            preview_rules(previews + r"/([^/]+)/([^/]+)(/.*|)", options)
            # Anything else under preview/ is a 403 from the same handler, not a
            # redirect or a Jupyter page.
            + preview_rules(previews + r"(?:/.*)?", options),
        )
        app.default_router.rules.insert(0, app.default_router.rules.pop(-2))
        # Before them, the short way for modules the preview's cache holds (a
        # router, not a handler: Jupyter's add_handlers takes only handlers).
        kept = app.settings["reactbox_kept_answers"] = KeptAnswers(
            previews + "/", app_settings=app.settings, **options
        )
        app.default_router.rules.insert(0, Rule(AnyMatches(), kept))
        if runtime.preview_origin_template:
            self._serve_preview_hosts(options, runtime.preview_origin_template)

    def _serve_preview_hosts(self, options: dict, template: str) -> None:
        """Separate-origin mode: every path of a preview host is the preview's.
        The rule goes first, before Jupyter's own (which match any host)."""
        pattern = origin_host_pattern(template)
        app = self.serverapp.web_app
        self._origin_options = {**options, "host_pattern": pattern}
        app.add_handlers(
            pattern,
            preview_rules(
                r"/.*", self._origin_options, OriginPreviewHandler, OriginPreviewSocketHandler
            ),
        )
        app.default_router.rules.insert(0, app.default_router.rules.pop(-2))
        if template == self.LOCAL_TEMPLATE:
            return  # its frame ancestors are this server's own origins, once it listens
        if self.frame_ancestors == "'self'":
            self.log.warning(
                "Previews have their own origins (preview_origin_template), so 'self' in "
                "c.ReactBoxApp.frame_ancestors is the preview's own: set it to the origin "
                "people open Jupyter at, or JupyterLab cannot show previews beside notebooks."
            )

    def _kernel_environment(self) -> dict[str, str]:
        """Where this server's kernels find it (``jupyter_reactbox.kernel.client``).
        The token itself stays in the server's info file, readable by this user only."""
        app = self.serverapp
        if app.sock:
            return {}  # a kernel's client cannot speak HTTP over a Unix socket
        if app.ip in ("", "0.0.0.0", "::", "localhost", "127.0.0.1", "::1") and not app.certfile:
            url = f"http://127.0.0.1:{app.port}{app.base_url}"
        else:
            url = app.connection_url
        return {"JUPYTER_REACTBOX_URL": url, "JUPYTER_REACTBOX_SERVER_INFO": app.info_file}

    async def _start_jupyter_server_extension(self, serverapp):
        # Kernels inherit the server's environment.
        self._kernel_env = self._kernel_environment()
        os.environ.update(self._kernel_env)
        # MCP's tools call the API here, as their caller (mcp/web.py).
        serverapp.web_app.settings["reactbox_self_url"] = self._kernel_env.get(
            "JUPYTER_REACTBOX_URL"
        )
        if self.spaces is None:
            return
        _stop_on_sigint(serverapp)
        runtime = self.spaces.space.runtime
        if runtime.preview_origin_template == self.LOCAL_TEMPLATE:
            self._serve_locally(runtime)
        try:
            await self.spaces.space.runtime.recover()
        except Exception as exc:  # the server must come up even with the engine down
            self.log.warning("jupyter-reactbox could not re-attach previews: %s", exc)
        if self._kernel_env:  # where a second server of this folder finds this one
            app = self.serverapp
            where = {"url": self._kernel_env["JUPYTER_REACTBOX_URL"], "base_url": app.base_url}
            self.store_lock.announce({**where, "info_file": app.info_file})

    def _serve_locally(self, runtime: Runtime) -> None:
        """Previews at <project>.localhost of this server's port, now that it listens;
        framed by the pages of this server's own origins unless configured."""
        port = self.serverapp.port
        template = self.LOCAL_TEMPLATE.replace("{port}", str(port))
        runtime.preview_origin_template = runtime.previews.origin_template = template
        if "frame_ancestors" not in self.config.ReactBoxApp:
            own = " ".join(f"http://{h}:{port}" for h in ("localhost", "127.0.0.1", "[::1]"))
            self._preview_options["frame_ancestors"] = own
            self._origin_options["frame_ancestors"] = own

    async def stop_extension(self):
        if getattr(self, "_stopped", False):
            return  # once is enough: a second stop finds nothing to do
        self._stopped = True
        for name, value in getattr(self, "_kernel_env", {}).items():
            if os.environ.get(name) == value:
                del os.environ[name]
        if self.spaces is not None:
            await self.spaces.close()
        if (transport := self.serverapp.web_app.settings.get("reactbox_mcp")) is not None:
            await transport.close()
        if getattr(self, "service", None) is not None:
            await self.service.close()
        if getattr(self, "store_lock", None) is not None:
            self.store_lock.release()


def _stop_on_sigint(serverapp) -> None:
    """A server with no terminal takes SIGINT as an interrupt that skips every
    shutdown hook, so its dev servers would outlive it; a spawner or process
    manager stops servers with SIGINT first (JupyterHub's local spawner does, then
    SIGTERM).  So, as ``jupyterhub-singleuser`` does, SIGINT stops the server as
    SIGTERM does, and previews go as ``on_shutdown`` says.  A terminal's Ctrl-C
    (Jupyter asks to confirm) is left as it is."""
    if threading.current_thread() is not threading.main_thread():
        return
    if sys.stdin and sys.stdin.isatty():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, serverapp._signal_stop)
