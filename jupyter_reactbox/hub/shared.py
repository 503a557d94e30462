"""Published snapshots under JupyterHub: the hub service serves every user's share
links (``shares.py``), and its viewers log in with the hub.  (Imported by the
service alone: JupyterHub is installed where it runs.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

from jupyterhub.services.auth import HubOAuthenticated

from ..errors import NotFound
from ..shared import GONE, SharedHandler
from ..shares import Shares, share_owner
from ..spaces import SpacePerUser


class HubSharedHandler(HubOAuthenticated, SharedHandler):
    """A published snapshot under JupyterHub (``shares.py``): any user's, found by
    its id in the service's folder of shares.  Its pages open for a hub user who
    logged in (the service's OAuth; a page load with no login goes to the hub's
    login first, whatever the link) and whom the share names; anyone else gets
    the 404 of a link that does not exist."""

    def initialize(self, spaces: SpacePerUser, hub_oauth, shares_root: Path, frame_ancestors):
        super().initialize(spaces, frame_ancestors)
        self.hub_auth = hub_oauth
        self.shares_root = shares_root

    def get_current_user(self):
        return None  # never asked: ``viewer`` asks the hub without blocking the loop

    async def viewer(self) -> dict | None:
        """The logged-in hub user (the service's cookie), or None."""
        model = await self.hub_auth.get_user(self, sync=False)
        if model is None or model.get("kind", "user") != "user":
            return None
        return model

    async def shares_of(self, share_id: str) -> Shares | None:
        owner = await asyncio.to_thread(share_owner, self.shares_root, share_id)
        if owner is None:
            return None
        return (await self.spaces.for_user(owner)).shares

    async def may_open_page(self, shares: Shares | None, share_id: str) -> bool:
        viewer = await self.viewer()
        if viewer is None and not (shares is not None and shares.may_view(share_id, None)):
            self.redirect(self.get_login_url())
            return False
        if shares is None or not shares.may_view(share_id, viewer):
            raise NotFound(GONE)
        return True
