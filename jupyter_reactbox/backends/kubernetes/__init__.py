"""The Kubernetes backend (``backend.py``), with its objects as pure functions
(``objects.py``) and the files it sends to pods and takes back (``transfer.py``)."""

from .backend import KubernetesBackend
from .objects import (
    GROUP,
    IDLE,
    PORT,
    SUPPORT,
    WAIT_THEN_RUN,
    Placement,
    PodLimits,
    cache_claim,
    files_map,
    files_map_name,
    install_pod,
    labels,
    network_policy,
    pod_name,
    run_pod,
)
from .transfer import unpack_modules

__all__ = [
    "GROUP",
    "IDLE",
    "PORT",
    "SUPPORT",
    "WAIT_THEN_RUN",
    "KubernetesBackend",
    "Placement",
    "PodLimits",
    "cache_claim",
    "files_map",
    "files_map_name",
    "install_pod",
    "labels",
    "network_policy",
    "pod_name",
    "run_pod",
    "unpack_modules",
]
