"""Container specs are pure functions: compared as whole dicts, no engine needed."""

from __future__ import annotations

from pathlib import Path

from jupyter_reactbox.backends.base import package_cache
from jupyter_reactbox.backends.docker import (
    HELD,
    SPARE_HELD,
    Limits,
    install_container_kwargs,
    run_container_kwargs,
    run_script,
    spare_container_kwargs,
)
from jupyter_reactbox.frameworks import SUPPORT_DIR, AppPlan, vite

VITE = AppPlan(vite.FRAMEWORK)

HARDENING = dict(
    read_only=True,
    tmpfs={"/tmp": "rw,nosuid,nodev,size=256m"},
    cap_drop=["ALL"],
    security_opt=["no-new-privileges"],
    pids_limit=512,
    mem_limit="1g",
    memswap_limit="1g",
    nano_cpus=1_000_000_000,
    init=True,
    log_config={"type": "json-file", "config": {"max-size": "2m", "max-file": "2"}},
)


def test_run_container_spec():
    plan = VITE
    spec = run_container_kwargs(
        image="img:1",
        owner="alice",
        project_id="shop",
        app_dir=Path("/data/shop/app"),
        user="1000:1000",
        plan=plan,
        base="/user/alice/reactbox/preview/shop/T/",
        token="T",
        network="reactbox-alice-shop",
        limits=Limits(),
        gate=Path("/cache/gates/reactbox-alice-shop"),
        runtime="runsc",
    )
    assert spec == dict(
        image="img:1",
        # It waits at the gate until the server says its dependencies are in place.
        command=[
            "/bin/sh",
            "-c",
            HELD,
            "held",
            "node",
            "/opt/reactbox/support/vite-serve.mjs",
            "--host",
            "0.0.0.0",
            "--port",
            "8000",
            "--base",
            "/user/alice/reactbox/preview/shop/T/",
        ],
        name="reactbox-alice-shop",
        user="1000:1000",
        working_dir="/project",
        environment={"HOME": "/tmp", "NODE_ENV": "development", "BROWSER": "none"},
        labels={
            "org.jupyter.reactbox.owner": "alice",
            "org.jupyter.reactbox.project": "shop",
            "org.jupyter.reactbox.role": "run",
            "org.jupyter.reactbox.framework": "vite",
            "org.jupyter.reactbox.token": "T",
            "org.jupyter.reactbox.base": "/user/alice/reactbox/preview/shop/T/",
            "org.jupyter.reactbox.port": "8000",
        },
        network="reactbox-alice-shop",
        volumes={
            "/data/shop/app": {"bind": "/project", "mode": "rw"},
            # jupyter-reactbox's own launcher and Vite plugin, read-only
            str(SUPPORT_DIR): {"bind": "/opt/reactbox/support", "mode": "ro"},
            # the gate: only the server writes it
            "/cache/gates/reactbox-alice-shop": {"bind": "/opt/reactbox/gate", "mode": "ro"},
        },
        detach=True,
        runtime="runsc",
        **HARDENING,
    )


def test_spare_container_spec_and_the_script_it_is_given():
    spec = spare_container_kwargs(
        image="img:1",
        owner="alice",
        name="reactbox-alice-0a1b2c3d.spare",
        slot=Path("/cache/slots/0a1b2c3d"),
        user="1000:1000",
        network="reactbox-alice-previews",
        limits=Limits(),
    )
    assert spec == dict(
        image="img:1",
        # Made for no project: it waits on its gate's pipe, then runs what the
        # server wrote there.
        command=["/bin/sh", "-c", SPARE_HELD],
        name="reactbox-alice-0a1b2c3d.spare",
        user="1000:1000",
        working_dir="/project",
        environment={"HOME": "/tmp"},
        labels={
            "org.jupyter.reactbox.owner": "alice",
            "org.jupyter.reactbox.project": "",
            "org.jupyter.reactbox.role": "spare",
        },
        network="reactbox-alice-previews",
        volumes={
            "/cache/slots/0a1b2c3d/app": {"bind": "/project", "mode": "rw"},
            str(SUPPORT_DIR): {"bind": "/opt/reactbox/support", "mode": "ro"},
            "/cache/slots/0a1b2c3d/gate": {"bind": "/opt/reactbox/gate", "mode": "ro"},
        },
        detach=True,
        **HARDENING,
    )
    assert run_script(VITE, "/user/alice/reactbox/preview/shop/T'x/") == (
        "cd /project\n"
        "export HOME=/tmp\n"
        "export NODE_ENV=development\n"
        "export BROWSER=none\n"
        "exec node /opt/reactbox/support/vite-serve.mjs --host 0.0.0.0 --port 8000 "
        "--base '/user/alice/reactbox/preview/shop/T'\"'\"'x/'\n"
    )


def test_install_container_spec_with_ca_and_registry():
    spec = install_container_kwargs(
        image="img:1",
        owner="alice",
        project_id="shop",
        app_dir=Path("/data/shop/.install-x1"),
        cache_dir=Path("/data/.cache"),
        user="1000:1000",
        argv=["npm", "ci", "--ignore-scripts"],
        network="reactbox-alice-install",
        limits=Limits(),
        ca_file="/etc/ssl/certs/ca-certificates.crt",
        registry="https://npm.example.org/",
        settings={"npm_config_legacy_peer_deps": "true"},
        proxy="http://172.30.0.1:40123",
    )
    assert spec == dict(
        image="img:1",
        command=["npm", "ci", "--ignore-scripts"],
        name="reactbox-alice-shop-install",
        user="1000:1000",
        working_dir="/project",
        environment={
            "npm_config_legacy_peer_deps": "true",
            "HOME": "/tmp",
            "TMPDIR": "/project/.tmp",
            "CI": "true",
            "npm_config_cache": "/cache/npm",
            "npm_config_update_notifier": "false",
            "YARN_CACHE_FOLDER": "/cache/yarn",
            "npm_config_store_dir": "/cache/pnpm",
            "YARN_NODE_LINKER": "node-modules",
            "npm_config_replace_registry_host": "always",
            "NODE_EXTRA_CA_CERTS": "/etc/reactbox/ca.pem",
            "npm_config_https_proxy": "http://172.30.0.1:40123",
            "npm_config_proxy": "http://172.30.0.1:40123",
            "HTTPS_PROXY": "http://172.30.0.1:40123",
            "HTTP_PROXY": "http://172.30.0.1:40123",
            "npm_config_registry": "https://npm.example.org/",
        },
        labels={
            "org.jupyter.reactbox.owner": "alice",
            "org.jupyter.reactbox.project": "shop",
            "org.jupyter.reactbox.role": "install",
        },
        network="reactbox-alice-install",
        volumes={
            "/data/shop/.install-x1": {"bind": "/project", "mode": "rw"},
            "/data/.cache": {"bind": "/cache", "mode": "rw"},
            "/etc/ssl/certs/ca-certificates.crt": {"bind": "/etc/reactbox/ca.pem", "mode": "ro"},
        },
        detach=True,
        **HARDENING,
    )


def test_installs_share_a_package_cache_only_when_no_script_runs():
    root = Path("/data/.cache")
    assert package_cache(root, "shop", ignore_scripts=True) == root / "managers"
    assert package_cache(root, "shop", ignore_scripts=False) == root / "projects" / "shop"
    assert package_cache(root, "blog", ignore_scripts=False) != package_cache(root, "shop", False)
