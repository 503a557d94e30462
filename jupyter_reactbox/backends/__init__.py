"""Where dev servers run: one file per backend (see ``base.py`` for the seam).

``c.ReactBoxApp.backend`` is ``"auto"`` (Docker when an engine answers, else
the local backend), a backend's name (``"docker"``, ``"local"``, ``"kubernetes"``
(for the JupyterHub service on a cluster), or one that a
package adds through the entry point group ``jupyter_reactbox.backends``), or
a Backend class (or its import string).
"""

from __future__ import annotations

from importlib.metadata import entry_points

from traitlets.utils.importstring import import_item

from .base import Backend

ENTRY_POINT_GROUP = "jupyter_reactbox.backends"
BUILT_IN = {
    "docker": "jupyter_reactbox.backends.docker.DockerBackend",
    "local": "jupyter_reactbox.backends.local.LocalBackend",
    "kubernetes": "jupyter_reactbox.backends.kubernetes.KubernetesBackend",
}


def backend_class(spec: str | type) -> type[Backend]:
    """The Backend class that ``spec`` names (not ``"auto"``: see ``choose``)."""
    if isinstance(spec, type):
        found: object = spec
    elif spec in BUILT_IN:
        found = import_item(BUILT_IN[spec])
    else:
        points = {p.name: p for p in entry_points(group=ENTRY_POINT_GROUP)}
        found = points[spec].load() if spec in points else None
        if found is None and "." in spec:
            found = import_item(spec)
        if found is None:
            names = sorted({*BUILT_IN, *points})
            raise ValueError(f"No backend {spec!r}: name one of {names}, or a Backend class.")
    if not (isinstance(found, type) and issubclass(found, Backend)):
        raise ValueError(f"{spec!r} is not a jupyter_reactbox Backend class.")
    return found


def choose(spec: str | type) -> tuple[type[Backend], str]:
    """(the backend class for ``spec``, why it was chosen): ``"auto"`` takes Docker
    when an engine answers, else the local backend."""
    if spec != "auto":
        return backend_class(spec), "configured (c.ReactBoxApp.backend)"
    docker = backend_class("docker")
    why_not = docker.available()
    if why_not is None:
        return docker, "a Docker engine answers"
    return backend_class("local"), f"{why_not}: the local backend runs previews"
