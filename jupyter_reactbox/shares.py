"""Published snapshots: a build of an app served as static files at a link that
expires, and that its owner can revoke at once.

A share is a production build (``builds.py``) made for its own link,
``{base_url}reactbox/shared/<share-id>/``, where the server serves its files
with no dev server and nothing running, in the same opaque-origin sandbox as
previews (``proxy.secure``): the snapshot's code cannot read the viewer's
cookies nor call any Jupyter API as the viewer or the owner.

On a single-user server the link is a capability: its id (144 random bits)
is the only key, so whoever has the link can open it until it expires or is
revoked; nothing in it names the owner's token.  A link that does not exist,
has expired or was revoked is the same 404.

Under JupyterHub the service serves the links (``hub/service.py``), at
``/services/<name>/reactbox/shared/<share-id>/``: a link names neither the
owner's server nor a token.  Its pages open only for a hub user who logged in
(the service's OAuth) and whom the share names: its owner, a user in
``users``, a member of a group in ``groups`` (or anyone, for a ``public``
share, if ``c.Shares.allow_public``); anyone else gets the 404 of a link that
does not exist.  The files a page loads (scripts, styles, images, a static
export's page data) come with no credential from its opaque origin, so they
need only the link's id.

Each share is a small JSON record: in ``<projects>/.shares/``, or in the hub
service's one folder of shares, with its owner.  Revoking removes it and its
build.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jupyter_server.utils import url_path_join
from traitlets import Bool, Float, Int
from traitlets.config import LoggingConfigurable

from .builds import Builds
from .errors import BadRequest, Forbidden, NotFound, ProjectNotFound, TooManyShares
from .frameworks import AppPlan
from .store import Project, ProjectStore

ID_RE = re.compile(r"^[A-Za-z0-9_-]{24}$")
DAY = 86400.0
KEPT_EXPIRED = DAY
"""Seconds an expired share stays in the owner's list (as expired) before it is
removed, with its build."""
LAST_ACCESS_EVERY = 60.0
"""Seconds between two writes of a share's last access."""
MAX_NAMES = 100
"""Hub users, or groups, one share may name."""
_NAME = re.compile(r"^[^\x00-\x1f/]{1,255}$")


@dataclass
class Share:
    id: str
    project: str
    build: str
    url: str
    created: float
    expires: float
    last_access: float | None = None
    owner: str = ""
    """Under JupyterHub: the hub user whose share it is."""
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    public: bool = False

    def to_json(self, status: str, error: str | None = None) -> dict:
        return {**asdict(self), "status": status, "error": error}


