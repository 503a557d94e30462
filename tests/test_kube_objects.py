"""The Kubernetes backend's objects, as whole dicts: what a pod, its policy and the
support scripts' ConfigMap are, field by field; and how what an install pod sends
back is unpacked (no cluster needed)."""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from jupyter_reactbox.backends import kubernetes as k
from jupyter_reactbox.backends.kubernetes import unpack_modules
from jupyter_reactbox.errors import SandboxError

LIMITS = k.PodLimits(cpu="1", memory="1Gi", ephemeral_storage="4Gi", tmp_size="256Mi")
HARDENED_POD = {
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "runAsNonRoot": True,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
HARDENED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
RESOURCES = {
    "limits": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "4Gi"},
    "requests": {"cpu": "50m", "memory": "128Mi", "ephemeral-storage": "256Mi"},
}


def selectors(role: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "jupyter-reactbox",
        "app.kubernetes.io/component": role,
        "reactbox.jupyter.org/owner": "ada",
        "reactbox.jupyter.org/project": "shop",
    }


def test_a_preview_pod_is_hardened_and_carries_what_recovery_needs():
    base = "/user/ada%40lab/reactbox/preview/shop/tok/"
    pod = k.run_pod(
        image="jupyter-reactbox-sandbox:0.1.0",
        owner="ada",
        project_id="shop",
        argv=["node", "/opt/reactbox/support/vite-serve.mjs", "--port", "8000"],
        env={"REACTBOX_BASE": base},
        framework="vite",
        base=base,
        token="tok",
        spec_hash="0123abcd",
        support_map="reactbox-support-abc",
        limits=LIMITS,
        placement=k.Placement(
            runtime_class="gvisor",
            node_selector={"pool": "previews"},
            tolerations=({"key": "previews", "operator": "Exists", "effect": "NoSchedule"},),
            pull_policy="Never",
        ),
    )
    assert pod == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "reactbox-ada-shop",
            "labels": selectors("run"),
            "annotations": {
                "reactbox.jupyter.org/owner": "ada",
                "reactbox.jupyter.org/project": "shop",
                "reactbox.jupyter.org/framework": "vite",
                "reactbox.jupyter.org/base": base,
                "reactbox.jupyter.org/token": "tok",
                "reactbox.jupyter.org/port": "8000",
                "reactbox.jupyter.org/spec": "0123abcd",
            },
        },
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "securityContext": HARDENED_POD,
            "containers": [
                {
                    "name": "run",
                    "image": "jupyter-reactbox-sandbox:0.1.0",
                    "imagePullPolicy": "Never",
                    "command": [
                        "sh",
                        "-c",
                        k.WAIT_THEN_RUN,
                        "dev-server",
                        "node",
                        "/opt/reactbox/support/vite-serve.mjs",
                        "--port",
                        "8000",
                    ],
                    "workingDir": "/project",
                    "env": [
                        {"name": "HOME", "value": "/tmp"},
                        {"name": "NODE_ENV", "value": "development"},
                        {"name": "REACTBOX_BASE", "value": base},
                    ],
                    "securityContext": HARDENED_CONTAINER,
                    "resources": RESOURCES,
                    "volumeMounts": [
                        {"name": "project", "mountPath": "/project"},
                        {"name": "tmp", "mountPath": "/tmp"},
                        {"name": "support", "mountPath": k.SUPPORT, "readOnly": True},
                    ],
                    "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
                }
            ],
            "volumes": [
                {"name": "project", "emptyDir": {"sizeLimit": "4Gi"}},
                {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
                {"name": "support", "configMap": {"name": "reactbox-support-abc"}},
            ],
            "runtimeClassName": "gvisor",
            "nodeSelector": {"pool": "previews"},
            "tolerations": [{"key": "previews", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }


def test_an_install_pod_idles_for_the_backend_and_ends_by_itself():
    pod = k.install_pod(
        image="img:1",
        owner="ada",
        project_id="shop",
        limits=LIMITS,
        placement=k.Placement(),
        deadline=900,
    )
    assert pod == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "reactbox-ada-shop-install",
            "labels": selectors("install"),
            "annotations": {
                "reactbox.jupyter.org/owner": "ada",
                "reactbox.jupyter.org/project": "shop",
            },
        },
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "securityContext": HARDENED_POD,
            "containers": [
                {
                    "name": "install",
                    "image": "img:1",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", k.IDLE],
                    "workingDir": "/project",
                    "env": [{"name": "HOME", "value": "/tmp"}],
                    "securityContext": HARDENED_CONTAINER,
                    "resources": RESOURCES,
                    "volumeMounts": [
                        {"name": "project", "mountPath": "/project"},
                        {"name": "tmp", "mountPath": "/tmp"},
                        {"name": "cache", "mountPath": "/cache"},
                    ],
                }
            ],
            "volumes": [
                {"name": "project", "emptyDir": {"sizeLimit": "4Gi"}},
                {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
                {"name": "cache", "emptyDir": {}},
            ],
            "activeDeadlineSeconds": 900,
        },
    }


