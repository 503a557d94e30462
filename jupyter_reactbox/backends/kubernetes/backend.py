"""The Kubernetes backend: a hardened pod per preview, for zero-to-jupyterhub.

It runs in the JupyterHub service (which holds the cluster credentials); user
servers never talk to the cluster.  The service keeps every project's files and
the dependency caches on its own disk, as with Docker, and a pod gets a copy:

* **Files reach a pod over the exec API.**  A dev-server pod starts with empty
  ``emptyDir`` folders and waits; the backend streams the project (with its
  ``node_modules``) in as a tar, then lets the dev server start.  After that,
  ``sync`` sends only the files that changed since the last send (and removes
  the ones that went), so HMR sees an edit as it sees a local write.  Nothing
  the pod writes comes back, so nothing the app's code writes is ever read by
  the service: the Docker backend's "work tree is data" rule holds trivially.
* **Installs run in a pod of their own**, which idles while the backend runs
  the package manager in it (exec), then streams ``node_modules`` back; the
  service unpacks it with checks of its own (``unpack_modules``: nothing out of
  the tree, no devices, nothing written through a link, no set-uid bits) into
  the install's staging folder.
  The registry is reached through the service's registry proxy when
  ``proxy_address`` is set (the install pod's NetworkPolicy allows only it).
* **Watched, not polled**: one watch per owner keeps every pod of that owner
  (as kubespawner's reflector does); ``poll``, ``running`` and the waits read it.
* **Recovery by labels**: what a preview needs after a service restart (its
  token, base path, framework) is in its pod's annotations.
* Idle stop deletes the pod (there is no pause); files and caches stay here.

The client is ``kubernetes_asyncio`` (kubespawner's): native asyncio, so a
watch or a streamed exec holds no thread, and its models match the API server's.
The objects (pods, policies, ConfigMaps, the cache claim) are built by the pure
functions below, which tests compare as whole dicts (as kubespawner's
``objects.py`` is tested) and read back from a real API server.  Label values are
at most 63 characters, so what recovery needs in full (the base path, the token)
is in annotations.
"""

from __future__ import annotations

import asyncio
import shlex
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

from traitlets import CaselessStrEnum, Dict, Float, Int, List, Unicode, default, validate

from ..._version import __version__
from ...errors import SandboxError
from ...frameworks import SUPPORT_DIR, AppPlan
from ..base import (
    Backend,
    Endpoint,
    Exit,
    Finding,
    Followers,
    Installer,
    Isolation,
    Record,
    left_over,
    under,
)
from ..docker.specs import spec_hash
from ..install import system_ca_bundle
from .cluster import IN_CLUSTER_NAMESPACE, Cluster, api_error
from .installs import Installs
from .objects import (
    GROUP,
    PORT,
    PROJECT,
    SUPPORT,
    SYNCED,
    Placement,
    PodLimits,
    cache_claim,
    files_map,
    network_policy,
    pod_name,
    run_pod,
)
from .transfer import manifest, pack, top_level


