"""The Kubernetes backend's objects, as pure functions of their inputs.

Pods (a dev server's, an install's), their NetworkPolicies, the ConfigMaps of
the support files and CAs, and the owner's cache claim, as the API's dicts:
tests compare them whole (as kubespawner's ``objects.py`` is tested) and read
them back from a real API server.  Label values are at most 63 characters, so
what recovery needs in full (the base path, the token) is in annotations.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

GROUP = "reactbox.jupyter.org"
PORT = 8000
"""The dev server's port in its pod."""
PROJECT = "/project"
SUPPORT = "/opt/reactbox/support"
"""Where a dev server finds jupyter-reactbox's support scripts (a read-only ConfigMap)."""
CA_DIR = "/etc/reactbox"
"""Where an install finds the CAs it trusts besides Node's (a read-only ConfigMap)."""
SYNCED = "/tmp/.reactbox-synced"
"""Made by the backend once the project's files are in the pod: the dev server
starts then (a file in ``/tmp``, never in the project, which the app writes)."""

WAIT_THEN_RUN = f'while [ ! -e {SYNCED} ]; do sleep 0.05; done; cd {PROJECT} && exec "$@"'
"""The dev server's container waits for its files, then becomes the dev server."""
IDLE = 'trap "exit 0" TERM; while :; do sleep 1; done'
"""An install pod idles while the backend runs the package manager in it (exec)."""


@dataclass(frozen=True)
class PodLimits:
    cpu: str = "1"
    memory: str = "1Gi"
    ephemeral_storage: str = "4Gi"
    tmp_size: str = "256Mi"
    project_size: str = "4Gi"


@dataclass(frozen=True)
class Placement:
    """Where pods may run and how (traits of the backend)."""

    runtime_class: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    pull_policy: str = "IfNotPresent"


def pod_name(owner: str, project_id: str, role: str) -> str:
    """``reactbox-<owner>-<project>`` (``-install`` for an install): owners and
    project ids are slugs, so the name is a DNS subdomain (at most 103 characters)."""
    return f"reactbox-{owner}-{project_id}" + ("" if role == "run" else f"-{role}")


def files_map_name(prefix: str, files: dict[str, bytes]) -> str:
    """A ConfigMap of files, named by their content: a new version makes a new one,
    and running pods keep theirs."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
    return f"reactbox-{prefix}-{digest.hexdigest()[:12]}"


_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def labels(owner: str, project_id: str, role: str) -> dict[str, str]:
    """What selects a preview's pods (and its NetworkPolicy's targets)."""
    out = {
        "app.kubernetes.io/name": "jupyter-reactbox",
        "app.kubernetes.io/component": role,
        f"{GROUP}/owner": owner,
        f"{GROUP}/project": project_id,
    }
    for value in out.values():
        if not _LABEL_VALUE.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes label value")
    return out


def _security(uid: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the pod's securityContext, each container's)."""
    pod = {
        "runAsUser": uid,
        "runAsGroup": uid,
        "runAsNonRoot": True,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    return pod, container


def _resources(limits: PodLimits) -> dict[str, Any]:
    return {
        "limits": {
            "cpu": limits.cpu,
            "memory": limits.memory,
            "ephemeral-storage": limits.ephemeral_storage,
        },
        # What the scheduler counts: a small share, as an idle dev server uses.
        "requests": {"cpu": "50m", "memory": "128Mi", "ephemeral-storage": "256Mi"},
    }


def _pod(
    *,
    name: str,
    owner: str,
    project_id: str,
    role: str,
    image: str,
    command: list[str],
    env: dict[str, str],
    annotations: dict[str, str],
    limits: PodLimits,
    placement: Placement,
    uid: int,
    mounts: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    ports: list[dict[str, Any]],
    deadline: int | None = None,
) -> dict[str, Any]:
    pod_security, container_security = _security(uid)
    container: dict[str, Any] = {
        "name": role,
        "image": image,
        "imagePullPolicy": placement.pull_policy,
        "command": command,
        "workingDir": PROJECT,
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "securityContext": container_security,
        "resources": _resources(limits),
        "volumeMounts": [
            {"name": "project", "mountPath": PROJECT},
            {"name": "tmp", "mountPath": "/tmp"},
            *mounts,
        ],
    }
    if ports:
        container["ports"] = ports
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 5,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": [
            {"name": "project", "emptyDir": {"sizeLimit": limits.project_size}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": limits.tmp_size}},
            *volumes,
        ],
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    if placement.runtime_class:
        spec["runtimeClassName"] = placement.runtime_class
    if placement.node_selector:
        spec["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        spec["tolerations"] = [dict(t) for t in placement.tolerations]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels(owner, project_id, role),
            "annotations": annotations,
        },
        "spec": spec,
    }


