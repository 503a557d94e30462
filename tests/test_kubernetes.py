"""The Kubernetes backend on a real cluster: the single-node cluster that
`.ci/kube` builds from Debian's packages (kube-apiserver, scheduler, controller
manager and kubelet from Debian's Kubernetes source, containerd, CNI bridge).

Each test has a namespace of its own.  NetworkPolicies are read back from the
API server as objects: this cluster has no controller that enforces them (none
is packaged in Debian), so nothing here claims they are enforced.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from conftest import FIXTURES, chromium, embed_preview
from test_edits import BUTTON, JOIN_NOW, block
from test_hub import Hub, fetch, login, settled, upload

from jupyter_reactbox import frameworks
from jupyter_reactbox.backends import kubernetes as k8s
from jupyter_reactbox.backends.kubernetes import KubernetesBackend

pytestmark = [pytest.mark.docker, pytest.mark.browser, pytest.mark.kubernetes]

ROOT = Path(__file__).parent.parent
KUBECONFIG = Path("/var/lib/reactbox-kube/admin.kubeconfig")
KUBECTL = "/var/cache/reactbox-kube/bin/kubectl"
GATEWAY = "10.244.0.1"
"""The host's address on the pods' bridge: the registry proxy listens there."""


@pytest.fixture(scope="session")
def kube(sandbox_image):
    """The cluster, started if it is not running (`.ci/kube up` is idempotent; on a
    fresh machine `.ci/setup` has built it)."""
    up = subprocess.run(
        ["bash", str(ROOT / ".ci/kube"), "up"], capture_output=True, text=True, timeout=900
    )
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    return KUBECONFIG


def kubectl(*args: str, check: bool = True, input: str | None = None):
    run = subprocess.run(
        [KUBECTL, f"--kubeconfig={KUBECONFIG}", *args], capture_output=True, text=True, input=input
    )
    if check:
        assert run.returncode == 0, run.stderr
    return run


def get(kind: str, name: str, namespace: str) -> dict | None:
    run = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if run.returncode != 0:
        assert "NotFound" in run.stderr, run.stderr
        return None
    return json.loads(run.stdout)


def test_doctor_asks_the_cluster_not_an_engine(kube):
    """`jupyter reactbox doctor --backend kubernetes` checks the API server it would
    use (and runs no Docker check)."""

    def doctor(kubeconfig: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["jupyter", "reactbox", "doctor", "--backend", "kubernetes"],
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": kubeconfig},
            timeout=120,
        )

    said = doctor(str(kube))
    assert said.returncode == 0, said.stdout + said.stderr
    assert "ok   Kubernetes API reachable; pods in default can be listed" in said.stdout
    assert "Docker engine" not in said.stdout
    said = doctor("/nonexistent/kubeconfig")
    assert said.returncode == 1 and "FAIL Kubernetes API: " in said.stdout, said.stdout


@pytest.fixture
def namespace(kube):
    name = f"reactbox-test-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    # The admission controller needs the namespace's default service account.
    for _ in range(60):
        if kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0:
            break
        time.sleep(0.5)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


def service_account(namespace: str, tmp_path: Path) -> Path:
    """A kubeconfig for a service account bound to the Role that docs/jupyterhub.md
    gives the hub, and nothing more: what the backend does must need no more."""
    doc = (ROOT / "docs" / "jupyterhub.md").read_text()
    (role,) = [b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if "kind: Role" in b]
    kubectl("apply", "-n", namespace, "-f", "-", input=role)
    kubectl("create", "serviceaccount", "reactbox", "-n", namespace)
    kubectl(
        "create",
        "rolebinding",
        "reactbox",
        "-n",
        namespace,
        "--role=reactbox-previews",
        f"--serviceaccount={namespace}:reactbox",
    )
    for _ in range(60):
        secret = kubectl(
            "get",
            "serviceaccount",
            "reactbox",
            "-n",
            namespace,
            "-o",
            "jsonpath={.secrets[0].name}",
        ).stdout
        if secret:
            break
        time.sleep(0.5)
    encoded = kubectl(
        "get", "secret", secret, "-n", namespace, "-o", "jsonpath={.data.token}"
    ).stdout
    token = base64.b64decode(encoded).decode()
    config = tmp_path / "service.kubeconfig"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": "https://127.0.0.1:6443",
                            "certificate-authority": str(KUBECONFIG.parent / "pki" / "ca.crt"),
                        },
                    }
                ],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [
                    {"name": "c", "context": {"cluster": "c", "user": "u", "namespace": namespace}}
                ],
                "current-context": "c",
            }
        )
    )
    return config


def backend_settings(namespace: str, image: str, tmp_path: Path, **more) -> dict:
    """Ada's backend in ``namespace``, as the service with the docs' Role would run it."""
    return dict(
        owner="ada",
        namespace=namespace,
        kubeconfig=str(service_account(namespace, tmp_path)),
        image=image,
        pull_policy="Never",
        proxy_address=GATEWAY,
        cache_dir=str(tmp_path / "cache"),
        **more,
    )


def contains(actual, expected, where="") -> list[str]:
    """Where ``actual`` differs from ``expected`` in what ``expected`` sets (the API
    server adds its defaults to the rest)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: {actual!r} is not a mapping"]
        return [d for k, v in expected.items() for d in contains(actual.get(k), v, f"{where}.{k}")]
    if expected == [] and actual is None:  # an empty list is left out when stored
        return []
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: {actual!r} != {expected!r}"]
        return [
            d
            for i, (a, e) in enumerate(zip(actual, expected, strict=True))
            for d in contains(a, e, f"{where}[{i}]")
        ]
    return [] if actual == expected else [f"{where}: {actual!r} != {expected!r}"]