def test_a_preview_takes_connections_only_from_the_service_and_opens_none():
    service = {"podSelector": {"matchLabels": {"app": "jupyterhub", "component": "reactbox"}}}
    policy = k.network_policy(owner="ada", project_id="shop", role="run", ingress_from=[service])
    assert policy == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "reactbox-ada-shop", "labels": selectors("run")},
        "spec": {
            "podSelector": {
                "matchLabels": {
                    "reactbox.jupyter.org/owner": "ada",
                    "reactbox.jupyter.org/project": "shop",
                    "app.kubernetes.io/component": "run",
                }
            },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [service], "ports": [{"port": 8000, "protocol": "TCP"}]}],
            "egress": [],
        },
    }


def test_an_install_reaches_only_the_registry_proxy():
    policy = k.network_policy(
        owner="ada",
        project_id="shop",
        role="install",
        ingress_from=[],
        registry_proxy=("10.244.0.1", 3128),
    )
    assert policy["spec"] == {
        "podSelector": {
            "matchLabels": {
                "reactbox.jupyter.org/owner": "ada",
                "reactbox.jupyter.org/project": "shop",
                "app.kubernetes.io/component": "install",
            }
        },
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [
            {
                "to": [{"ipBlock": {"cidr": "10.244.0.1/32"}}],
                "ports": [{"port": 3128, "protocol": "TCP"}],
            }
        ],
    }
    # Without a proxy to reach, an install reaches nothing.
    closed = k.network_policy(owner="ada", project_id="shop", role="install", ingress_from=[])
    assert closed["spec"]["egress"] == [] and closed["spec"]["ingress"] == []


def test_the_support_scripts_are_one_immutable_map_named_by_content():
    files = {"vite-serve.mjs": b"serve()", "cra-start.cjs": b"start()"}
    made = k.files_map("support", files)
    assert made == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": k.files_map_name("support", files),
            "labels": {
                "app.kubernetes.io/name": "jupyter-reactbox",
                "app.kubernetes.io/component": "support",
            },
        },
        "immutable": True,
        "data": {"cra-start.cjs": "start()", "vite-serve.mjs": "serve()"},
    }
    assert (
        k.files_map_name("support", {**files, "cra-start.cjs": b"start(2)"})
        != made["metadata"]["name"]
    )


@pytest.mark.parametrize("owner", ["a" * 64, "ada_", "-ada", "ada lovelace"])
def test_a_name_that_is_no_label_value_is_refused(owner):
    with pytest.raises(ValueError, match="label value"):
        k.labels(owner, "shop", "run")


def test_the_longest_owner_and_project_still_name_a_pod():
    owner, project = "o" * 40 + "-0123abcd", "p" * 40
    pod = k.install_pod(
        image="i",
        owner=owner,
        project_id=project,
        limits=LIMITS,
        placement=k.Placement(),
        deadline=1,
    )
    name = pod["metadata"]["name"]
    assert len(name) <= 253 and name == f"reactbox-{owner}-{project}-install"
    assert all(len(v) <= 63 for v in pod["metadata"]["labels"].values())


