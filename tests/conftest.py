"""Fixtures: a real Jupyter server (pytest-jupyter, base URL ``/a%40b/``), a real
Docker engine with the sandbox image, and Debian's chromium driven by Playwright.

Every test that makes containers gets its own ``owner``; its containers and
networks are removed by that label afterwards, and their logs and ``inspect``
output are printed when the test failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import docker
import docker.errors
import pytest
import tomllib
from fakes import FakeBackend
from jupyter_server.serverapp import ServerApp
from llm import ScriptedLLM, ThreadedLLM

from jupyter_reactbox.admission import Admission
from jupyter_reactbox.backends import hostguard
from jupyter_reactbox.backends.docker import LABEL
from jupyter_reactbox.cli import DEFAULT_TAG
from jupyter_reactbox.runtime import Runtime

pytest_plugins = ["pytest_jupyter.jupyter_server"]

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
ARTIFACTS.mkdir(exist_ok=True)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def zip_dir(
    path: Path,
    *,
    wrap: str | None = None,
    extra: dict[str, bytes] | None = None,
    omit: tuple[str, ...] = (),
) -> bytes:
    """ZIP a fixture folder (optionally inside one wrapping folder, as GitHub does);
    ``extra`` files are added, or replace the fixture's of the same name; ``omit``
    names files (or folders) of the fixture left out."""
    buf = io.BytesIO()
    extra = extra or {}
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(path.rglob("*")):
            rel = file.relative_to(path).as_posix()
            left_out = any(rel == o or rel.startswith(f"{o}/") for o in omit)
            skip = "node_modules" in rel.split("/") or rel in extra or left_out
            if skip or not file.is_file():
                continue
            zf.write(file, f"{wrap}/{rel}" if wrap else rel)
        for name, data in extra.items():
            zf.writestr(f"{wrap}/{name}" if wrap else name, data)
    return buf.getvalue()


def app_of(projects_dir: Path, project_id: str) -> Path:
    """A project's work tree: ``<project>/app``, or ``<project>/box/app`` where it is a
    filesystem of its own (``boxes``)."""
    from jupyter_reactbox import boxes

    return boxes.work_tree(projects_dir / project_id)


def written(projects_dir: Path) -> list[str]:
    """What is in a projects folder besides the folder's own files (its id, its lock
    and who holds it): uploads, and any staging debris."""
    from jupyter_reactbox.store import STORE_ID, StoreLock

    own = {STORE_ID, StoreLock.LOCK, StoreLock.MANAGER}
    return sorted(p.name for p in projects_dir.iterdir() if p.name not in own)


def store_of(projects_dir: Path) -> str:
    """The id a server gave ``projects_dir`` when it first opened it."""
    from jupyter_reactbox.store import STORE_ID

    return (projects_dir / STORE_ID).read_text().strip()


def engine_name(owner: str, projects_dir: Path, suffix: str = "") -> str:
    """What the engine names a container or network of ``owner``'s projects in
    ``projects_dir``: ``engine_name(owner, projects_dir, "shop")`` is the run
    container of shop."""
    from jupyter_reactbox.backends.docker import named

    prefix = named(owner, store_of(projects_dir))
    return f"{prefix}-{suffix}" if suffix else prefix


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remove_owned(client: docker.DockerClient, owner: str, *, report: bool = False) -> None:
    """Remove the containers and networks labelled with ``owner`` (printing the
    containers' logs and state first when ``report``).  The server may be removing
    some itself meanwhile (a restart, its shutdown): those are let go."""
    selector = {"label": f"{LABEL}.owner={owner}"}

    def listed() -> list[str]:  # ids only: no inspect that can race a removal
        return [c["Id"] for c in client.api.containers(all=True, filters=selector)]

    for cid in listed():
        try:
            c = client.containers.get(cid)
            if report:
                print(
                    f"--- container {c.name} ({c.status})\n"
                    f"{c.logs(tail=60).decode(errors='replace')}"
                )
                print(json.dumps(c.attrs.get("State"), indent=1))
            c.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "in progress" not in str(exc):
                raise
    for _ in range(100):
        if not listed():
            break
        time.sleep(0.1)
    for n in client.networks.list(filters=selector):
        n.reload()
        for config in n.attrs["IPAM"]["Config"] or ():
            hostguard.unguard(config["Subnet"], n.name)  # the firewall rule a root server added
        n.remove()


def server_argv(
    port: int, token: str, root: Path, owner: str, *extra: str, app: str = "server"
) -> list[str]:
    """A Jupyter server (``app="lab"``: JupyterLab) with the extension, in a process."""
    return [
        sys.executable,
        "-m",
        "jupyter",
        app,
        "--allow-root",
        "--no-browser",
        f"--port={port}",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.jpserver_extensions={'jupyter_reactbox': True}",
        f"--ReactBoxApp.projects_dir={root / 'projects'}",
        f"--ReactBoxApp.owner={owner}",
        # Previews under Jupyter's path (a local server's default is an origin of
        # their own: test_origin_mode), unless a test says otherwise.
        *(
            ()
            if any("preview_origin" in a for a in extra)
            else ("--ReactBoxApp.preview_origin=path",)
        ),
        *extra,
    ]


class JupyterProcess:
    """A Jupyter server with the extension in a process of its own (for restarts,
    shutdown policies and the benchmarks), driven over real HTTP with its token."""

    def __init__(
        self,
        root: Path,
        owner: str,
        *extra: str,
        port: int | None = None,
        app: str = "server",
        env: dict[str, str] | None = None,
    ):
        self.root, self.owner, self.extra, self.app = root, owner, extra, app
        self.env = {**os.environ, **(env or {})}
        self.port = port or free_port()
        self.token = uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> JupyterProcess:
        self.log = open(self.root / f"server-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            server_argv(self.port, self.token, self.root, self.owner, *self.extra, app=self.app),
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.call("GET", "reactbox/api/projects")
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError(f"the server did not start; see {self.log.name}")

    def engine_name(self, suffix: str = "") -> str:
        """What the engine names this server's container or network ``suffix``."""
        return engine_name(self.owner, self.root / "projects", suffix)

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def call(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None):
        """(status, body) of one request to the server's API."""
        request = urllib.request.Request(f"{self.url}/{path}", data=body, method=method)
        request.add_header("Authorization", f"token {self.token}")
        if ctype:
            request.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def project(self, project_id: str) -> dict:
        return json.loads(self.call("GET", f"reactbox/api/projects/{project_id}")[1])

    def upload(self, data: bytes, name: str) -> dict:
        status, body = self.call(
            "POST", f"reactbox/api/projects?name={name}", data, "application/zip"
        )
        assert status == 201, body
        return json.loads(body)

    def wait(self, project_id: str, status: str = "running", timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        while (info := self.project(project_id))["status"] != status:
            if info["status"] == "failed" or time.monotonic() > deadline:
                raise AssertionError(f"{project_id} did not reach {status}: {info}")
            time.sleep(0.1)
        return info

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout)
        if self.proc is not None:
            self.log.close()


IPV6_DEFAULT = Path("/proc/sys/net/ipv6/conf/default/disable_ipv6")


@contextlib.contextmanager
def quiet_interfaces():
    """No IPv6 link-local addresses on the bridges and veths Docker makes meanwhile.
    Chromium aborts every request in flight (ERR_NETWORK_CHANGED) when a host
    address appears, and a bridge gets one a moment after its first container
    starts: exactly when a test loads that container's page.  Only a browser on
    the engine's own host sees this; the setting is put back after."""
    try:
        before = IPV6_DEFAULT.read_text().strip()
        IPV6_DEFAULT.write_text("1")
    except OSError:  # not root, or no IPv6: nothing to quiet
        yield
        return
    try:
        yield
    finally:
        IPV6_DEFAULT.write_text(before)


@pytest.fixture(scope="session", autouse=True)
def _quiet_interfaces():
    with quiet_interfaces():
        yield


def start_lab(
    root: Path,
    owner: str,
    package_cache: Path,
    image: str,
    env: dict[str, str] | None = None,
    app: str = "lab",
) -> JupyterProcess:
    """JupyterLab (or ``app="notebook"``: Notebook 7) with the extension in its own
    process, under the base URL /a%40b/."""
    lab = JupyterProcess(
        root,
        owner,
        f"--ReactBoxApp.cache_dir={package_cache}",
        f"--DockerBackend.image={image}",
        "--ServerApp.base_url=/a%40b/",
        app=app,
        env=env,
    )
    lab.url += "/a%40b"
    return lab.start(timeout=120)


async def next_second() -> int:
    """The engine's event filter counts whole seconds: start a fresh one."""
    await asyncio.sleep(1.05 - time.time() % 1)
    return int(time.time())


def container_events(docker_client, owner: str, since: int, *actions: str) -> list[dict]:
    """The engine's ``actions`` events (create, start, ...) on ``owner``'s containers
    since ``since`` (whole seconds: see next_second), up to now."""
    return list(
        docker_client.events(
            since=since,
            until=int(time.time()) + 1,
            decode=True,
            filters={
                "type": "container",
                "event": list(actions),
                "label": f"org.jupyter.reactbox.owner={owner}",
            },
        )
    )


def containers_made(docker_client, owner: str, since: int) -> list[str]:
    """The roles (install, run) of the containers made for ``owner`` since ``since``."""
    events = container_events(docker_client, owner, since, "create")
    return [e["Actor"]["Attributes"]["org.jupyter.reactbox.role"] for e in events]


@pytest.fixture(scope="session", autouse=True)
def _no_box_left_mounted(tmp_path_factory):
    """Servers that shut down with on_shutdown=keep leave their projects' filesystems
    mounted for the next server (their dev servers may still run); the tests remove
    those servers and their containers, and here the mounts under the tests' folders."""
    yield
    # This session's folder only: another session (a second pytest at once) may
    # still use its own.
    root = str(tmp_path_factory.getbasetemp())
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target.startswith(root) and target.endswith("/box"):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)


