"""``jupyter reactbox hub-service``: previews for every user of a JupyterHub.

The hub starts this as a managed service.  It alone holds the engine (the
backend) and the AI key; user servers hold neither, and reach it through
``relay.py`` with their own hub token.

* Every call is authenticated with the hub: the token in ``Authorization`` is
  checked by ``HubAuth`` (``GET /hub/api/user`` with that token, cached), and
  must carry ``access:services!service=<this service>``.  The caller is a hub
  user; the call acts on that user's space alone (``spaces.SpacePerUser``), so
  another user's project answers exactly as one that does not exist.
* Each user's projects live in ``<data_dir>/users/<name>/``, in folders only
  this service (root) can enter; a user sees and changes them through the
  API (files, ``%%reactbox write``, edits, undo).
* Previews keep their public path under the user's own server,
  ``/user/<name>/reactbox/preview/<project>/<token>/``: the user's server
  relays them here with its token, and this service checks that token's user
  against the path before the capability token is even looked at.
* Hub admins get ``reactbox/admin/previews``: every user's previews, with stop
  and remove.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import signal
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from jupyter_server.auth.authorizer import AllowAllAuthorizer
from jupyter_server.auth.identity import IdentityProvider, User
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import httpserver, web
from traitlets import Dict, Int, Unicode, default, validate
from traitlets.config import Application, catch_config_error

from .. import api
from .._version import __version__
from ..admission import Admission
from ..ai.editor import AIEditor
from ..answers import JsonAnswers
from ..app import ReactBoxApp
from ..backends.base import Backend
from ..builds import Builds
from ..errors import BadRequest, Forbidden, NotFound
from ..mcp import web as mcp_web
from ..proxy import PreviewProxyHandler, PreviewRequest, PreviewSocketHandler, preview_rules
from ..runtime import Runtime
from ..shared import PATH as SHARED_PATH
from ..shares import Shares
from ..spaces import Space, SpacePerUser
from ..store import StoreLock, parse_size, slugify

ADMIN_SCOPE = "admin:users"
ADMIN_FIELDS = ("id", "name", "status", "detail", "framework", "error", "created")
SHUTDOWN_WAIT = 90.0
"""Seconds a starting service waits for the data folder's last service to stop."""
OWNER_FILE = "hub-user"
"""In each user's folder: the hub name it belongs to (folder names are slugs)."""


def user_base(hub_base_url: str, name: str) -> str:
    """A user's default server's path, as JupyterHub makes it."""
    from jupyterhub.utils import url_escape_path

    return url_path_join(hub_base_url, "user", url_escape_path(name)) + "/"


def owner_of(name: str) -> str:
    """The owner a hub user's containers, networks and folder are named by: the
    name itself where it is a slug, else its slug and a hash (so no two users share one)."""
    slug = slugify(name)
    if slug == name:
        return slug
    return f"{slug[:40] or 'user'}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


class HubIdentity(IdentityProvider):
    """A caller is the hub user (not a service) whose token the hub vouches for,
    with access to this service."""

    hub_auth = None  # jupyterhub.services.auth.HubAuth, set by the service

    @property
    def auth_enabled(self) -> bool:
        return True

    async def get_user(self, handler: web.RequestHandler) -> User | None:
        model = await self.hub_model(handler)
        if model is None:
            return None
        handler._token_authenticated = True  # no cookie is ever used: no XSRF to check
        return User(username=model["name"])

    async def hub_model(self, handler: web.RequestHandler) -> dict | None:
        cached = getattr(handler, "_reactbox_hub_model", False)
        if cached is not False:
            return cached
        model = None
        match = self.hub_auth.auth_header_pat.match(
            handler.request.headers.get("Authorization", "")
        )
        if match:
            model = await self.hub_auth.user_for_token(match.group(1), sync=False)
        if model is not None and (
            model.get("kind", "user") != "user"
            or not self.hub_auth.check_scopes(self.hub_auth.access_scopes, model)
        ):
            model = None
        handler._reactbox_hub_model = model
        return model