async def page(url: str, wait: float = 60) -> str:
    """The body ``url`` answers 200 with, once it does."""
    deadline = time.monotonic() + wait
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as r:
                    if r.status == 200:
                        return await r.text()
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer 200 in {wait} s")
            await asyncio.sleep(0.25)


async def test_a_preview_pod_is_hardened_gets_its_files_and_comes_back(
    namespace, sandbox_image, tmp_path
):
    """Through the backend alone, with only the Role docs/jupyterhub.md gives the
    service: an install in a pod of its own, a dev-server pod that matches the hardened
    spec when read back, a probe inside it, an edit synced, a stop that deletes the
    pod, a resume under the same link, recovery by a new service."""
    app = tmp_path / "shop" / "app"
    shutil.copytree(FIXTURES / "vite-react", app)
    settings = backend_settings(namespace, sandbox_image, tmp_path, memory_limit="512Mi")
    backend = KubernetesBackend(**settings)
    plan = frameworks.detect(app)
    try:
        assert await backend.install("shop", app, plan, tmp_path / "install.log") == "fresh"
        assert (app / "node_modules/vite/package.json").is_file()
        # The install pod and its policy are gone once it is done.
        assert get("pod", "reactbox-ada-shop-install", namespace) is None
        assert get("networkpolicy", "reactbox-ada-shop-install", namespace) is None

        base = "/user/ada/reactbox/preview/shop/tok1/"
        endpoint = await backend.launch("shop", app, plan, base=base, token="tok1")
        body = await page(f"http://{endpoint.host}:{endpoint.port}{base}")
        assert '<div id="root">' in body

        # Read back from the API server: what the backend asked for, field by field.
        pod = get("pod", "reactbox-ada-shop", namespace)
        wanted = backend._run_pod("shop", plan, base, "tok1", await backend._ensure_support())
        assert contains(pod, wanted) == []
        spec = pod["spec"]
        assert spec["automountServiceAccountToken"] is False
        assert not any(
            "serviceaccount" in m["mountPath"] for m in spec["containers"][0]["volumeMounts"]
        )
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        policy = get("networkpolicy", "reactbox-ada-shop", namespace)
        assert (
            contains(
                policy,
                k8s.network_policy(
                    owner="ada", project_id="shop", role="run", ingress_from=backend.ingress_from
                ),
            )
            == []
        )
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert policy["spec"].get("egress", []) == []

        # A probe inside the pod: uid 1000, no capabilities, a read-only root.
        code, out = await backend.cluster.exec(
            "reactbox-ada-shop",
            ["sh", "-c", "id -u; grep CapEff /proc/self/status; touch /probe 2>&1; true"],
        )
        lines = out.decode().splitlines()
        assert code == 0 and lines[0] == "1000", lines
        assert lines[1].split() == ["CapEff:", "0000000000000000"], lines
        assert "Read-only file system" in lines[2], lines

        # An edit written here reaches the dev server (and only what changed is sent).
        source = app / "src" / "App.jsx"
        source.write_text(source.read_text().replace("Get started", "Get going"))
        (app / "src" / "extra.txt").write_text("new")
        await backend.sync("shop", app)
        # Vite sees it when its watcher does: moments later, not at once.
        url = f"http://{endpoint.host}:{endpoint.port}{base}src/App.jsx"
        for _ in range(50):
            if "Get going" in (module := await page(url)):
                break
            await asyncio.sleep(0.2)
        assert "Get going" in module
        # The dev server's output, followed: it says it hot-updated the next change.
        follow = await backend.follow_logs("shop")
        lines = follow.__aiter__()
        source.write_text(source.read_text().replace("Get going", "Get moving"))
        await backend.sync("shop", app)

        async def hot_update():
            async for line in lines:
                if "hmr update" in line and "App.jsx" in line:
                    return line

        assert await asyncio.wait_for(hot_update(), 30)
        follow.close()
        (app / "src" / "extra.txt").unlink()
        await backend.sync("shop", app)
        code, _ = await backend.cluster.exec(
            "reactbox-ada-shop", ["test", "-e", "/project/src/extra.txt"]
        )
        assert code == 1

        # Idle stop deletes the pod; the files stay here, and resume brings it back
        # under the same link.
        await backend.stop("shop")
        assert get("pod", "reactbox-ada-shop", namespace) is None
        assert await backend.running() == set()
        record = await backend.resume("shop", app, plan)
        assert record is not None and (record.token, record.base) == ("tok1", base)
        module = await page(
            f"http://{record.endpoint.host}:{record.endpoint.port}{base}src/App.jsx"
        )
        assert "Get moving" in module

        # A new service (a restart) finds the running preview by its labels.
        again = KubernetesBackend(**settings)
        try:
            (found,) = await again.recover({"shop"})
            assert (found.project_id, found.token, found.base, found.framework) == (
                "shop",
                "tok1",
                base,
                "vite",
            )
            assert found.endpoint == record.endpoint
            assert await again.running() == {"shop"}
            assert "ready in" in await again.logs("shop")
            await again.remove("shop")
        finally:
            await again.close()
        assert get("pod", "reactbox-ada-shop", namespace) is None
        assert get("networkpolicy", "reactbox-ada-shop", namespace) is None
    finally:
        await backend.close()