@pytest.fixture(scope="session")
def docker_client():
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"These tests need a running Docker engine (start dockerd): {exc}")
    return client


@pytest.fixture(scope="session")
def sandbox_image(docker_client):
    try:
        docker_client.images.get(DEFAULT_TAG)
    except docker.errors.ImageNotFound:
        pytest.fail("Build the sandbox image first: jupyter reactbox build-image --offline")
    return DEFAULT_TAG


@pytest.fixture(scope="session")
def package_cache(tmp_path_factory):
    """One package cache for the whole run, as one user's installs share it."""
    return tmp_path_factory.mktemp("package-cache")


@pytest.fixture
def owner(request, jp_asyncio_loop):
    """Who the test's server says it is; a test of the engine (marked ``docker``) has
    its containers and networks removed by that name afterwards."""
    engine = request.getfixturevalue("docker_client") if _needs_docker(request.node) else None
    name = f"test{uuid.uuid4().hex[:8]}"
    yield name
    failed = bool(getattr(request.node, "rep_call", None) and request.node.rep_call.failed)
    stop_reactbox(jp_asyncio_loop)
    if engine is not None:
        remove_owned(engine, name, report=failed)


def _needs_docker(item) -> bool:
    return item.get_closest_marker("docker") is not None


def stop_reactbox(loop) -> None:
    """Stop the extension of the in-process server, if one is up.  pytest-jupyter
    shuts that server down only after every other fixture, and a live server may
    be making a container (the next spare) while its owner's containers are
    removed; stopped, it has removed what it was making."""
    if not ServerApp.initialized():
        return
    manager = getattr(ServerApp.instance(), "extension_manager", None)
    for app in manager.extension_apps.get("jupyter_reactbox", ()) if manager else ():
        loop.run_until_complete(app.stop_extension())