class ServicePreview(PreviewRequest):
    """A preview relayed by its user's server: the relay's hub token names the
    user, whose space holds the project; the path must be that user's."""

    def initialize(self, spaces: SpacePerUser, identity: HubIdentity, frame_ancestors: str):
        super().initialize(None, frame_ancestors)
        self.spaces = spaces
        self.identity = identity

    def check_host(self) -> bool:
        return True  # the relay connects by address; the hub token is what counts

    async def prepare(self):
        model = await self.identity.hub_model(self)
        if model is None:
            raise Forbidden("Only a user's own server relays previews.")
        space = await self.spaces.for_user(model["name"])
        if not self.request.path.startswith(space.runtime.base_url):
            raise Forbidden("This preview link is not valid.")
        self.runtime = space.runtime
        self.previews = space.runtime.previews
        await super().prepare()

    def _record_use(self) -> None:
        self.previews.touch(self.project_id)


class ServicePreviewHandler(ServicePreview, PreviewProxyHandler):
    pass


class ServicePreviewSocketHandler(ServicePreview, PreviewSocketHandler):
    pass


class AdminPreviewsHandler(JsonAnswers, APIHandler):
    """Hub admins: every user's previews, and the lines of installs, starts and edits;
    POST ``{"user", "project", "action": "stop" | "remove"}`` acts on one."""

    async def prepare(self):
        await super().prepare()
        model = await self.settings["identity_provider"].hub_model(self)
        if model is None:
            raise Forbidden("Send a hub token.")
        scopes = set(model.get("scopes", ()))
        if not (model.get("admin") or ADMIN_SCOPE in scopes):
            raise Forbidden("Only hub admins see every user's previews.")

    def spaces(self) -> dict[str, Space]:
        return {space.owner: space for space in self.settings["reactbox_spaces"].all()}

    @web.authenticated
    async def get(self):
        users = []
        for owner, space in sorted(self.spaces().items()):
            projects = await asyncio.to_thread(space.runtime.store.list)
            listed = [space.runtime.info(p) for p in projects]
            users.append(
                {
                    "user": owner,
                    "projects": [{k: info[k] for k in ADMIN_FIELDS} for info in listed],
                }
            )
        lines = self.settings["reactbox_admission"].to_json()  # the lines of all users
        self.finish({"users": users, "admission": lines})

    @web.authenticated
    async def post(self):
        try:
            body = json.loads(self.request.body or b"{}")
            owner, project_id, action = body["user"], body["project"], body["action"]
        except (ValueError, KeyError, TypeError) as exc:
            raise BadRequest('Send {"user", "project", "action": "stop"|"remove"}.') from exc
        if action not in ("stop", "remove"):
            raise BadRequest("action is 'stop' or 'remove'.")
        space = self.spaces().get(owner)
        if space is None:
            raise NotFound(f"{owner} has no previews here.")
        await asyncio.to_thread(space.runtime.store.get, project_id)  # 404 if none
        if action == "stop":
            await space.runtime.stop(project_id, detail="Stopped by a hub admin.")
        else:
            await space.runtime.delete(project_id)
        self.log.info("Admin %s: %s %s/%s", self.current_user.username, action, owner, project_id)
        self.set_status(204)
        self.finish()