@pytest.fixture
def volume(namespace, tmp_path):
    """A storage class of one volume (a folder here, every user may write it), as a
    cluster's provisioner would give: (its class name, the folder)."""
    folder = tmp_path / "volume"
    folder.mkdir()
    folder.chmod(0o777)
    name = f"{namespace}-cache"
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "5Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": name,
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(folder)},
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(volume))
    yield name, folder
    kubectl("delete", "persistentvolume", name, "--wait=false")


async def test_an_owners_package_cache_outlives_the_install_pods(
    namespace, volume, sandbox_image, tmp_path
):
    """With a storage class, installs share the owner's cache volume: what npm fetched
    is still there after the install pod is gone."""
    storage_class, folder = volume
    app = tmp_path / "shop" / "app"
    shutil.copytree(FIXTURES / "vite-react", app)
    backend = KubernetesBackend(
        **backend_settings(
            namespace, sandbox_image, tmp_path, storage_class=storage_class, cache_size="1Gi"
        )
    )
    try:
        plan = frameworks.detect(app)
        assert await backend.install("shop", app, plan, tmp_path / "install.log") == "fresh"
    finally:
        await backend.close()
    claim = get("persistentvolumeclaim", "reactbox-cache-ada", namespace)
    assert claim["status"]["phase"] == "Bound" and claim["spec"]["volumeName"] == storage_class
    assert get("pod", "reactbox-ada-shop-install", namespace) is None
    fetched = list((folder / "npm" / "_cacache" / "content-v2").rglob("*"))
    assert len([p for p in fetched if p.is_file()]) >= 10, fetched


async def test_a_workspaces_member_trees_come_back_from_the_install_pod(
    namespace, sandbox_image, tmp_path
):
    """A monorepo whose admin app wants another React than the rest: npm puts that
    one in the member's own node_modules, and the pod's member tree lands there."""
    app = tmp_path / "acme" / "app"
    shutil.copytree(FIXTURES / "workspace", app)
    admin = app / "apps" / "admin" / "package.json"
    manifest = json.loads(admin.read_text())
    manifest["dependencies"].update({"react": "^18.3.1", "react-dom": "^18.3.1"})
    admin.write_text(json.dumps(manifest, indent=2))
    (app / "package-lock.json").unlink()  # resolved from the manifests
    backend = KubernetesBackend(**backend_settings(namespace, sandbox_image, tmp_path))
    try:
        plan = frameworks.detect(app, "apps/web")
        assert await backend.install("acme", app, plan, tmp_path / "install.log") == "fresh"
    finally:
        await backend.close()

    def version(where: str) -> str:
        return json.loads((app / where / "react" / "package.json").read_text())["version"]

    assert version("node_modules").startswith("19.")
    assert version("apps/admin/node_modules").startswith("18.")
    assert os.readlink(app / "node_modules" / "@acme" / "ui") == "../../packages/ui"


