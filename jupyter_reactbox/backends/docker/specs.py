"""The Docker backend's containers, as pure functions of their inputs.

Every container this backend makes is one of four specs: an install
(``install_container_kwargs``), a project's dev server
(``run_container_kwargs``), a spare dev server made before its project
(``spare_container_kwargs``) and a production build
(``build_container_kwargs``).  Each is the keyword arguments of the SDK's
``containers.run``, compared as whole dicts by ``tests/test_specs.py``, with no
engine needed.  What names and labels them (``labels``, ``container_name``) is
here too: ``recover`` finds the previews again by it.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...frameworks import SUPPORT_DIR, AppPlan
from ..install import install_env

LABEL = "org.jupyter.reactbox"
CA_IN_CONTAINER = "/etc/reactbox/ca.pem"
SUPPORT = "/opt/reactbox/support"
"""Where a dev server finds jupyter-reactbox's support scripts (read-only)."""
GATE = "/opt/reactbox/gate"
"""A folder only the server writes (read-only in the container): the dev server
starts once ``open`` is there (``DockerBackend.release``)."""
HELD = (
    f"n=0; until [ -e {GATE}/open ]; do "
    'if [ "$n" -lt 400 ]; then sleep 0.005; else sleep 0.1; fi; n=$((n + 1)); done; '
    'exec "$@"'
)
"""The container's first process: waits at the gate, then becomes the dev server."""
SPARE_HELD = (
    f"[ -e {GATE}/open ] || read _ 2>/dev/null < {GATE}/go || "
    f"until [ -e {GATE}/open ]; do sleep 0.1; done; exec /bin/sh {GATE}/run"
)
"""A spare container's first process: blocks (no CPU) on a pipe only the server
writes, unless the gate is open already (a restart), then runs the script the
server wrote in the gate: the dev server.  Where the pipe cannot be opened
(gVisor opens no host pipes), or its writer is gone (the server died), it looks
for ``open`` ten times a second instead."""
PORT = 8000
"""The dev server's port: every container has a network namespace of its own."""


@dataclass(frozen=True)
class Limits:
    memory: str = "1g"
    cpus: float = 1.0
    pids: int = 512
    tmpfs_size: str = "256m"


def labels(owner: str, project_id: str, role: str, store: str = "", **extra: str) -> dict[str, str]:
    """Whose a container or network is: the user, the store (projects folder) of
    the server that made it, the project, and its role."""
    out = {
        f"{LABEL}.owner": owner,
        f"{LABEL}.project": project_id,
        f"{LABEL}.role": role,
    }
    if store:
        out[f"{LABEL}.store"] = store
    out.update({f"{LABEL}.{k}": v for k, v in extra.items()})
    return out


def named(owner: str, store: str = "") -> str:
    """What names the containers and networks of one owner's store."""
    return f"reactbox-{owner}-{store}" if store else f"reactbox-{owner}"


def container_name(owner: str, project_id: str, role: str, store: str = "") -> str:
    return f"{named(owner, store)}-{project_id}" + ("" if role == "run" else f"-{role}")