class HubService(Application):
    """The hub-managed service that runs every user's previews."""

    name = "jupyter-reactbox-hub-service"
    version = __version__
    description = __doc__
    classes: ClassVar[list] = [ReactBoxApp, Runtime, Admission, AIEditor, Builds, Shares, Backend]

    config_file = Unicode(
        "",
        help="A config file (c.HubService.*, c.ReactBoxApp.*, c.DockerBackend.*).",
    ).tag(config=True)

    data_dir = Unicode(
        "/var/lib/jupyter-reactbox",
        help="""Where every user's projects live (users/<name>/), and the package caches.
        Only this service (root) enters it; users see their projects through the API.""",
    ).tag(config=True)

    service_url = Unicode(
        help="Where this service listens. Defaults to $JUPYTERHUB_SERVICE_URL.",
    ).tag(config=True)

    @default("service_url")
    def _default_service_url(self):
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101")

    prefix = Unicode(help="Its path through the hub's proxy: $JUPYTERHUB_SERVICE_PREFIX.").tag(
        config=True
    )

    @default("prefix")
    def _default_prefix(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/reactbox/")

    hub_base_url = Unicode(help="The hub's base URL: $JUPYTERHUB_BASE_URL.").tag(config=True)

    @default("hub_base_url")
    def _default_hub_base_url(self):
        return os.environ.get("JUPYTERHUB_BASE_URL", "/")

    max_running_total = Int(
        0,
        help="""Most previews of all users together (0: no cap). A start beyond it is a
        429 that says so; c.Runtime.max_running is each user's own limit.""",
    ).tag(config=True)

    user_disk_quota = Unicode(
        "",
        help="""Most disk all of one user's projects may use together, e.g. '10g' (empty
        or '0': none). An upload past it is a 413 that says so, and a preview over it
        does not start (c.ReactBoxApp.disk_quota is each project's own).""",
    ).tag(config=True)

    @validate("user_disk_quota")
    def _validate_user_disk_quota(self, proposal):
        parse_size(proposal["value"])
        return proposal["value"]

    max_body_size = Int(
        0, help="Largest request body (0: c.ReactBoxApp.max_upload_bytes plus a margin)."
    ).tag(config=True)

    aliases = Dict({"config": "HubService.config_file", "data-dir": "HubService.data_dir"})

    @catch_config_error
    def initialize(self, argv=None):
        super().initialize(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
        if "on_shutdown" not in self.config.ReactBoxApp | self.config.Runtime:
            # A restart of the service (an upgrade, a crash) leaves previews running;
            # the next one re-attaches them.
            self.config.Runtime.on_shutdown = "keep"
        self.reactbox = ReactBoxApp(parent=self, log=self.log)
        os.umask(0o077)
        Path(self.data_dir, "users").mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o711)

    def make_space(self, name: str) -> Space:
        """A user's space: their folder, their backend (containers and networks named
        and labelled with them), the service's AI key."""
        owner = owner_of(name)
        home = Path(self.data_dir, "users", owner)
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        (home / OWNER_FILE).write_text(name)
        space = self.reactbox.make_space(
            owner,
            base_url=user_base(self.hub_base_url, name),
            projects_dir=home / "projects",
            cache_dir=home / "cache",
            hub_service=True,
        )
        space.disk_quota = parse_size(self.user_disk_quota)
        # Every user's shares in one folder, served at this service's prefix.
        space.shares = Shares(
            parent=self.reactbox,
            log=self.log,
            store=space.runtime.store,
            builds=space.builds,
            base_url=self.prefix,
            root=self.shares_root,
            owner=name,
        )
        return space

    @property
    def shares_root(self) -> Path:
        return Path(self.data_dir, "shares")

    def make_app(self) -> web.Application:
        from jupyterhub.services.auth import HubAuth, HubOAuth, HubOAuthCallbackHandler

        from .shared import HubSharedHandler

        identity = HubIdentity(parent=self)
        identity.hub_auth = HubAuth(cache_max_age=60)
        # Viewers of shared snapshots log in with the hub (OAuth; the callback sets
        # this service's cookie).
        hub_oauth = HubOAuth.instance(cache_max_age=60)
        self.shares_root.mkdir(mode=0o700, exist_ok=True)
        self.spaces = SpacePerUser(self.make_space, max_running_total=self.max_running_total)
        self.reactbox.spaces = self.spaces  # a start short of memory stops any user's unused
        rb = self.reactbox
        settings = {
            "base_url": self.prefix,
            "identity_provider": identity,
            "authorizer": AllowAllAuthorizer(parent=self),
            "allow_remote_access": True,
            "reactbox_spaces": self.spaces,
            "reactbox_admission": rb.admission,
            "reactbox_max_upload_bytes": rb.max_upload_bytes,
            "log_function": _log_request,
            # Signs the OAuth state and login cookies of share viewers (a restart
            # only asks them to pass through the hub's login again).
            "cookie_secret": secrets.token_bytes(32),
            # MCP's tools call this service's API as their caller (mcp/web.py); they
            # read no folder: this service is root, and a folder is the user's.
            "reactbox_self_url": self._loopback_url(),
        }
        base = self.hub_base_url.rstrip("/")
        handlers: list = preview_rules(
            base + r"/user/[^/]+/reactbox/preview/([^/]+)/([^/]+)(/.*|)",
            {"spaces": self.spaces, "identity": identity, "frame_ancestors": rb.frame_ancestors},
            ServicePreviewHandler,
            ServicePreviewSocketHandler,
        )
        handlers += [
            (url_path_join(self.prefix, path), h) for path, h in api.handlers() + mcp_web.handlers()
        ]
        shared = {
            "spaces": self.spaces,
            "hub_oauth": hub_oauth,
            "shares_root": self.shares_root,
            "frame_ancestors": rb.frame_ancestors,
        }
        handlers.append((url_path_join(self.prefix, SHARED_PATH), HubSharedHandler, shared))
        callback = urlsplit(hub_oauth.oauth_redirect_uri).path or url_path_join(
            self.prefix, "oauth_callback"
        )
        handlers.append((callback, HubOAuthCallbackHandler))
        handlers.append(
            (url_path_join(self.prefix, "reactbox/admin/previews"), AdminPreviewsHandler)
        )
        return web.Application(handlers, **settings)

    def _loopback_url(self) -> str:
        """This service's own API, on the address it listens at."""
        url = urlsplit(self.service_url)
        host = url.hostname if url.hostname not in (None, "", "0.0.0.0", "::") else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{url.port or 80}{self.prefix}"

    def start(self):
        import tornado.ioloop

        # One service per data folder (a restart's predecessor may still be stopping).
        lock = StoreLock(Path(self.data_dir))
        if not lock.acquire(wait=SHUTDOWN_WAIT):
            found = lock.manager() or {}
            self.log.critical(
                "Another jupyter-reactbox hub service (pid %s) uses %s; not starting.",
                found.get("pid", "?"),
                self.data_dir,
            )
            self.exit(1)
        lock.announce({"url": self.service_url})
        loop = tornado.ioloop.IOLoop.current()
        app = self.make_app()
        self.app_settings = app.settings
        limit = self.max_body_size or self.reactbox.max_upload_bytes + (1 << 20)
        server = httpserver.HTTPServer(app, max_body_size=limit)
        url = urlsplit(self.service_url)
        server.listen(url.port or 80, url.hostname or "127.0.0.1")
        self.log.info("jupyter-reactbox hub service on %s%s", self.service_url, self.prefix)
        loop.add_callback(self._recover_all)

        def stop(*_):
            loop.add_callback_from_signal(self._stop, server, loop)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        loop.start()

    async def _recover_all(self) -> None:
        """A restarted service re-attaches every user's previews (links stay valid)."""
        users = await asyncio.to_thread(self._known_users)
        results = await asyncio.gather(
            *(self.spaces.for_user(name) for name in users), return_exceptions=True
        )
        for name, result in zip(users, results, strict=True):
            if isinstance(result, Exception):
                self.log.warning("Could not re-attach the previews of %s: %s", name, result)

    def _known_users(self) -> list[str]:
        folders = Path(self.data_dir, "users").iterdir()
        return sorted((p / OWNER_FILE).read_text() for p in folders if (p / OWNER_FILE).is_file())

    async def _stop(self, server, loop) -> None:
        server.stop()
        if (transport := self.app_settings.get("reactbox_mcp")) is not None:
            await transport.close()
        try:
            await asyncio.wait_for(self.spaces.close(), 60)
        finally:
            loop.stop()


def _log_request(handler: web.RequestHandler) -> None:
    """The access log, with no preview path: those carry capability tokens."""
    request, status = handler.request, handler.get_status()
    path = request.path
    if "/reactbox/preview/" in path:
        if status < 400:
            return
        path = path.split("/reactbox/preview/")[0] + "/reactbox/preview/…"
    log = web.access_log.info if status < 400 else web.access_log.warning
    log("%d %s %s %.1fms", status, request.method, path, 1000 * request.request_time())


main = launch_instance = HubService.launch_instance

if __name__ == "__main__":
    main()