def archive(*members: tuple[str, str, bytes | str, int]) -> io.BytesIO:
    """A tar of (name, type, data or link target, mode) members, as an install pod
    could send."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, kind, data, mode in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "link": tarfile.SYMTYPE,
                "hard": tarfile.LNKTYPE,
                "char": tarfile.CHRTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            if kind in ("link", "hard"):
                info.linkname = data
            tar.addfile(info)
    out.seek(0)
    return out


def test_an_install_pods_node_modules_unpacks_as_npm_would_have_written_it(tmp_path):
    unpack_modules(
        archive(
            ("node_modules", "dir", b"", 0o755),
            ("node_modules/vite", "dir", b"", 0o755),
            ("node_modules/vite/bin.js", "file", b"#!/usr/bin/env node", 0o4755),
            ("node_modules/.bin", "dir", b"", 0o755),
            ("node_modules/.bin/vite", "link", "../vite/bin.js", 0o777),
        ),
        tmp_path,
    )
    tool = tmp_path / "node_modules/vite/bin.js"
    assert tool.read_bytes() == b"#!/usr/bin/env node"
    assert stat.S_IMODE(tool.stat().st_mode) == 0o755  # no set-uid bit
    assert os.readlink(tmp_path / "node_modules/.bin/vite") == "../vite/bin.js"
    assert tool.stat().st_uid == os.getuid()


def test_a_workspace_members_node_modules_comes_back_and_nothing_else_of_it(tmp_path):
    (tmp_path / "apps/web").mkdir(parents=True)
    tree = archive(
        ("node_modules", "dir", b"", 0o755),
        ("apps/web/node_modules", "dir", b"", 0o755),
        ("apps/web/node_modules/react", "dir", b"", 0o755),
        ("apps/web/node_modules/react/index.js", "file", b"x", 0o644),
    )
    unpack_modules(tree, tmp_path, ("apps/web",))
    assert (tmp_path / "apps/web/node_modules/react/index.js").read_bytes() == b"x"
    for name in ("apps/web/src/App.jsx", "apps/other/node_modules/x"):
        with pytest.raises(SandboxError):
            unpack_modules(archive((name, "file", b"x", 0o644)), tmp_path, ("apps/web",))
    assert not (tmp_path / "apps/web/src").exists()


@pytest.mark.parametrize(
    "members",
    [
        [("../outside", "file", b"x", 0o644)],
        [("/etc/outside", "file", b"x", 0o644)],
        [("node_modules/../outside", "file", b"x", 0o644)],
        [("src/App.jsx", "file", b"x", 0o644)],  # only node_modules comes back
        [("node_modules/tty", "char", b"", 0o666)],
        [("node_modules/pipe", "fifo", b"", 0o666)],
        [("node_modules/hard", "hard", "node_modules/x", 0o644)],
        # A link, then a write through it (to where the link points, outside).
        [("node_modules/up", "link", "../..", 0o777), ("node_modules/up/x", "file", b"x", 0o644)],
        # A link, then a file over it (which would write through it).
        [("node_modules/a", "link", "/etc/passwd", 0o777), ("node_modules/a", "file", b"x", 0o644)],
    ],
    ids=[
        "dotdot",
        "absolute",
        "inner-dotdot",
        "not-modules",
        "device",
        "fifo",
        "hardlink",
        "through-link",
        "over-link",
    ],
)
def test_a_hostile_node_modules_archive_is_refused_and_writes_nothing_outside(tmp_path, members):
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(SandboxError):
        unpack_modules(archive(*members), staging)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["staging"]
    assert not (staging / "src").exists()


def test_an_owners_package_cache_is_one_claim_the_install_pods_mount():
    claim = k.cache_claim("ada", "fast", "5Gi")
    assert claim == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "reactbox-cache-ada",
            "labels": {
                "app.kubernetes.io/name": "jupyter-reactbox",
                "app.kubernetes.io/component": "cache",
                "reactbox.jupyter.org/owner": "ada",
            },
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "fast",
            "resources": {"requests": {"storage": "5Gi"}},
        },
    }
    pod = k.install_pod(
        image="i",
        owner="ada",
        project_id="shop",
        limits=LIMITS,
        placement=k.Placement(),
        deadline=60,
        ca_map="reactbox-ca-1",
        cache_claim="reactbox-cache-ada",
    )
    (container,) = pod["spec"]["containers"]
    assert container["env"] == [
        {"name": "HOME", "value": "/tmp"},
        {"name": "NODE_EXTRA_CA_CERTS", "value": "/etc/reactbox/ca.pem"},
    ]
    assert container["volumeMounts"][2:] == [
        {"name": "cache", "mountPath": "/cache"},
        {"name": "ca", "mountPath": "/etc/reactbox", "readOnly": True},
    ]
    assert pod["spec"]["volumes"][2:] == [
        {"name": "cache", "persistentVolumeClaim": {"claimName": "reactbox-cache-ada"}},
        {"name": "ca", "configMap": {"name": "reactbox-ca-1"}},
    ]
