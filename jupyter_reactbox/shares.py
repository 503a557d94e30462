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

Each share is a small JSON record in ``<projects>/.shares/``; revoking removes
it (the build goes with the project, or when its project keeps fewer builds).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from jupyter_server.utils import url_path_join
from traitlets import Float, Int
from traitlets.config import LoggingConfigurable

from .builds import Builds
from .errors import BadRequest, NoSharing, NotFound, ProjectNotFound, TooManyShares
from .frameworks import AppPlan
from .store import Project, ProjectStore

ID_RE = re.compile(r"^[A-Za-z0-9_-]{24}$")
DAY = 86400.0
LAST_ACCESS_EVERY = 60.0
"""Seconds between two writes of a share's last access."""


@dataclass
class Share:
    id: str
    project: str
    build: str
    url: str
    created: float
    expires: float
    last_access: float | None = None

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

    def __init__(
        self, *, store: ProjectStore, builds: Builds, base_url: str, served: bool = True, **kwargs
    ):
        super().__init__(**kwargs)
        self.served = served
        """Whether this server serves the links (not yet under JupyterHub's service)."""
        self.store = store
        self.builds = builds
        self.base_url = base_url
        self.root = store.root / ".shares"
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
                found.append(self._read(path.stem))
        return sorted(found, key=lambda s: s.created, reverse=True)

    # -- the owner's verbs --------------------------------------------------------

    def create(self, project: Project, plan: AppPlan, days: float | None = None) -> dict:
        """Build ``project`` for a new link living ``days`` (the default if None), and
        publish it once built; the share's JSON."""
        if not self.served:
            raise NoSharing(
                "Share links are not served under JupyterHub yet; export the source or "
                "download a build instead."
            )
        days = self.default_days if days is None else days
        if not 0 < days <= self.max_days:
            raise BadRequest(
                f"A share lives more than 0 and at most {self.max_days:g} days (c.Shares.max_days)."
            )
        now = time.time()
        live = [s for s in self._all() if s.expires > now]
        if len(live) >= self.max_per_user:
            raise TooManyShares(
                f"You have {len(live)} share links (c.Shares.max_per_user); revoke one first."
            )
        share_id = secrets.token_urlsafe(18)
        url = url_path_join(self.base_url, "reactbox", "shared", share_id) + "/"
        build = self.builds.start(project, plan, url, share=share_id)
        share = Share(share_id, project.id, build.id, url, now, now + days * DAY)
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
        return [self.describe(s) for s in self._all() if project_id in (None, s.project)]

    def get(self, share_id: str) -> dict:
        return self.describe(self._read(share_id))

    def revoke(self, share_id: str) -> None:
        """The link is dead at once (404), whatever it was."""
        share = self._read(share_id)
        self._file(share_id).unlink()
        self._accessed.pop(share_id, None)
        with contextlib.suppress(ProjectNotFound):  # its build goes with it
            folder = self.builds.folder(self.store.get(share.project), share.build)
            shutil.rmtree(folder, ignore_errors=True)
        self.log.info("Revoked share %s", share_id)

    def forget_project(self, project_id: str) -> None:
        for share in self._all():
            if share.project == project_id:
                with contextlib.suppress(NotFound):
                    self.revoke(share.id)

    # -- a viewer's request -----------------------------------------------------------

    def site(self, share_id: str) -> Path | None:
        """The files a live share serves, or None: no such share, expired, revoked,
        not built (all the same to the viewer)."""
        try:
            share = self._read(share_id)
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
