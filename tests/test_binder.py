"""Binder, as it runs a repository: repo2docker cannot run here (its base images
come from a container registry), so the test does what it does with this
repository's `binder/` folder, in a container built from the sandbox image's
Debian: a non-root user (jovyan, 1000), the environment files copied first and
installed (`binder/requirements.txt`), then the repository and `binder/postBuild`.
The server then runs as Binder runs it: Docker's default seccomp profile (no
user namespaces, so no bubblewrap), no Docker socket.  An upload must render in
Chromium under the base URL, unsandboxed, with the warning shown where a user
looks, and `jupyter reactbox doctor` must name the backend and the sandbox.

This is also the fresh-environment test of the local backend: nothing but what
`pip install .` brings (Node included), no engine, and the whole loop a user
goes through (HMR, an AI edit, idle stop, resume on a page load).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import FIXTURES, chromium, free_port, zip_dir
from llm import ThreadedLLM
from test_edits import BUTTON, JOIN_NOW, block

pytestmark = [pytest.mark.docker, pytest.mark.browser]

ROOT = Path(__file__).parent.parent
DOCKERFILE = """\
FROM {base}
USER root
# What a repo2docker base image has: Python, git, a CA store (with this
# network's CA), and bubblewrap installed, so that what stops it is the seccomp
# profile, as on Binder.
RUN apt-get update -qq \\
 && apt-get install -y -qq --no-install-recommends python3 python3-venv git bubblewrap \\
      ca-certificates >/dev/null \\
 && rm -rf /var/lib/apt/lists/*
COPY ca.pem /usr/local/share/ca-certificates/network.crt
RUN update-ca-certificates >/dev/null 2>&1 \\
 && python3 -m venv /srv/venv && mkdir -p /home/jovyan \\
 && chown -R 1000:1000 /srv/venv /home/jovyan
ENV PATH=/srv/venv/bin:$PATH HOME=/home/jovyan USER=jovyan \\
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
USER 1000
WORKDIR /home/jovyan
# repo2docker's order: the environment files first, then the repository.
COPY --chown=1000:1000 repo/binder/requirements.txt binder/requirements.txt
RUN pip install -q --no-cache-dir -r binder/requirements.txt
COPY --chown=1000:1000 repo /home/jovyan
RUN bash binder/postBuild
"""


@pytest.fixture(scope="module")
def binder_image(sandbox_image, tmp_path_factory):
    context = tmp_path_factory.mktemp("binder")
    files = subprocess.run(
        ["git", "ls-files", "-c", "-o", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in files:
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            target = context / "repo" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    ca = next(p for p in ("/etc/ssl/certs/ca-certificates.crt",) if os.path.isfile(p))
    shutil.copy(ca, context / "ca.pem")
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=sandbox_image))
    tag = "jupyter-reactbox-binder-test:latest"
    before = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", tag], capture_output=True, text=True
    ).stdout.strip()
    build = subprocess.run(
        ["docker", "build", "-q", "-t", tag, str(context)],
        env={**os.environ, "DOCKER_BUILDKIT": "0"},  # the engine's own builder
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    if before and before != build.stdout.strip():
        # The last run's image (1.5 GB), kept until now for the build's layer cache.
        subprocess.run(["docker", "rmi", before], capture_output=True)
    return tag


def api(url: str, token: str, method: str = "GET", body: bytes | None = None, **headers):
    """The JSON a call of the REST API answers."""
    return json.loads(raw(url, token, method, body, **headers))


def raw(url: str, token: str, method: str = "GET", body: bytes | None = None, **headers):
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    request.add_header("Authorization", f"token {token}")
    with urllib.request.urlopen(request, timeout=60) as r:
        return r.read()


IDLE_TIMEOUT = 8
SIOCGIFADDR = 0x8915


@pytest.fixture
def bridge_llm():
    """The scripted model, where the container reaches it: this host's address on
    Docker's bridge."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("256s", b"docker0")
        address = socket.inet_ntoa(fcntl.ioctl(s.fileno(), SIOCGIFADDR, request)[20:24])
    server = ThreadedLLM(address=address)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def binder_server(binder_image, bridge_llm):
    """The server as Binder starts it (its user, Docker's default seccomp, no Docker
    socket), with a Vite app uploaded and running: (its URL, its token, the
    container's name, the project JSON)."""
    port, token, name = free_port(), uuid.uuid4().hex, f"binder-{uuid.uuid4().hex[:8]}"
    command = ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser"]
    command += [f"--ServerApp.token={token}", "--ServerApp.base_url=/a%40b/"]
    command += [f"--Runtime.idle_timeout={IDLE_TIMEOUT}"]
    command += [f"--AIEditor.base_url={bridge_llm.base_url}"]
    command += ["--AIEditor.api_key=test-key", "--AIEditor.model=scripted"]
    publish = f"127.0.0.1:{port}:8888"
    subprocess.run(
        ["docker", "run", "-d", "--rm", "--name", name, "-p", publish, binder_image, *command],
        check=True,
        capture_output=True,
    )
    base = f"http://127.0.0.1:{port}/a%40b/"
    try:
        inspect = json.loads(subprocess.check_output(["docker", "inspect", name]))[0]
        assert inspect["Config"]["User"] == "1000"
        assert inspect["HostConfig"]["SecurityOpt"] in (None, [])  # Docker's default seccomp
        assert not any("docker.sock" in m["Source"] for m in inspect["Mounts"])
        deadline = time.monotonic() + 120
        while True:
            try:
                api(f"{base}reactbox/api/projects", token)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, subprocess.getoutput(f"docker logs {name}")
                time.sleep(0.5)
        data = zip_dir(FIXTURES / "vite-react")
        info = api(
            f"{base}reactbox/api/projects?name=shop", token, "POST", data,
            **{"Content-Type": "application/zip"},
        )  # fmt: skip
        deadline = time.monotonic() + 600
        while info["status"] not in ("running", "failed"):
            assert time.monotonic() < deadline, info
            time.sleep(0.5)
            info = api(f"{base}reactbox/api/projects/shop", token)
        yield base, token, name, info
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


@pytest.mark.timeout(1500)
async def test_binder_runs_a_preview_unsandboxed_and_says_so(binder_server, bridge_llm):
    base, token, name, info = binder_server
    assert info["status"] == "running", info
    assert (info["backend"], info["sandboxed"]) == ("local", False)
    assert info["isolation"].startswith("NOT SANDBOXED: bubblewrap cannot make a sandbox")
    logs = await asyncio.to_thread(raw, f"{base}reactbox/api/projects/shop/logs", token)
    assert "\n[jupyter-reactbox] NOT SANDBOXED" in logs.decode()
    doctor = await asyncio.create_subprocess_exec(
        *("docker", "exec", name, "jupyter", "reactbox", "doctor"),
        stdout=asyncio.subprocess.PIPE,
    )
    said = (await doctor.communicate())[0].decode()
    assert "backend: local (no Docker engine answers" in said, said
    assert "WARN sandbox: NOT SANDBOXED" in said and doctor.returncode == 0, said

    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(base.removesuffix("/a%40b/") + info["preview_url"])
        await page.wait_for_selector("text=Get started", timeout=120_000)
        assert await page.evaluate("self.origin") == "null"  # the page's sandbox holds
        await page.click("button.counter")
        await page.wait_for_selector("text=Count is 1")

        # HMR: a file written through the API reloads the module, state kept.
        app_jsx = f"{base}reactbox/api/projects/shop/files/src/App.jsx"
        text = (await asyncio.to_thread(raw, app_jsx, token)).decode()
        new = text.replace("Get started", "Hot reloaded").encode()
        await asyncio.to_thread(raw, app_jsx, token, "PUT", new)
        await page.wait_for_selector("text=Hot reloaded", timeout=15_000)
        assert await page.inner_text("button.counter") == "Count is 1"

        # An AI edit, through the real openai client to the scripted model.
        bridge_llm.answer(block("src/App.jsx", BUTTON, JOIN_NOW))
        edit = json.dumps({"instruction": "Make the button say Join Now"}).encode()
        edits = f"{base}reactbox/api/projects/shop/edits"
        result = await asyncio.to_thread(api, edits, token, "POST", edit)
        assert result["status"] == "applied", result
        await page.wait_for_selector("text=Join Now", timeout=15_000)
        await page.close()

    # Unused, it stops; the link stays valid, and a page load starts it again.
    project = f"{base}reactbox/api/projects/shop"
    deadline = time.monotonic() + IDLE_TIMEOUT + 30
    while (info := await asyncio.to_thread(api, project, token))["status"] != "stopped":
        assert time.monotonic() < deadline, info
        await asyncio.sleep(0.5)
    assert "without use" in info["detail"]
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(base.removesuffix("/a%40b/") + info["preview_url"])
        await page.wait_for_selector("text=Join Now", timeout=60_000)
    assert (await asyncio.to_thread(api, project, token))["status"] == "running"