HEAVY = {
    "docker": ("docker_client", "sandbox_image"),
    "hub": ("hub_python",),
}
"""The tiers a test is in because of the fixtures it uses, marked or not: the first
tier (``-m "not docker and not browser and not hub and not kubernetes"``) needs no
root, no engine and no browser."""


def pytest_collection_modifyitems(items):
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in HEAVY.items():
            if used.intersection(fixtures) and not item.get_closest_marker(marker):
                item.add_marker(marker)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def projects_dir(tmp_path):
    return tmp_path / "projects"


@pytest.fixture
def llm(jp_asyncio_loop):
    """The scripted OpenAI-compatible server, on a free loopback port."""
    server = ScriptedLLM()

    async def start():
        server.start()

    jp_asyncio_loop.run_until_complete(start())
    yield server
    server.stop()


@pytest.fixture
def ai_config(llm):
    """c.AIEditor settings of the server under test: the scripted model; a test may
    override this fixture (``{}``: no model)."""
    return {
        "base_url": llm.base_url,
        "api_key": "test-key",
        "model": "scripted",
        "timeout": 3.0,
        "max_retries": 1,
    }


@pytest.fixture
def editor_config():
    """More c.AIEditor settings for the server under test; a test may override it."""
    return {}


@pytest.fixture
def reactbox_config():
    """More settings for the server under test, by their names (c.ReactBoxApp's,
    c.Runtime's or c.Admission's); a module may override it."""
    return {}


