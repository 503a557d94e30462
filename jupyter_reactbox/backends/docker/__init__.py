"""The Docker backend (``backend.py``), with its container specs (``specs.py``),
its engine plumbing (``engine.py``) and its gates and spare (``spares.py``)."""

from .backend import DockerBackend
from .specs import (
    HELD,
    LABEL,
    PORT,
    SPARE_HELD,
    Limits,
    container_name,
    install_container_kwargs,
    labels,
    named,
    run_container_kwargs,
    run_script,
    spare_container_kwargs,
)

__all__ = [
    "HELD",
    "LABEL",
    "PORT",
    "SPARE_HELD",
    "DockerBackend",
    "Limits",
    "container_name",
    "install_container_kwargs",
    "labels",
    "named",
    "run_container_kwargs",
    "run_script",
    "spare_container_kwargs",
]