class Shares(LoggingConfigurable):
    """The published snapshots of one user's projects."""

    default_days = Float(7, help="Days a new share link lives unless its owner says.").tag(
        config=True
    )
    max_days = Float(30, help="Most days a share link may live.").tag(config=True)
    max_per_user = Int(20, help="Share links one user may have (expired ones aside).").tag(
        config=True
    )
    allow_public = Bool(
        False,
        help="""Under JupyterHub: whether a share may be public, its pages open to
        anyone with the link, logged in or not. Off: only the hub users and groups
        its owner names (and the owner).""",
    ).tag(config=True)

    def __init__(
        self,
        *,
        store: ProjectStore,
        builds: Builds,
        base_url: str,
        root: Path | None = None,
        owner: str = "",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.store = store
        self.builds = builds
        self.base_url = base_url
        """Where links are served: this server's base URL, or the hub service's prefix."""
        self.root = root or store.root / ".shares"
        self.owner = owner
        """Under JupyterHub: the hub user (the service keeps every user's shares in
        one folder, ``root``, each with its owner); '' on a single-user server."""
        self._accessed: dict[str, float] = {}

    def _file(self, share_id: str) -> Path:
        if not ID_RE.match(share_id):
            raise NotFound("No such share.")
        return self.root / f"{share_id}.json"

    def _read(self, share_id: str) -> Share:
        try:
            return Share(**json.loads(self._file(share_id).read_text()))
        except (OSError, ValueError, TypeError):
            raise NotFound("No such share.") from None

    def _write(self, share: Share) -> None:
        self.root.mkdir(exist_ok=True)
        tmp = self.root / f".{share.id}.json"
        tmp.write_text(json.dumps(asdict(share)))
        os.replace(tmp, self._file(share.id))

    def _all(self) -> list[Share]:
        found = []
        for path in self.root.glob("*.json") if self.root.is_dir() else ():
            with contextlib.suppress(NotFound):
                share = self._read(path.stem)
                if share.owner == self.owner:
                    found.append(share)
        return sorted(found, key=lambda s: s.created, reverse=True)

    def _mine(self, share_id: str) -> Share:
        """The user's share ``share_id``: another user's is NotFound, as none is."""
        share = self._read(share_id)
        if share.owner != self.owner:
            raise NotFound("No such share.")
        return share

    # -- the owner's verbs --------------------------------------------------------

    def create(
        self,
        project: Project,
        plan: AppPlan,
        days: float | None = None,
        *,
        users: Iterable[str] = (),
        groups: Iterable[str] = (),
        public: bool = False,
    ) -> dict:
        """Build ``project`` for a new link living ``days`` (the default if None), and
        publish it once built; under JupyterHub, for the hub ``users`` and members of
        ``groups`` it names (or anyone, ``public``); the share's JSON."""
        users, groups = _names(users, "users"), _names(groups, "groups")
        if not self.owner and (users or groups or public):
            raise BadRequest(
                "Sharing with hub users or groups, or publicly, is for JupyterHub: on "
                "this server a link opens for whoever has it."
            )
        if public and not self.allow_public:
            raise Forbidden(
                "Public links are off on this hub (c.Shares.allow_public): name the "
                "users or groups to share with."
            )
        days = self.default_days if days is None else days
        if not 0 < days <= self.max_days:
            raise BadRequest(
                f"A share lives more than 0 and at most {self.max_days:g} days (c.Shares.max_days)."
            )
        now = time.time()
        live = [s for s in self._prune() if s.expires > now]
        if len(live) >= self.max_per_user:
            raise TooManyShares(
                f"You have {len(live)} share links (c.Shares.max_per_user); revoke one first."
            )
        share_id = secrets.token_urlsafe(18)
        url = url_path_join(self.base_url, "reactbox", "shared", share_id) + "/"
        build = self.builds.start(project, plan, url, share=share_id)
        share = Share(
            share_id, project.id, build.id, url, now, now + days * DAY,
            owner=self.owner, users=users, groups=groups, public=public,
        )  # fmt: skip
        self._write(share)
        self.log.info("Shared %s as %s until %s", project.id, share_id, time.ctime(share.expires))
        return self.describe(share)

    def describe(self, share: Share) -> dict:
        """The share's JSON, with its status: 'building', 'live', 'failed' or 'expired'."""
        if share.expires <= time.time():
            return share.to_json("expired")
        try:
            build = self.builds.get(self.store.get(share.project), share.build)
        except (NotFound, ProjectNotFound):
            return share.to_json("failed", "Its project or build is gone.")
        status = {"ready": "live"}.get(build.status, build.status)
        return share.to_json(status, build.error)

    def list(self, project_id: str | None = None) -> list[dict]:
        """The user's shares (or one project's), newest first, with their expiry and
        last access."""
        return [self.describe(s) for s in self._prune() if project_id in (None, s.project)]

    def get(self, share_id: str) -> dict:
        return self.describe(self._mine(share_id))

    def revoke(self, share_id: str) -> None:
        """The link is dead at once (404), whatever it was."""
        self._remove(self._mine(share_id))
        self.log.info("Revoked share %s", share_id)

    def _prune(self) -> list[Share]:
        """The user's shares, once those expired more than ``KEPT_EXPIRED`` ago are
        removed."""
        now, kept = time.time(), []
        for share in self._all():
            if share.expires + KEPT_EXPIRED < now:
                self._remove(share)
            else:
                kept.append(share)
        return kept

    def _remove(self, share: Share) -> None:
        share_id = share.id
        self._file(share_id).unlink(missing_ok=True)
        self._accessed.pop(share_id, None)
        with contextlib.suppress(ProjectNotFound):  # its build goes with it
            folder = self.builds.folder(self.store.get(share.project), share.build)
            shutil.rmtree(folder, ignore_errors=True)

    def forget_project(self, project_id: str) -> None:
        for share in self._all():
            if share.project == project_id:
                with contextlib.suppress(NotFound):
                    self.revoke(share.id)

    # -- a viewer's request -----------------------------------------------------------

    def may_view(self, share_id: str, viewer: dict | None) -> bool:
        """Under JupyterHub: whether the hub user ``viewer`` (its model: name, groups;
        None: nobody logged in) may open the share's pages."""
        try:
            share = self._mine(share_id)
        except NotFound:
            return False
        if share.public:
            return True
        if viewer is None:
            return False
        name, groups = viewer.get("name"), set(viewer.get("groups") or ())
        return name == share.owner or name in share.users or bool(groups & set(share.groups))

    def site(self, share_id: str) -> Path | None:
        """The files a live share serves, or None: no such share, expired, revoked,
        not built (all the same to the viewer)."""
        try:
            share = self._mine(share_id)
        except NotFound:
            return None
        now = time.time()
        if share.expires <= now:
            return None
        try:
            site = self.builds.site(self.store.get(share.project), share.build)
        except (NotFound, ProjectNotFound):
            return None
        if now - self._accessed.get(share_id, 0.0) > LAST_ACCESS_EVERY:
            self._accessed[share_id] = now
            share.last_access = now
            with contextlib.suppress(OSError):
                self._write(share)
        return site


def share_owner(root: Path, share_id: str) -> str | None:
    """Under JupyterHub: whose share ``share_id`` is (the service's folder of shares
    at ``root``), or None if there is no such share."""
    if not ID_RE.match(share_id):
        return None
    try:
        owner = json.loads((root / f"{share_id}.json").read_text()).get("owner")
    except (OSError, ValueError, AttributeError):
        return None
    return owner if isinstance(owner, str) and owner else None


def _names(names: Iterable[str], what: str) -> list[str]:
    """Hub user or group names as a share keeps them; BadRequest if they are not."""
    found = list(names or ())
    if len(found) > MAX_NAMES or not all(isinstance(n, str) and _NAME.match(n) for n in found):
        raise BadRequest(f'"{what}" is a list of at most {MAX_NAMES} hub {what[:-1]} names.')
    return sorted(set(found))
