"""``jupyter reactbox hub-config``: the ``jupyterhub_config.py`` fragment that
registers the service and points user servers at it, with the least it needs.

* The service is managed by the hub (started, restarted, stopped with it) and
  runs as the hub's user; the AI settings go to its environment alone.
* Users get one scope more, ``access:services!service=<name>``, and so does the
  token each user's server is started with (``server_token_scopes``): that
  token is what the server calls the service with.
* User servers are told where the service is by one environment variable.
"""

from __future__ import annotations

import json
import sys

AI_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL")
SERVER_SCOPES = ("users:activity!user", "access:servers!server")
"""JupyterHub's own scopes of a server's token (its 'server' role)."""

TEMPLATE = """\
# --- jupyter-reactbox: one service runs every user's previews -----------------
# It holds the container engine and the AI key; user servers hold neither.
# (jupyter reactbox hub-config; see docs/jupyterhub.md)
import os as _os

c.JupyterHub.services.append(
    {{
        "name": {name},
        "url": {url},
        "command": {command},
        # The AI settings go to the service alone, never to user servers.
        "environment": {{
            _k: _os.environ[_k] for _k in {ai} if _k in _os.environ
        }},
        "display": False,
        # Viewers of shared snapshots log in to it with the hub: no consent page.
        "oauth_no_confirm": True,
    }}
)
# Users may call the service, and so may the token each user's server starts with.
c.JupyterHub.load_roles.append(
    {{"name": "user", "scopes": ["self", "access:services!service={bare}"]}}
)
c.Spawner.server_token_scopes = {scopes}
c.Spawner.environment.update({{"JUPYTER_REACTBOX_SERVICE_URL": {service_url}}})
# --- end of jupyter-reactbox ---------------------------------------------------
"""


def fragment(
    *,
    name: str = "reactbox",
    url: str = "http://127.0.0.1:10101",
    reach: str = "",
    base_url: str = "/",
    command: list[str] | None = None,
) -> str:
    """The fragment.  ``url`` is where the service listens; ``reach`` where user
    servers reach it, if not there (from a container or a pod: the hub host's
    address, or a Kubernetes Service's name)."""
    prefix = f"{base_url.rstrip('/')}/services/{name}/"
    values = {
        "name": name,
        "url": url,
        "command": command or [sys.executable, "-m", "jupyter_reactbox.hub.service"],
        "ai": list(AI_VARIABLES),
        "scopes": [*SERVER_SCOPES, f"access:services!service={name}"],
        "service_url": (reach or url).rstrip("/") + prefix,
    }
    return TEMPLATE.format(bare=name, **{k: json.dumps(v) for k, v in values.items()})