def run_pod(
    *,
    image: str,
    owner: str,
    project_id: str,
    argv: list[str],
    env: dict[str, str],
    framework: str,
    base: str,
    token: str,
    spec_hash: str,
    support_map: str,
    limits: PodLimits,
    placement: Placement,
    uid: int = 1000,
) -> dict[str, Any]:
    """The pod of a running preview: it waits for its files, then runs the dev server."""
    return _pod(
        name=pod_name(owner, project_id, "run"),
        owner=owner,
        project_id=project_id,
        role="run",
        image=image,
        command=["sh", "-c", WAIT_THEN_RUN, "dev-server", *argv],
        env={"HOME": "/tmp", "NODE_ENV": "development", **env},
        annotations={
            f"{GROUP}/owner": owner,
            f"{GROUP}/project": project_id,
            f"{GROUP}/framework": framework,
            f"{GROUP}/base": base,
            f"{GROUP}/token": token,
            f"{GROUP}/port": str(PORT),
            f"{GROUP}/spec": spec_hash,
        },
        limits=limits,
        placement=placement,
        uid=uid,
        mounts=[{"name": "support", "mountPath": SUPPORT, "readOnly": True}],
        volumes=[{"name": "support", "configMap": {"name": support_map}}],
        ports=[{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
    )


def install_pod(
    *,
    image: str,
    owner: str,
    project_id: str,
    limits: PodLimits,
    placement: Placement,
    deadline: int,
    uid: int = 1000,
    ca_map: str | None = None,
    cache_claim: str | None = None,
) -> dict[str, Any]:
    """A pod the backend runs one install in (by exec), then deletes; it ends by
    itself after ``deadline`` seconds whatever happens to the backend.  With
    ``ca_map``, Node trusts its ``ca.pem`` too (a registry behind a TLS proxy);
    with ``cache_claim``, the package managers' cache is the owner's volume, kept
    from one install to the next (else an ``emptyDir``)."""
    cache: dict[str, Any] = (
        {"persistentVolumeClaim": {"claimName": cache_claim}} if cache_claim else {"emptyDir": {}}
    )
    env, mounts = {"HOME": "/tmp"}, [{"name": "cache", "mountPath": "/cache"}]
    volumes: list[dict[str, Any]] = [{"name": "cache", **cache}]
    if ca_map:
        env["NODE_EXTRA_CA_CERTS"] = f"{CA_DIR}/ca.pem"
        mounts.append({"name": "ca", "mountPath": CA_DIR, "readOnly": True})
        volumes.append({"name": "ca", "configMap": {"name": ca_map}})
    return _pod(
        name=pod_name(owner, project_id, "install"),
        owner=owner,
        project_id=project_id,
        role="install",
        image=image,
        command=["sh", "-c", IDLE],
        env=env,
        annotations={f"{GROUP}/owner": owner, f"{GROUP}/project": project_id},
        limits=limits,
        placement=placement,
        uid=uid,
        mounts=mounts,
        volumes=volumes,
        ports=[],
        deadline=deadline,
    )


def network_policy(
    *,
    owner: str,
    project_id: str,
    role: str,
    ingress_from: list[dict[str, Any]],
    registry_proxy: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """The pod's NetworkPolicy: a dev server takes connections only from
    ``ingress_from`` (the service, or the user's server) on its port, and opens none;
    an install pod takes none and may reach only the registry proxy."""
    select = {
        f"{GROUP}/owner": owner,
        f"{GROUP}/project": project_id,
        "app.kubernetes.io/component": role,
    }
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": select},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [],
    }
    if role == "run":
        spec["ingress"] = [
            {"from": [dict(p) for p in ingress_from], "ports": [{"port": PORT, "protocol": "TCP"}]}
        ]
    elif registry_proxy is not None:
        host, port = registry_proxy
        spec["egress"] = [
            {
                "to": [{"ipBlock": {"cidr": f"{host}/32"}}],
                "ports": [{"port": port, "protocol": "TCP"}],
            }
        ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": pod_name(owner, project_id, role),
            "labels": labels(owner, project_id, role),
        },
        "spec": spec,
    }


def cache_claim(owner: str, storage_class: str, size: str) -> dict[str, Any]:
    """The owner's package-manager cache: one volume all of their installs mount (one
    at a time on ReadWriteOnce storage, which the installs of one owner are)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": f"reactbox-cache-{owner}",
            "labels": {
                "app.kubernetes.io/name": "jupyter-reactbox",
                "app.kubernetes.io/component": "cache",
                f"{GROUP}/owner": owner,
            },
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": storage_class,
            "resources": {"requests": {"storage": size}},
        },
    }


def files_map(prefix: str, files: dict[str, bytes]) -> dict[str, Any]:
    """Files every pod of a kind mounts read-only: the support scripts of the dev
    servers (``support``), the CA bundle of the installs (``ca``)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": files_map_name(prefix, files),
            "labels": {
                "app.kubernetes.io/name": "jupyter-reactbox",
                "app.kubernetes.io/component": prefix,
            },
        },
        "immutable": True,
        "data": {name: data.decode() for name, data in sorted(files.items())},
    }