class KubernetesBackend(Backend):
    """Runs one owner's previews as pods in one namespace."""

    name = "kubernetes"

    namespace = Unicode(help="Namespace of the preview pods. Default: the service's own.").tag(
        config=True
    )

    @default("namespace")
    def _default_namespace(self):
        if IN_CLUSTER_NAMESPACE.exists():
            return IN_CLUSTER_NAMESPACE.read_text().strip()
        return "default"

    kubeconfig = Unicode(
        "",
        help="""A kubeconfig file to reach the cluster. Empty: the service account of
        the pod the service runs in, else $KUBECONFIG or ~/.kube/config.""",
    ).tag(config=True)
    image = Unicode(
        f"jupyter-reactbox-sandbox:{__version__}",
        help="The sandbox image (`jupyter reactbox build-image`, pushed where nodes pull).",
    ).tag(config=True)
    pull_policy = CaselessStrEnum(
        ["Always", "IfNotPresent", "Never"],
        default_value="IfNotPresent",
        help="imagePullPolicy of the pods.",
    ).tag(config=True)
    runtime_class = Unicode(
        "", help="runtimeClassName of the pods, e.g. 'gvisor'. Empty: the cluster's default."
    ).tag(config=True)
    node_selector = Dict(
        value_trait=Unicode(), help="nodeSelector of the pods, e.g. {'pool': 'previews'}."
    ).tag(config=True)
    tolerations = List(Dict(), help="tolerations of the pods, as Kubernetes writes them.").tag(
        config=True
    )
    storage_class = Unicode(
        "",
        help="""Storage class of each owner's package-manager cache: a PersistentVolumeClaim
        (reactbox-cache-<owner>) the install pods mount, so a package fetched once is not
        fetched again. Empty: each install starts with an empty cache (the service's own
        package store and node_modules cache still keep what installs made).""",
    ).tag(config=True)
    cache_size = Unicode("5Gi", help="Size of each owner's package-manager cache volume.").tag(
        config=True
    )
    uid = Int(1000, help="Uid (and gid) the pods run as; never 0.").tag(config=True)

    @validate("uid")
    def _validate_uid(self, proposal):
        if proposal["value"] <= 0:
            raise ValueError("KubernetesBackend.uid must be non-root (> 0)")
        return proposal["value"]

    memory_limit = Unicode("1Gi", help="Memory limit of a dev-server pod.").tag(config=True)
    cpu_limit = Unicode("1", help="CPU limit of a dev-server pod.").tag(config=True)
    install_memory_limit = Unicode("2Gi", help="Memory limit of an install pod.").tag(config=True)
    storage_limit = Unicode(
        "4Gi", help="Ephemeral-storage limit of a pod (its project folder and logs)."
    ).tag(config=True)
    tmp_size = Unicode("256Mi", help="Size of each pod's /tmp (memory).").tag(config=True)
    ingress_from = List(
        Dict(),
        help="""NetworkPolicy peers that may reach the dev servers: the service's pods
        (the default selects zero-to-jupyterhub's hub pod, where the service runs).""",
    ).tag(config=True)

    @default("ingress_from")
    def _default_ingress(self):
        return [{"podSelector": {"matchLabels": {"app": "jupyterhub", "component": "hub"}}}]

    proxy_address = Unicode(
        "",
        help="""Address of this service that install pods reach: the registry proxy
        listens there and is an install's only way out. Empty: the proxy listens on
        the service pod's own address ($POD_IP).""",
    ).tag(config=True)
    extra_ca_certs = Unicode(
        help="""PEM file of CAs the install pods trust (NODE_EXTRA_CA_CERTS), for a
        registry behind a TLS-intercepting proxy or with a private CA. Defaults to this
        host's system CA bundle; empty to trust only Node's built-in CAs.""",
    ).tag(config=True)

    @default("extra_ca_certs")
    def _default_ca(self):
        return system_ca_bundle() or ""

    start_timeout = Float(180, help="Seconds a pod may take to be scheduled and start.").tag(
        config=True
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.cluster = Cluster(
            kubeconfig=self.kubeconfig, namespace=self.namespace, owner=self.owner, log=self.log
        )
        self._synced: dict[str, dict[str, tuple[int, int, int]]] = {}
        self._sync_locks: dict[str, asyncio.Lock] = {}
        self._support_files: dict[str, bytes] | None = None
        self._stopped: dict[str, tuple[str, str]] = {}
        """project -> (base, token) of a pod deleted by ``stop``, for ``resume``."""
        self.installs = Installs(self)

    @classmethod
    def available(cls) -> str | None:
        try:
            import kubernetes_asyncio  # noqa: F401
        except ImportError:
            return "kubernetes_asyncio is not installed (pip install jupyter-reactbox[kubernetes])"
        return None

    async def doctor(self) -> list[Finding]:
        """The client library, the API server, and the right to list pods in the
        namespace (the service's account needs more, as docs/jupyterhub.md says)."""
        if why := self.available():
            return [Finding(False, why)]
        try:
            core = await self.cluster.apis()
            await core.list_namespaced_pod(self.namespace, limit=1)
        except Exception as exc:  # EngineUnavailable, or what the API answered
            return [Finding(False, f"Kubernetes API: {exc}")]
        return [
            Finding(True, f"Kubernetes API reachable; pods in {self.namespace} can be listed"),
            *await super().doctor(),
        ]

    def isolation(self) -> Isolation:
        runtime = f", under {self.runtime_class}" if self.runtime_class else ""
        return Isolation(
            backend=self.name,
            sandboxed=True,
            how=f"a hardened pod per preview in {self.namespace}, behind a NetworkPolicy{runtime}",
        )

    async def _ensure_support(self) -> str:
        """The ConfigMap of the support scripts (read once: they are this package's)."""
        if self._support_files is None:
            self._support_files = await asyncio.to_thread(
                lambda: {p.name: p.read_bytes() for p in SUPPORT_DIR.iterdir() if p.is_file()}
            )
        made = files_map("support", self._support_files)
        core = await self.cluster.apis()
        return await self.cluster.made_once(made, core.create_namespaced_config_map)

    async def ensure_ca(self) -> str | None:
        if not self.extra_ca_certs:
            return None
        pem = await asyncio.to_thread(Path(self.extra_ca_certs).read_bytes)
        made = files_map("ca", {"ca.pem": pem})
        core = await self.cluster.apis()
        return await self.cluster.made_once(made, core.create_namespaced_config_map)

    async def ensure_cache(self) -> str | None:
        """The owner's cache volume claim (made once), with ``storage_class``."""
        if not self.storage_class:
            return None
        claim = cache_claim(self.owner, self.storage_class, self.cache_size)
        core = await self.cluster.apis()
        return await self.cluster.made_once(claim, core.create_namespaced_persistent_volume_claim)

    def placement(self) -> Placement:
        return Placement(
            runtime_class=self.runtime_class or None,
            node_selector=dict(self.node_selector),
            tolerations=tuple(self.tolerations),
            pull_policy=self.pull_policy,
        )

    def limits(self, memory: str) -> PodLimits:
        return PodLimits(
            cpu=self.cpu_limit,
            memory=memory,
            ephemeral_storage=self.storage_limit,
            tmp_size=self.tmp_size,
            project_size=self.storage_limit,
        )

    async def send(self, pod: str, app_dir: Path, paths: list[str]) -> None:
        """Stream ``paths`` of the project into the pod's project folder."""
        with tempfile.TemporaryFile(prefix="reactbox-sync-") as f:
            await asyncio.to_thread(pack, app_dir, paths, f, uid=self.uid)
            size = f.tell()
            f.seek(0)
            code, err = await self.cluster.exec(
                pod,
                ["tar", "-x", "-m", "--no-same-owner", "-C", PROJECT],
                stdin=(f, size),
                timeout=300,
            )
        if code != 0:
            why = err.decode("utf-8", "replace")[-500:]
            raise SandboxError(f"Could not send the project's files to {pod}: {why}")

    # -- installs -----------------------------------------------------------------

    @cached_property
    def installer(self) -> Installer:
        return self._installer(run=self.installs.run_once, route=self.installs.route)

    # -- dev servers ----------------------------------------------------------------

    def _run_pod(
        self, project_id: str, plan: AppPlan, base: str, token: str, support: str
    ) -> dict[str, Any]:
        where = dict(base=base, host="0.0.0.0", port=PORT, support=SUPPORT)

        def spec(base: str, token: str, hash_: str) -> dict[str, Any]:
            return run_pod(
                image=self.image,
                owner=self.owner,
                project_id=project_id,
                argv=plan.dev_argv(**where),
                env=plan.dev_env(**where),
                framework=plan.framework,
                base=base,
                token=token,
                spec_hash=hash_,
                support_map=support,
                limits=self.limits(self.memory_limit),
                placement=self.placement(),
                uid=self.uid,
            )

        return spec(base, token, spec_hash(spec("{base}", "{token}", "")))

    async def launch(
        self,
        project_id: str,
        app_dir: Path,
        plan: AppPlan,
        *,
        base: str,
        token: str,
    ) -> Endpoint:
        support = await self._ensure_support()
        pod = self._run_pod(project_id, plan, base, token, support)
        name = pod["metadata"]["name"]
        policy = network_policy(
            owner=self.owner, project_id=project_id, role="run", ingress_from=self.ingress_from
        )
        self._synced.pop(project_id, None)
        await self.cluster.create(pod, policy)
        try:
            running = await self.cluster.wait_pod(name, self.cluster.is_running, self.start_timeout)
            async with self._sync_lock(project_id):
                files = await asyncio.to_thread(manifest, app_dir)
                await self.send(name, app_dir, await asyncio.to_thread(top_level, app_dir))
                self._synced[project_id] = files
            code, err = await self.cluster.exec(name, ["touch", SYNCED])
            if code != 0:
                raise SandboxError(f"Could not start the dev server: {err.decode()[-300:]}")
        except BaseException:
            await asyncio.shield(self.cluster.delete(name))
            raise
        self.log.info("Started dev server of %s in pod %s", project_id, name)
        return Endpoint(running["status"]["podIP"], PORT)

    def _sync_lock(self, project_id: str) -> asyncio.Lock:
        return self._sync_locks.setdefault(project_id, asyncio.Lock())

    async def sync(self, project_id: str, app_dir: Path) -> None:
        """Send the files that changed since the last send (the dev server's HMR
        sees them); remove those that went."""
        name = pod_name(self.owner, project_id, "run")
        async with self._sync_lock(project_id):
            before = self._synced.get(project_id)
            pod = await self.cluster.pod(name)
            if before is None or pod is None or not self.cluster.is_running(pod):
                return
            now = await asyncio.to_thread(manifest, app_dir)
            changed = sorted(p for p, st in now.items() if before.get(p) != st)
            gone = sorted(p for p in before if p not in now)
            if gone:
                quoted = " ".join(shlex.quote(f"{PROJECT}/{p}") for p in gone)
                await self.cluster.exec(name, ["sh", "-c", f"rm -rf -- {quoted}"])
            if changed:
                await self.send(name, app_dir, changed)
            self._synced[project_id] = now

    async def resume(self, project_id: str, app_dir: Path, plan: AppPlan) -> Record | None:
        """The pod if it still runs as configured; else, after an idle stop, a new pod
        under the stopped one's base and token, so its link keeps working (as a kept
        container's does).  None: nothing to resume."""
        name = pod_name(self.owner, project_id, "run")
        pod = await self.cluster.pod(name)
        if pod is not None and self.cluster.is_running(pod) and project_id in self._synced:
            support = await self._ensure_support()
            spec = f"{GROUP}/spec"
            current = self._run_pod(project_id, plan, "", "", support)["metadata"]["annotations"]
            if (pod["metadata"].get("annotations") or {}).get(spec) == current[spec]:
                await self.sync(project_id, app_dir)
                return self._record(pod)
            self.log.info("The pod of %s is out of date; replacing it", project_id)
        stopped = self._stopped.pop(project_id, None)
        if stopped is None:
            return None
        base, token = stopped
        endpoint = await self.launch(project_id, app_dir, plan, base=base, token=token)
        return Record(project_id, plan.framework, token, base, endpoint)

    def _record(self, pod: dict[str, Any]) -> Record:
        a = pod["metadata"].get("annotations") or {}
        endpoint = None
        if self.cluster.is_running(pod):
            endpoint = Endpoint(pod["status"]["podIP"], int(a.get(f"{GROUP}/port", 0)))
        return Record.kept(under(f"{GROUP}/", a), endpoint)

    async def poll(self, project_id: str) -> Exit | None:
        pod = await self.cluster.pod(pod_name(self.owner, project_id, "run"))
        if pod is None:
            return Exit(code=None, why="its pod is gone")
        if pod["status"].get("phase") in ("Pending", "Running"):
            return None
        for status in pod["status"].get("containerStatuses") or []:
            ended = status.get("state", {}).get("terminated")
            if ended:
                return Exit.of(
                    ended.get("exitCode"),
                    out_of_memory=ended.get("reason") == "OOMKilled",
                    limit="c.KubernetesBackend.memory_limit",
                )
        return Exit(code=None, why=self.cluster.why(pod))

    async def running(self) -> set[str]:
        await self.cluster.pod("")
        return {
            p["metadata"]["labels"][f"{GROUP}/project"]
            for p in self.cluster.pods.values()
            if p["metadata"]["labels"].get("app.kubernetes.io/component") == "run"
            and p["status"].get("phase") == "Running"
            and p["metadata"]["labels"][f"{GROUP}/project"] in self._synced
        }

    async def stop(self, project_id: str) -> None:
        """Delete the pod: the files and caches are here, and a start sends them again
        (``resume``, under the same link)."""
        name = pod_name(self.owner, project_id, "run")
        pod = await self.cluster.pod(name)
        if pod is not None and self.cluster.is_running(pod):
            record = self._record(pod)
            self._stopped[project_id] = (record.base, record.token)
        self._synced.pop(project_id, None)
        await self.cluster.delete(name)

    async def discard(self, project_id: str) -> None:
        self._stopped.pop(project_id, None)
        self._synced.pop(project_id, None)
        await self.cluster.delete(pod_name(self.owner, project_id, "run"))

    async def remove(self, project_id: str) -> None:
        self._stopped.pop(project_id, None)
        self._synced.pop(project_id, None)
        for role in ("install", "run"):
            await self.cluster.delete(pod_name(self.owner, project_id, role), policy=True)

    async def recover(self, known: set[str]) -> list[Record]:
        """The running pods of ``known`` projects, sent their files again is not needed:
        a pod keeps its copy; what changed meanwhile is sent by the next sync."""
        await self.cluster.pod("")
        kept: list[Record] = []
        for name, pod in sorted(self.cluster.pods.items()):
            labels = pod["metadata"]["labels"]
            project_id = labels.get(f"{GROUP}/project", "")
            role = labels.get("app.kubernetes.io/component", "")
            record = replace(self._record(pod), project_id=project_id)
            why = left_over(record, role, known, [r.project_id for r in kept])
            if why is None and not self.cluster.is_running(pod):
                why = "it no longer runs"
            if why:
                self.log.warning("Removing pod %s: %s", name, why)
                await self.cluster.delete(name, policy=project_id not in known)
                continue
            self._synced[project_id] = {}  # unknown: the next sync sends every file
            kept.append(record)
        return kept

    async def logs(self, project_id: str, *, tail: int = 500) -> str:
        core = await self.cluster.apis()
        try:
            return await core.read_namespaced_pod_log(
                pod_name(self.owner, project_id, "run"), self.namespace, tail_lines=tail
            )
        except Exception as exc:
            if api_error(exc) in (400, 404):  # gone, or not started
                return ""
            raise

    async def follow_logs(self, project_id: str) -> _LogFollow:
        self.followers.take()
        try:
            core = await self.cluster.apis()
            response = await core.read_namespaced_pod_log(
                pod_name(self.owner, project_id, "run"),
                self.namespace,
                follow=True,
                since_seconds=1,
                _preload_content=False,
            )
        except Exception as exc:
            self.followers.give_back()
            if api_error(exc) in (400, 404):
                return _LogFollow(self.followers, None)
            raise
        return _LogFollow(self.followers, response)

    async def close(self) -> None:
        await super().close()
        await self.cluster.close()
        await self.installs.close()


class _LogFollow:
    def __init__(self, followers: Followers, response):
        """A follow ``followers`` counted (``Followers.take``), unless ``response`` is None."""
        self._followers, self._response = followers, response

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        if self._response is None:
            return
        async for line in self._response.content:
            yield line.decode("utf-8", "replace")

    def close(self) -> None:
        if self._response is not None:
            response, self._response = self._response, None
            self._followers.give_back()
            response.release()
