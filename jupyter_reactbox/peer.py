"""A second Jupyter server of one projects folder: it relays to the first.

The server holding the folder's lock (``store.StoreLock``) manages its
projects.  Another server started on the same folder (a second JupyterLab of
the same user, from another folder or environment, which finds the same
default data folder) makes no space of its own: its REST API and preview paths
go on to the managing server, as a user server's go to the hub service
(``hub/relay.py``), with the managing server's own token, read from its
runtime file (which only this user can read).  Kernels, the widget and the Lab
extension of the second server see the same projects as the first's.

Relaying keeps preview paths as they are, so it needs both servers to share
a base URL; otherwise, and while the managing server cannot be found, every
call answers 503 and says where the projects are managed.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ManagedElsewhere
from .hub.relay import Service
from .store import StoreLock


class PeerServer(Service):
    """The server that manages ``lock``'s folder, found again before each call."""

    def __init__(self, lock: StoreLock, base_url: str):
        super().__init__("http://127.0.0.1:1/", "")
        self.lock, self.base_url = lock, base_url

    def check(self) -> None:
        found = self.lock.manager()
        where = self.lock.root
        if found is None:
            raise ManagedElsewhere(
                f"The projects in {where} are managed by another Jupyter server, which "
                "cannot be reached now. Restart this server to manage them here, or give "
                "it a folder of its own (c.ReactBoxApp.projects_dir).",
            )
        url = str(found.get("url", ""))
        if found.get("base_url") != self.base_url or not url:
            raise ManagedElsewhere(
                f"The projects in {where} are managed by the Jupyter server at "
                f"{url or 'pid ' + str(found.get('pid'))}; open JupyterLab there, or give "
                "this server a folder of its own (c.ReactBoxApp.projects_dir).",
            )
        if url != self.url:
            self._point_at(url, found)

    def _point_at(self, url: str, found: dict) -> None:
        try:
            info = json.loads(Path(str(found.get("info_file", ""))).read_text())
        except (OSError, ValueError):
            info = {}
        self.url = url if url.endswith("/") else url + "/"
        parts = urlsplit(self.url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.token = str(info.get("token", ""))