@pytest.fixture
def kube_hub(tmp_path, hub_python, sandbox_image, hub_llm, namespace, request):
    """A JupyterHub whose reactbox service runs previews as pods (set up as
    docs/jupyterhub.md says for a cluster, with this cluster's kubeconfig)."""
    if not shutil.which("configurable-http-proxy"):
        pytest.fail(
            "These tests need configurable-http-proxy: npm install -g configurable-http-proxy"
        )
    h = Hub(
        tmp_path,
        hub_python,
        sandbox_image,
        hub_llm,
        service_args=(
            "--ReactBoxApp.backend=kubernetes",
            f"--Runtime.idle_timeout={IDLE_TIMEOUT}",
            f"--KubernetesBackend.namespace={namespace}",
            f"--KubernetesBackend.kubeconfig={KUBECONFIG}",
            f"--KubernetesBackend.image={sandbox_image}",
            "--KubernetesBackend.pull_policy=Never",
            f"--KubernetesBackend.proxy_address={GATEWAY}",
            "--KubernetesBackend.memory_limit=512Mi",
        ),
    )
    yield h
    if getattr(request.node, "rep_call", None) and request.node.rep_call.failed:
        print(h.logs())
    h.stop()


IDLE_TIMEOUT = 20


async def test_a_preview_under_jupyterhub_runs_as_a_pod(kube_hub, namespace):
    """Through the hub service with ``backend = kubernetes``: an upload becomes a pod,
    the preview renders in Chromium under Alice's path, an AI edit hot-reloads it,
    idle stop deletes the pod and a page load brings it back, and a restarted
    service re-attaches."""
    hub = kube_hub
    await hub.ready()
    token = await hub.start_server(hub.alice)
    auth = {"Authorization": f"token {token}"}
    api = f"{hub.url}/user/{hub.alice}/reactbox/api/projects"
    await upload(hub, hub.alice, token, "shop")
    info = await settled(hub, hub.alice, token, "shop")
    assert info["status"] == "running", info
    assert info["backend"] == "kubernetes" and "pod" in info["isolation"], info
    pod_name = f"reactbox-{hub.alice}-shop"
    pod = get("pod", pod_name, namespace)
    assert pod is not None and pod["status"]["phase"] == "Running"
    preview = hub.url + info["preview_url"]
    assert info["preview_url"].startswith(f"/user/{hub.alice}/reactbox/preview/shop/")

    async with chromium() as browser:
        page = await login(browser, hub, hub.alice)
        await page.goto(f"{hub.url}/user/{hub.alice}/a-page-that-is-not-there")
        frame = await embed_preview(page, preview)
        await frame.wait_for_selector("h1", timeout=60_000)
        assert await frame.inner_text("h1") == "Get started"

        # An AI edit: written by the service, sent to the pod, hot-reloaded.
        await frame.evaluate("window.__reactbox_marker = 42")
        hub.llm.answer(block("src/App.jsx", BUTTON, JOIN_NOW))
        r = await fetch(
            f"{api}/shop/edits",
            method="POST",
            body=json.dumps({"instruction": "Make the button say Join Now"}),
            headers=auth,
        )
        assert r.code == 200 and json.loads(r.body)["status"] == "applied", r.body
        await frame.wait_for_selector("text=Join Now", timeout=20_000)
        assert await frame.evaluate("window.__reactbox_marker") == 42  # hot, not reloaded

        # Idle stop deletes the pod; a page load brings the preview back, as it was.
        await page.close()
        deadline = time.monotonic() + IDLE_TIMEOUT + 60
        while get("pod", pod_name, namespace) is not None:
            assert time.monotonic() < deadline, "the idle preview's pod is still there"
            await asyncio.sleep(1)
        stopped = json.loads((await fetch(f"{api}/shop", headers=auth)).body)
        assert stopped["status"] == "stopped", stopped
        page = await login(browser, hub, hub.alice)
        await page.goto(f"{hub.url}/user/{hub.alice}/a-page-that-is-not-there")
        frame = await embed_preview(page, preview)
        await frame.wait_for_selector("text=Join Now", timeout=120_000)
        assert get("pod", pod_name, namespace) is not None

        # The service restarts: the running pod is re-attached, its link still works.
        await hub.restart_service()
        again = json.loads((await fetch(f"{api}/shop", headers=auth)).body)
        assert (again["status"], again["preview_url"]) == ("running", info["preview_url"])
        reopened = await browser.new_page()
        await reopened.goto(preview)
        await reopened.wait_for_selector("text=Join Now", timeout=30_000)

    r = await fetch(f"{api}/shop", method="DELETE", headers=auth)
    assert r.code == 204
    assert get("pod", pod_name, namespace) is None
