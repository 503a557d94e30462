"""One owner's view of the cluster: the API clients, a watch of the owner's pods,
and the few calls the Kubernetes backend makes with them (create and delete a
pod with its NetworkPolicy, exec in a pod, make a ConfigMap or claim once).

One watch per owner keeps every pod of that owner in memory (as kubespawner's
reflector does): list, then watch from that version; list again when the
version is too old.  ``pod``, ``wait_pod`` and ``delete`` read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shlex
import time
from pathlib import Path
from typing import Any

from ...errors import EngineUnavailable, SandboxError
from .objects import GROUP

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
STDIN, STDOUT, STDERR, ERROR = 0, 1, 2, 3


def api_error(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


class Cluster:
    """The API server as one owner's backend uses it."""

    def __init__(self, *, kubeconfig: str, namespace: str, owner: str, log):
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.owner = owner
        self.log = log
        self._client = None
        self._ws = None
        self.core = None
        self.net = None
        self.pods: dict[str, dict[str, Any]] = {}
        """This owner's pods, by name, as the watch last saw them."""
        self.changed = asyncio.Event()
        """Set (and replaced) whenever the watch sees a change."""
        self._watching: asyncio.Task | None = None
        self.listed = asyncio.Event()
        self.made: set[str] = set()
        """ConfigMaps and claims made (or found), by name."""

    async def apis(self):
        if self.core is None:
            from kubernetes_asyncio import client, config
            from kubernetes_asyncio.stream import WsApiClient

            configuration = client.Configuration()
            try:
                in_cluster = await asyncio.to_thread(IN_CLUSTER_NAMESPACE.exists)
                if self.kubeconfig or not in_cluster:
                    await config.load_kube_config(
                        config_file=self.kubeconfig or None, client_configuration=configuration
                    )
                else:
                    config.load_incluster_config(client_configuration=configuration)
            except Exception as exc:
                raise EngineUnavailable(f"Cannot reach the Kubernetes API: {exc}") from exc
            self._client = client.ApiClient(configuration)
            self._ws = WsApiClient(configuration)
            self.core = client.CoreV1Api(self._client)
            self.net = client.NetworkingV1Api(self._client)
        return self.core

    def selector(self, role: str | None = None) -> str:
        out = f"{GROUP}/owner={self.owner}"
        return out + (f",app.kubernetes.io/component={role}" if role else "")

    async def _watch(self) -> None:
        """Keep ``_pods`` (this owner's pods) current: list, then watch from there;
        list again when the watch's version is too old."""
        from kubernetes_asyncio import watch

        core = await self.apis()
        while True:
            try:
                listed = await core.list_namespaced_pod(
                    self.namespace, label_selector=self.selector(), _preload_content=False
                )
                data = json.loads(await listed.read())
                self.pods = {p["metadata"]["name"]: p for p in data["items"]}
                version = data["metadata"]["resourceVersion"]
                self.listed.set()
                self._notify()
                while True:
                    stream = watch.Watch().stream(
                        core.list_namespaced_pod,
                        self.namespace,
                        label_selector=self.selector(),
                        resource_version=version,
                        timeout_seconds=300,
                        allow_watch_bookmarks=True,
                    )
                    async with stream:
                        async for event in stream:
                            pod = event["raw_object"]
                            kind = event["type"]
                            if kind == "ERROR":
                                raise RuntimeError(pod.get("message", "watch error"))
                            version = pod["metadata"].get("resourceVersion", version)
                            if kind == "BOOKMARK":
                                continue
                            name = pod["metadata"]["name"]
                            if kind == "DELETED":
                                self.pods.pop(name, None)
                            else:
                                self.pods[name] = pod
                            self._notify()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API server went away, or the version expired
                log = self.log.debug if self.listed.is_set() else self.log.warning
                log("Watch of %s's pods restarts: %s", self.owner, exc)
                await asyncio.sleep(1)

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def pod(self, name: str) -> dict[str, Any] | None:
        """The pod as the watch last saw it (None: there is none)."""
        if self._watching is None:
            self._watching = asyncio.create_task(self._watch())
        try:
            await asyncio.wait_for(self.listed.wait(), 30)
        except asyncio.TimeoutError:
            raise EngineUnavailable(
                f"The Kubernetes API did not list the pods of namespace {self.namespace} "
                "in 30 s: check c.KubernetesBackend.kubeconfig (or the service account) "
                "and the Role of docs/jupyterhub.md."
            ) from None
        return self.pods.get(name)

    async def wait_pod(self, name: str, ready, timeout: float) -> dict[str, Any]:
        """The pod once ``ready(pod)``; SandboxError if it ends or the time is up."""
        deadline = time.monotonic() + timeout
        while True:
            changed = self.changed
            pod = await self.pod(name)
            if pod is not None and ready(pod):
                return pod
            if pod is not None and pod["status"].get("phase") in ("Succeeded", "Failed"):
                raise SandboxError(f"Pod {name} ended: {self.why(pod)}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise SandboxError(f"Pod {name} did not start in {timeout:.0f} s: {self.why(pod)}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), left)

    @staticmethod
    def why(pod: dict[str, Any] | None) -> str:
        if pod is None:
            return "it is gone"
        for status in pod["status"].get("containerStatuses") or []:
            for state in status.get("state", {}).values():
                if state.get("reason") or state.get("message"):
                    return " ".join(filter(None, (state.get("reason"), state.get("message"))))
        for cond in pod["status"].get("conditions") or []:
            if cond.get("message"):
                return cond["message"]
        return pod["status"].get("phase", "unknown")

    @staticmethod
    def is_running(pod: dict[str, Any]) -> bool:
        return pod["status"].get("phase") == "Running" and bool(pod["status"].get("podIP"))

    async def create(self, pod: dict[str, Any], policy: dict[str, Any]) -> None:
        core = await self.apis()
        name = pod["metadata"]["name"]
        await self.delete(name)
        try:
            await self.net.create_namespaced_network_policy(self.namespace, policy)
        except Exception as exc:
            if api_error(exc) != 409:
                raise
            await self.net.replace_namespaced_network_policy(name, self.namespace, policy)
        await core.create_namespaced_pod(self.namespace, pod)

    async def delete(self, name: str, *, policy: bool = False) -> None:
        """Delete the pod (and its NetworkPolicy), waiting until it is gone."""
        core = await self.apis()
        try:
            await core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)
        except Exception as exc:
            if api_error(exc) != 404:
                raise
        if policy:
            with contextlib.suppress(Exception):
                await self.net.delete_namespaced_network_policy(name, self.namespace)
        deadline = time.monotonic() + 60
        while await self.pod(name) is not None and time.monotonic() < deadline:
            changed = self.changed
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), 1)

    async def exec(
        self,
        pod: str,
        argv: list[str],
        *,
        stdin: tuple[Any, int] | None = None,
        stdout: Any = None,
        timeout: float = 60,
    ) -> tuple[int, bytes]:
        """Run ``argv`` in the pod: (exit code, its output: stderr, and stdout unless
        ``stdout`` (a file) takes it).  With ``stdin`` (a file and its size), the
        command reads exactly its bytes: the exec protocol (v4) cannot close a
        stream, so it is framed by ``head -c``."""
        await self.apis()
        from kubernetes_asyncio import client

        if stdin is not None:
            size = stdin[1]
            argv = ["sh", "-c", f"head -c {size} | {shlex.join(argv)}"]
        ws_core = client.CoreV1Api(self._ws)
        connect = await ws_core.connect_get_namespaced_pod_exec(
            pod,
            self.namespace,
            command=argv,
            stdin=stdin is not None,
            stdout=True,
            stderr=True,
            tty=False,
            _preload_content=False,
        )
        status: dict[str, Any] | None = None
        text = io.BytesIO()

        async def run():
            nonlocal status
            async with connect as ws:
                if stdin is not None:
                    while chunk := await asyncio.to_thread(stdin[0].read, 1 << 20):
                        await ws.send_bytes(bytes([STDIN]) + chunk)
                async for message in ws:
                    data = message.data
                    if isinstance(data, str):
                        data = data.encode()
                    if not data:
                        continue
                    channel, body = data[0], data[1:]
                    if channel == STDOUT:
                        (stdout or text).write(body)
                    elif channel == STDERR:
                        text.write(body)
                    elif channel == ERROR and body:
                        status = json.loads(body)

        await asyncio.wait_for(run(), timeout)
        if status is None:
            raise SandboxError(f"The command in pod {pod} ended with no status.")
        if status.get("status") == "Success":
            return 0, text.getvalue()
        for cause in (status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                return int(cause["message"]), text.getvalue()
        raise SandboxError(f"The command in pod {pod} failed: {status.get('message')}")

    async def made_once(self, made: dict[str, Any], create) -> str:
        """The name of ``made``, created with ``create(namespace, body)`` unless this
        backend made it already or it is there (409: the same name, the same content)."""
        name = made["metadata"]["name"]
        if name not in self.made:
            try:
                await create(self.namespace, made)
            except Exception as exc:
                if api_error(exc) != 409:
                    raise
            self.made.add(name)
        return name

    async def close(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(BaseException):
                await self._watching
        for api in (self._client, self._ws):
            if api is not None:
                await api.close()
