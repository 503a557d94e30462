"""``jupyter reactbox mcp``: the MCP tools over stdio, for an agent on this machine.

It runs as the user who starts it and finds their Jupyter server as a kernel
does (``kernel/client.py``: ``JUPYTER_REACTBOX_URL`` and ``_TOKEN``, JupyterHub's
variables, or the servers in Jupyter's runtime folder that hold the current
folder), or is told with ``--url`` and ``--token``.  ``upload`` reads app folders
with this process's own rights: it is the user's own program.
"""

from __future__ import annotations

import os
import sys

import anyio

from ..errors import ReactBoxClientError
from ..kernel.client import ReactBoxClient, connect
from .tools import Folders, make_server


def run(url: str | None, token: str | None) -> int:
    token = token or os.environ.get("JUPYTER_REACTBOX_TOKEN")
    try:
        client = ReactBoxClient(url, token).check() if url else connect()
    except ReactBoxClientError as exc:
        print(f"error: {exc}", file=sys.stderr)  # stdout is the protocol's
        return 1
    server = make_server(lambda ctx: client, Folders())
    anyio.run(server.run_stdio_async)
    return 0
