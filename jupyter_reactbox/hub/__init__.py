"""jupyter-reactbox under JupyterHub.

``service.py`` is ``jupyter reactbox hub-service``: a hub-managed service that
holds the engine and the AI key, and each user's projects.  ``relay.py`` is
what a user's server runs instead of a backend: the same REST API and preview
paths, relayed to the service with the server's own hub token.  ``config.py``
prints the ``jupyterhub_config.py`` fragment that wires the two together.
"""

SERVICE_URL_ENV = "JUPYTER_REACTBOX_SERVICE_URL"
"""Where a user's server finds the service (set by the hub's spawner)."""
