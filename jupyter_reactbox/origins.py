"""Where previews are served: at an origin of their own, or under Jupyter's path.

An origin of its own (``<project>.localhost:<port>`` on a server that listens on
this machine only, or an admin's wildcard name, ``preview_origin_template``)
gives an app its storage, cookies, service workers and absolute URLs as under
``npm run dev``, with nothing of Jupyter there.  Anywhere else (behind
JupyterHub's proxy, Binder, a remote server, TLS, a Unix socket) previews are
served under Jupyter's path, in a CSP sandbox: an opaque origin.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from .proxy import origin_host_pattern

LOCAL_TEMPLATE = "http://{project}.localhost:{port}"
"""The origins of previews of a server on this machine: its port is filled in once
the server listens (``ReactBoxApp._start_jupyter_server_extension``)."""


def choose(*, template: str, mode: str, server, hub_service: bool = False) -> tuple[str, str]:
    """(the preview origin template, '' for path mode; why), from the admin's
    ``template`` and ``mode`` (``c.ReactBoxApp.preview_origin``) and where the
    Jupyter ``server`` listens."""
    if hub_service:
        return "", (
            "previews of the hub service are sandboxed under each user's path "
            "(origins of their own are not served by the hub service yet)"
        )
    if template:
        return template, "c.ReactBoxApp.preview_origin_template is set"
    if mode == "path":
        return "", "c.ReactBoxApp.preview_origin is 'path'"
    if os.environ.get("JUPYTERHUB_SERVICE_PREFIX") and mode == "auto":
        return "", (
            "this is a JupyterHub server, reached through the hub's proxy: previews "
            "are sandboxed under its path; an origin of their own needs "
            "c.ReactBoxApp.preview_origin_template (a wildcard name)"
        )
    local = (
        server is not None
        and not server.sock
        and not server.certfile
        and server.ip in ("localhost", "127.0.0.1", "::1")
    )
    if mode == "separate" or local:
        return LOCAL_TEMPLATE, (
            "this server listens on this machine only: each preview is at "
            "<project>.localhost, an origin of its own"
        )
    return "", (
        "this server is reached from elsewhere (or over TLS, or a socket): previews "
        "are sandboxed under its path; an origin of their own needs "
        "c.ReactBoxApp.preview_origin_template (a wildcard name)"
    )


def checked(template: str) -> str:
    """``template`` if it is an origin (scheme://host[:port]) naming {project} once in
    its host; ValueError, saying what is wrong, if not."""
    value = template.rstrip("/")
    if value:
        parts = urlsplit(value.replace("{project}", "p"))
        if parts.scheme not in ("http", "https") or parts.path or parts.query:
            raise ValueError(
                f"preview_origin_template is an origin (scheme://host[:port]): {value!r}"
            )
        origin_host_pattern(value)
    return value