def spec_hash(kwargs: dict[str, Any]) -> str:
    """Names a container spec, so a kept container is reused only if nothing changed."""
    return hashlib.sha256(json.dumps(kwargs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _hardening(limits: Limits, runtime: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = dict(
        read_only=True,
        tmpfs={"/tmp": f"rw,nosuid,nodev,size={limits.tmpfs_size}"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=limits.pids,
        mem_limit=limits.memory,
        memswap_limit=limits.memory,
        nano_cpus=int(limits.cpus * 1e9),
        init=True,
        # What a container prints is kept by the engine, outside any quota: bounded.
        log_config={"type": "json-file", "config": {"max-size": "2m", "max-file": "2"}},
    )
    if runtime:
        spec["runtime"] = runtime
    return spec


def install_container_kwargs(
    *,
    image: str,
    owner: str,
    store: str = "",
    project_id: str,
    app_dir: Path,
    cache_dir: Path,
    user: str,
    argv: list[str],
    network: str,
    limits: Limits,
    runtime: str | None = None,
    ca_file: str | None = None,
    registry: str | None = None,
    settings: dict[str, str] | None = None,
    proxy: str | None = None,
) -> dict[str, Any]:
    env = install_env(cache="/cache", registry=registry, proxy=proxy, settings=settings)
    volumes = {
        str(app_dir): {"bind": "/project", "mode": "rw"},
        str(cache_dir): {"bind": "/cache", "mode": "rw"},
    }
    if ca_file:
        env["NODE_EXTRA_CA_CERTS"] = CA_IN_CONTAINER
        volumes[ca_file] = {"bind": CA_IN_CONTAINER, "mode": "ro"}
    return dict(
        image=image,
        command=argv,
        name=container_name(owner, project_id, "install", store),
        user=user,
        working_dir="/project",
        environment=env,
        labels=labels(owner, project_id, "install", store),
        network=network,
        volumes=volumes,
        detach=True,
        **_hardening(limits, runtime),
    )


def run_container_kwargs(
    *,
    image: str,
    owner: str,
    store: str = "",
    project_id: str,
    app_dir: Path,
    user: str,
    plan: AppPlan,
    base: str,
    token: str,
    network: str,
    limits: Limits,
    gate: Path,
    runtime: str | None = None,
) -> dict[str, Any]:
    argv, env = dev_process(plan, base)
    return _dev_container(
        image=image,
        command=["/bin/sh", "-c", HELD, "held", *argv],
        name=container_name(owner, project_id, "run", store),
        user=user,
        environment=env,
        labels=labels(
            owner,
            project_id,
            "run",
            store,
            framework=plan.framework,
            token=token,
            base=base,
            port=str(PORT),
        ),
        network=network,
        project=app_dir,
        gate=gate,
        limits=limits,
        runtime=runtime,
    )


def _dev_container(
    *,
    image: str,
    command: list[str],
    name: str,
    user: str,
    environment: dict[str, str],
    labels: dict[str, str],
    network: str,
    project: Path,
    gate: Path,
    limits: Limits,
    runtime: str | None,
) -> dict[str, Any]:
    """The sandbox every dev server runs in, a project's or a spare's: its folder
    the only writable mount, the support files and its gate read-only."""
    return dict(
        image=image,
        command=command,
        name=name,
        user=user,
        working_dir="/project",
        environment=environment,
        labels=labels,
        network=network,
        volumes={
            str(project): {"bind": "/project", "mode": "rw"},
            str(SUPPORT_DIR): {"bind": SUPPORT, "mode": "ro"},
            str(gate): {"bind": GATE, "mode": "ro"},
        },
        detach=True,
        **_hardening(limits, runtime),
    )


def build_container_kwargs(
    *,
    image: str,
    owner: str,
    store: str = "",
    project_id: str,
    app_dir: Path,
    out: Path,
    user: str,
    plan: AppPlan,
    base: str,
    limits: Limits,
    runtime: str | None = None,
) -> dict[str, Any]:
    """A production build: the dev server's sandbox with no network at all, and the
    folder it writes (outside the app) mounted at /out."""
    where = dict(base=base, out="/out", support=SUPPORT)
    return dict(
        image=image,
        command=plan.build_argv(**where),
        name=container_name(owner, project_id, "build", store),
        user=user,
        working_dir="/project",
        environment={"HOME": "/tmp", **plan.build_env(**where)},
        labels=labels(owner, project_id, "build", store),
        network_mode="none",
        volumes={
            str(app_dir): {"bind": "/project", "mode": "rw"},
            str(SUPPORT_DIR): {"bind": SUPPORT, "mode": "ro"},
            str(out): {"bind": "/out", "mode": "rw"},
        },
        detach=True,
        **_hardening(limits, runtime),
    )


def dev_process(plan: AppPlan, base: str) -> tuple[list[str], dict[str, str]]:
    """The dev server's argv and environment in a container, under ``base``."""
    where = dict(base=base, host="0.0.0.0", port=PORT, support=SUPPORT)
    env = {"HOME": "/tmp", "NODE_ENV": "development", **plan.dev_env(**where)}
    return plan.dev_argv(**where), env


def spare_container_kwargs(
    *,
    image: str,
    owner: str,
    store: str = "",
    name: str,
    slot: Path,
    user: str,
    network: str,
    limits: Limits,
    runtime: str | None = None,
) -> dict[str, Any]:
    """A dev server's container made before its project exists: the same sandbox,
    no project in it yet.  What it runs comes from its gate (``run_script``)."""
    return _dev_container(
        image=image,
        command=["/bin/sh", "-c", SPARE_HELD],
        name=name,
        user=user,
        environment={"HOME": "/tmp"},
        labels=labels(owner, "", "spare", store),
        network=network,
        project=slot / "app",
        gate=slot / "gate",
        limits=limits,
        runtime=runtime,
    )


def run_script(plan: AppPlan, base: str) -> str:
    """The dev server of ``plan`` under ``base``, as a shell script for a spare."""
    argv, env = dev_process(plan, base)
    lines = ["cd /project"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    lines.append("exec " + shlex.join(argv))
    return "\n".join(lines) + "\n"