@pytest.fixture
def backend_config():
    """c.Backend settings (every backend's) for the server under test; a test may
    override it."""
    return {}


@pytest.fixture
def docker_config():
    """More c.DockerBackend settings for the server under test; a module may override it."""
    return {}


@pytest.fixture
def local_config():
    """c.LocalBackend settings for the server under test; a module may override it."""
    return {}


@pytest.fixture
def jp_server_config(
    request,
    projects_dir,
    owner,
    package_cache,
    ai_config,
    editor_config,
    reactbox_config,
    backend_config,
    docker_config,
    local_config,
):
    # A test of the engine runs its previews in Docker; any other, unless it names a
    # backend, on the fake one (tests/fakes.py): the tier that needs no engine.
    backend = reactbox_config.get(
        "backend", "docker" if _needs_docker(request.node) else FakeBackend
    )
    docker = {}
    if backend == "docker":
        docker = {"image": request.getfixturevalue("sandbox_image"), **docker_config}
    # A test names each setting as an admin writes it; those of the previews'
    # lifecycle are the Runtime's (c.Runtime.idle_timeout), those of the lines of
    # work the Admission's (c.Admission.max_starts).
    lifecycle = Runtime.class_own_traits(config=True)
    lines = Admission.class_own_traits(config=True)
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_reactbox": True}},
        "ReactBoxApp": {
            "projects_dir": str(projects_dir),
            "cache_dir": str(package_cache),
            "owner": owner,
            "backend": backend,
            # Under Jupyter's path, in its sandbox (a local server's default is an
            # origin of their own, tested in test_origin_mode).
            "preview_origin": "path",
            **{
                k: v
                for k, v in reactbox_config.items()
                if k != "backend" and k not in lifecycle and k not in lines
            },
        },
        "Admission": {k: v for k, v in reactbox_config.items() if k in lines},
        "Runtime": {
            # Frozen containers refuse `docker exec`, which many tests use on long
            # lived previews; freezing has tests of its own.
            "freeze_timeout": 0,
            **{k: v for k, v in reactbox_config.items() if k in lifecycle},
        },
        "AIEditor": {**ai_config, **editor_config},
        "Backend": backend_config,
        "DockerBackend": docker,
        "LocalBackend": local_config,
    }


@pytest.fixture
def jp_serverapp(jp_serverapp, jp_asyncio_loop):
    """pytest-jupyter's server, also *started* as `jupyter server` starts one: the
    extensions' start hooks run (ours re-attaches previews and starts its watcher)."""
    jp_asyncio_loop.run_until_complete(jp_serverapp.extension_manager.start_all_extensions())
    return jp_serverapp


@pytest.fixture
def runtime(jp_serverapp):
    return jp_serverapp.web_app.settings["reactbox_spaces"].space.runtime


@pytest.fixture
def api(jp_fetch):
    """Small helpers over the REST API, through real HTTP with the server's token."""

    class Api:
        async def upload(self, data: bytes, name: str, **kw):
            return await jp_fetch(
                "reactbox",
                "api",
                "projects",
                method="POST",
                params={"name": name},
                body=data,
                headers={"Content-Type": "application/zip"},
                **kw,
            )

        async def get(self, project_id: str) -> dict:
            r = await jp_fetch("reactbox", "api", "projects", project_id)
            return json.loads(r.body)

        async def wait(
            self, project_id: str, status: str = "running", timeout: float = 240, *, through=()
        ):
            """Until the project has ``status``; fails early on "failed" (unless that
            is a state it may go ``through``)."""
            deadline = time.monotonic() + timeout
            info: dict = {}
            while time.monotonic() < deadline:
                info = await self.get(project_id)
                if info["status"] == status:
                    return info
                if info["status"] == "failed" and "failed" not in (status, *through):
                    pytest.fail(f"{project_id} failed: {info['error']}")
                await asyncio.sleep(0.25)
            pytest.fail(f"{project_id} did not reach {status} in {timeout} s: {info}")

        async def upload_running(self, fixture: str = "vite-react", name: str = "shop") -> dict:
            r = await self.upload(zip_dir(FIXTURES / fixture), name)
            assert r.code == 201
            return await self.wait(json.loads(r.body)["id"])

    return Api()


@pytest.fixture
def server_url(jp_serverapp, jp_http_port):
    """http://127.0.0.1:PORT (no path): preview URLs from the API are absolute paths."""
    return f"http://127.0.0.1:{jp_http_port}"


def _require_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        pytest.fail("Browser tests need Debian's chromium: apt-get install -y chromium")


@contextlib.asynccontextmanager
async def chromium():
    """Debian's chromium through Playwright (never a downloaded browser)."""
    from playwright.async_api import async_playwright

    _require_chromium()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def preview_page(url: str):
    """Chromium on ``url``: (the page, the uncaught errors it has thrown so far)."""
    async with chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(url)
        yield page, errors


async def embed_preview(page, url: str):
    """Put the preview in an iframe on the current page, as JupyterLab does; its frame."""
    await page.evaluate(
        """src => { const f = document.createElement('iframe');
                    f.src = src; f.style.width = '1000px'; f.style.height = '700px';
                    document.body.replaceChildren(f); }""",
        url,
    )
    for _ in range(200):
        frame = next((f for f in page.frames if f.url.startswith(url)), None)
        if frame:
            return frame
        await asyncio.sleep(0.05)
    raise AssertionError(f"no frame loaded {url}")


ATTACK = """async (jupyter) => {
                const out = {};
                const tryFetch = async (url, init) => {
                    try { const r = await fetch(url, init); return `${r.status} ${await r.text()}`; }
                    catch (e) { return `blocked: ${e.name}`; }
                };
                out.cookie = document.cookie;
                out.parentCookie = (() => { try { return parent.document.cookie; } catch (e) { return `blocked: ${e.name}`; } })();
                out.kernels = await tryFetch(jupyter + 'api/kernels');
                out.kernelsWithCredentials = await tryFetch(jupyter + 'api/kernels', {credentials: 'include'});
                out.startKernel = await tryFetch(jupyter + 'api/kernels', {method: 'POST', credentials: 'include', body: '{}'});
                out.contents = await tryFetch(jupyter + 'api/contents', {credentials: 'include'});
                out.mcp = await tryFetch(jupyter + 'reactbox/mcp', {
                    method: 'POST', credentials: 'include',
                    headers: {'Content-Type': 'application/json',
                              'Accept': 'application/json, text/event-stream'},
                    body: JSON.stringify({jsonrpc: '2.0', id: 1, method: 'tools/call',
                        params: {name: 'list_projects', arguments: {}}})});
                out.websocket = await new Promise(resolve => {
                    const ws = new WebSocket(jupyter.replace('http', 'ws') + 'api/kernels/x/channels');
                    ws.onopen = () => resolve('open');
                    ws.onerror = () => resolve('error');
                });
                return out;
            }"""


BLOCKED = ("kernels", "kernelsWithCredentials", "startKernel", "contents", "mcp")
"""What ``attack_jupyter`` tries that must be blocked or refused (403): the REST API
with and without credentials, a new kernel, the files, the MCP tools."""


async def attack_jupyter(frame, jupyter: str) -> dict:
    """From inside a preview's frame, try to act as the user on Jupyter (``jupyter``
    is its base URL): read cookies and the parent page, call the REST API with and
    without credentials, start a kernel, call an MCP tool, open a kernel websocket.
    What each got."""
    return await frame.evaluate(ATTACK, jupyter)


@pytest.fixture(scope="session")
def hub_python():
    """A Python every user can run, with this checkout installed as an admin
    installs it (a virtual environment of Debian's python3, `pip install .`).
    What it depends on is kept between runs, keyed by the dependencies in
    pyproject.toml; the package itself is installed again each run."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needs = [project["dependencies"], project["optional-dependencies"]["kubernetes"]]
    key = hashlib.sha256(repr(needs).encode()).hexdigest()[:12]
    env = Path(f"/opt/jupyter-reactbox-hub-test-{key}")
    python = env / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if not (env / ".complete").exists():
        shutil.rmtree(env, ignore_errors=True)
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(env)], check=True)
        build = ["hatchling>=1.21", "hatch-jupyter-builder>=0.9", "jupyterlab>=4.6,<5"]
        subprocess.run(
            [*pip, *build, "jupyterhub>=5", "ipykernel", f"{ROOT}[kubernetes]"], check=True
        )
        (env / ".complete").touch()
    # The checkout as it is now (its Lab extension is built already, so no Node step).
    subprocess.run(
        [*pip, "--no-deps", "--no-build-isolation", "--force-reinstall", str(ROOT)], check=True
    )
    return python


@pytest.fixture
def hub_llm():
    server = ThreadedLLM()
    server.start()
    yield server
    server.stop()
