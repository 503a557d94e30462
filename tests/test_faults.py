"""Faults: the disk fills, the Jupyter server dies mid-edit, the engine dies mid-start.

Each must end in a clear error, recovery once the fault is gone, and no project
lost or corrupted. These tests mount a tmpfs and kill and start ``dockerd``, so
they need root on a machine whose engine the tests may restart (as in CI).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import FIXTURES, JupyterProcess, app_of, engine_name, written, zip_dir
from llm import ThreadedLLM
from test_attacks import get
from test_edits import BUTTON, JOIN_NOW, block
from tornado.httpclient import HTTPClientError

from jupyter_reactbox import history

pytestmark = pytest.mark.docker

FULL = "No space is left on the disk"


def snapshot(app: Path) -> dict[str, bytes]:
    """The project's files (its history is checked by ``assert_consistent``)."""
    files = {}
    for folder, dirs, names in os.walk(app):
        dirs[:] = [d for d in dirs if d not in (".git", "node_modules")]
        for name in names:
            path = Path(folder, name)
            files[path.relative_to(app).as_posix()] = path.read_bytes()
    return files


def assert_consistent(app: Path, head: str) -> None:
    """At ``head``, nothing uncommitted, no change pending, the repository sound."""
    assert history.head(app) == head
    assert history.diff(app, "HEAD") == ""
    assert history.pending(app) is None
    history.git(app, "fsck", "--strict", "--no-progress")


# -- a full disk --------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=False)


@pytest.fixture
def projects_dir(request):
    if "small_folder" in request.fixturenames:
        return request.getfixturevalue("small_folder")
    return request.getfixturevalue("small_disk") / "projects"


def projects(folder: Path) -> list[str]:
    """What is in the projects folder but the day's AI token count: projects, and
    any staging an operation left behind."""
    return [name for name in written(folder) if name != ".ai-tokens.json"]


def fill(disk: Path, leave: int = 0) -> Path:
    """Write one file until the disk is full, then give back ``leave`` bytes."""
    filler = disk / "filler"
    with open(filler, "ab", buffering=0) as f:
        for chunk in (1 << 20, 4096):
            try:
                while f.write(b"\0" * chunk) == chunk:
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    if leave:
        os.truncate(filler, filler.stat().st_size - leave)
    return filler


async def settled_disk(disk: Path, quiet: float = 2.0, timeout: float = 60) -> None:
    """Until what the disk holds has not changed for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    used, since = shutil.disk_usage(disk).used, time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = shutil.disk_usage(disk).used
        if now != used:
            used, since = now, time.monotonic()


@pytest.mark.parametrize("reactbox_config", [{"disk_limits": "check"}])
async def test_a_full_disk_is_507_and_changes_nothing_then_recovers(
    api, jp_fetch, llm, projects_dir, small_disk, server_url
):
    info = await api.upload_running()
    app = app_of(projects_dir, "shop")
    head, before = history.head(app), snapshot(app)
    # Vite may still write its pre-bundled dependencies (and remove their temporary
    # folder, freeing what a filler took): the disk is filled once that is over.
    await settled_disk(small_disk)

    room = 0  # bytes left free; the running dev server may free some meanwhile

    async def refused(*path, method="POST", body=b""):
        fill(small_disk, room)
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("reactbox", "api", *path, method=method, body=body)
        assert err.value.code == 507, err.value
        message = json.loads(err.value.response.body)["message"]
        assert FULL in message and "Nothing was changed" in message
        assert snapshot(app) == before
        assert_consistent(app, head)
        assert projects(projects_dir) == ["shop"]

    filler = fill(small_disk)
    with pytest.raises(HTTPClientError) as err:
        await api.upload(zip_dir(FIXTURES / "vite-react"), "second")
    assert err.value.code == 507 and FULL in json.loads(err.value.response.body)["message"]
    assert projects(projects_dir) == ["shop"]  # no staging left
    await refused("projects", "shop", "files", "src", "App.jsx", method="PUT", body=b"// mine\n")
    await refused("projects", "shop", "data", "sales", method="PUT", body=b"[1, 2, 3]")
    await refused("projects", "shop", "edits", body=json.dumps({"instruction": "Join Now"}))
    assert llm.requests == []  # refused before the model was asked
    # A restart cannot start the dev server either, and says why.
    fill(small_disk)
    await jp_fetch("reactbox", "api", "projects", "shop", "restart", method="POST", body=b"")
    failed = await api.wait("shop", "failed")
    assert FULL in failed["error"], failed
    assert snapshot(app) == before

    # Room for the marker and a small file, not for the large one: the edit's
    # first file may be written, the second cannot; neither may stay.
    room = 64 << 10
    big = json.dumps(list(range(60_000)))
    llm.answer(
        block("src/App.jsx", BUTTON, JOIN_NOW)
        + f"\nsrc/numbers.json\n```json\n<<<<<<< SEARCH\n=======\n{big}\n>>>>>>> REPLACE\n```\n"
    )
    await refused("projects", "shop", "edits", body=json.dumps({"instruction": "Join Now"}))
    assert len(llm.requests) == 1
    await refused("projects", "shop", "files", "src", "numbers.json", method="PUT", body=big)

    # With space again, everything works.
    os.unlink(filler)
    await jp_fetch("reactbox", "api", "projects", "shop", "start", method="POST", body=b"")
    info = await api.wait("shop")
    code, page = await get(server_url + info["preview_url"])
    assert code == 200 and b'<div id="root">' in page
    r = await jp_fetch(
        "reactbox",
        "api",
        "projects",
        "shop",
        "files",
        "src",
        "numbers.json",
        method="PUT",
        body=big,
    )
    assert r.code == 200
    llm.answer(block("src/App.jsx", BUTTON, JOIN_NOW))
    r = await jp_fetch(
        "reactbox", "api", "projects", "shop", "edits", method="POST",
        body=json.dumps({"instruction": "Join Now"}),
    )  # fmt: skip
    assert json.loads(r.body)["status"] == "applied"
    assert "Join Now" in (app / "src" / "App.jsx").read_text()
    assert_consistent(app, history.head(app))


# -- the Jupyter server killed mid-edit ---------------------------------------


def test_the_server_killed_mid_edit_leaves_the_project_as_it_was(
    tmp_path, owner, package_cache, sandbox_image
):
    llm = ThreadedLLM()
    llm.start()
    args = (
        f"--ReactBoxApp.cache_dir={package_cache}",
        f"--DockerBackend.image={sandbox_image}",
        f"--AIEditor.base_url={llm.base_url}",
        "--AIEditor.api_key=test-key",
        "--AIEditor.model=scripted",
        "--AIEditor.timeout=120",
    )
    server = JupyterProcess(tmp_path, owner, *args, "--Runtime.on_shutdown=keep").start()
    try:
        shop = server.wait(server.upload(zip_dir(FIXTURES / "vite-react"), "shop")["id"])
        app = app_of(tmp_path / "projects", "shop")
        head, before = history.head(app), snapshot(app)

        # The first answer does not compile; the server writes and commits it, then
        # asks for a fix, which never comes: it dies while the change is in place.
        broken = "import './App.css'\nimport Missing from './does-not-exist'"
        llm.answer(block("src/App.jsx", "import './App.css'", broken))
        llm.answer("never sent", delay=300)
        edit = threading.Thread(
            target=lambda: _ignore_errors(
                server.call,
                "POST",
                "reactbox/api/projects/shop/edits",
                json.dumps({"instruction": "Break it"}).encode(),
                "application/json",
            ),
            daemon=True,
        )
        edit.start()
        deadline = time.monotonic() + 60
        while len(llm.requests) < 2:
            assert time.monotonic() < deadline, "the edit never asked for a fix"
            time.sleep(0.05)
        assert "does-not-exist" in (app / "src" / "App.jsx").read_text()
        assert history.head(app) != head
    finally:
        server.stop(signal.SIGKILL)

    server = JupyterProcess(tmp_path, owner, *args, "--Runtime.on_shutdown=keep").start()
    try:
        assert snapshot(app) == before
        assert_consistent(app, head)
        again = server.project("shop")
        assert (again["status"], again["preview_url"]) == ("running", shop["preview_url"])
        last = json.loads(server.call("GET", "reactbox/api/projects/shop/edits")[1])["edits"][-1]
        assert (last["instruction"], last["status"]) == ("Break it", "failed")
        assert "server stopped during this edit" in last["message"]
        with urllib.request.urlopen(server.url + shop["preview_url"] + "src/App.jsx") as r:
            assert b"does-not-exist" not in r.read()
        llm.answer(block("src/App.jsx", BUTTON, JOIN_NOW))
        status, body = server.call(
            "POST",
            "reactbox/api/projects/shop/edits",
            json.dumps({"instruction": "Join Now"}).encode(),
            "application/json",
        )
        assert status == 200 and json.loads(body)["status"] == "applied", body
        head, before = history.head(app), snapshot(app)
    finally:
        server.stop(signal.SIGKILL)

    # What a death in the middle of writing leaves: some files renamed into place,
    # a temporary file not yet renamed, git's lock on main, and the change's marker.
    (app / "src" / "App.jsx").write_text("half of an edit\n")
    (app / "src" / ".main.jsx.reactbox-0123abcd").write_text("the other half\n")
    (history.git_dir(app) / "refs" / "heads" / "main.lock").write_text("")
    history.begin(app, head, "AI edit: the other half")
    server = JupyterProcess(tmp_path, owner, *args).start()
    try:
        assert snapshot(app) == before
        assert_consistent(app, head)
        assert (
            "stopped during a change (AI edit: the other half); the project is as before"
            in server.log_text()
        )
    finally:
        server.stop()
        llm.stop()


def _ignore_errors(fn, *args):
    try:
        fn(*args)
    except OSError:
        pass  # the server was killed under this request


# -- the Docker engine killed mid-start ---------------------------------------


def _engine_answers(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def _running(pid_file: Path) -> bool:
    """The process the pid file names runs (a killed one may linger as a zombie
    until PID 1 reaps it, and dockerd would wait for it)."""
    try:
        stat = Path("/proc", pid_file.read_text().strip(), "stat").read_text()
    except (OSError, ValueError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


DOCKERD_PID = Path("/var/run/docker.pid")
CONTAINERD_PID = Path("/var/run/docker/containerd/containerd.pid")


def start_engine(client, timeout: float = 90) -> None:
    """Start dockerd the way .ci/setup does, unless one answers; wait until it does."""
    if not _engine_answers(client) and not _running(DOCKERD_PID):
        for pid_file in (DOCKERD_PID, CONTAINERD_PID):
            if not _running(pid_file):
                pid_file.unlink(missing_ok=True)
        with open("/var/log/dockerd.log", "ab") as log:
            subprocess.Popen(
                ["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
    deadline = time.monotonic() + timeout
    while not _engine_answers(client):
        assert time.monotonic() < deadline, "dockerd did not come back"
        time.sleep(0.25)


@pytest.fixture
def engine(docker_client):
    """The engine, started again after the test whatever happens in it."""
    yield docker_client
    start_engine(docker_client)


def test_the_engine_killed_mid_start_is_a_clear_error_and_nothing_is_lost(
    tmp_path, owner, engine, package_cache, sandbox_image
):
    args = (f"--ReactBoxApp.cache_dir={package_cache}", f"--DockerBackend.image={sandbox_image}")
    server = JupyterProcess(tmp_path, owner, *args).start()
    try:
        server.upload(zip_dir(FIXTURES / "vite-react"), "shop")
        app = app_of(tmp_path / "projects", "shop")
        head, before = history.head(app), snapshot(app)
        while (status := server.project("shop")["status"]) not in ("installing", "starting"):
            assert status != "running", "started before the engine could be killed"
            time.sleep(0.01)
        subprocess.run(["pkill", "-KILL", "-x", "dockerd"], check=True)

        deadline = time.monotonic() + 120
        while (info := server.project("shop"))["status"] != "failed":
            assert time.monotonic() < deadline, info
            time.sleep(0.25)
        assert "Docker engine" in info["error"], info
        assert info["preview_url"] is None

        # The server answers; a start says what is wrong; a delete keeps the files.
        t0 = time.monotonic()
        status, body = server.call("GET", "reactbox/api/projects")
        assert status == 200 and [p["id"] for p in json.loads(body)["projects"]] == ["shop"]
        assert time.monotonic() - t0 < 5
        assert server.call("POST", "reactbox/api/projects/shop/start", b"")[0] == 202
        while (info := server.project("shop"))["status"] != "failed":
            assert time.monotonic() < deadline, info
            time.sleep(0.25)
        assert "Docker engine" in info["error"], info
        status, body = server.call("DELETE", "reactbox/api/projects/shop")
        assert status == 503 and b"Docker engine" in body, body
        assert snapshot(app) == before
        assert_consistent(app, head)

        # With the engine back, the same project starts and renders.
        start_engine(engine)
        assert server.call("POST", "reactbox/api/projects/shop/start", b"")[0] == 202
        shop = server.wait("shop", timeout=180)
        with urllib.request.urlopen(server.url + shop["preview_url"], timeout=30) as r:
            assert r.status == 200 and b'<div id="root">' in r.read()
        assert snapshot(app) == before
    finally:
        server.stop()


# -- one project's quota, kept by the kernel ------------------------------------------

HOG = """
const fs = require('fs')
fs.mkdirSync('/project/many')
let n = 0
try { for (;;) { fs.writeFileSync('/project/many/f' + n, ''); n++ } }
catch (e) { console.log(JSON.stringify({made: n, code: e.code})) }
"""


@pytest.fixture
def small_folder(tmp_path):
    """A projects folder on a filesystem of 1 GiB and 20,000 inodes, as in the report."""
    mount = tmp_path / "small"
    mount.mkdir()
    options = "size=1g,nr_inodes=20000"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], check=True)
    yield mount / "projects"
    subprocess.run(["umount", "--lazy", str(mount)], check=False)


@pytest.mark.parametrize(
    "reactbox_config",
    [{"disk_quota": "150m", "file_quota": 5000, "idle_timeout": 0, "disk_limits": "image"}],
)
async def test_a_project_that_writes_without_end_is_stopped_by_its_own_quota_alone(
    small_folder, api, jp_fetch, docker_client, owner, projects_dir
):
    """A dev server creates empty files in a loop: the kernel refuses the project's
    5,001st file at once, inside that project; another project's edit and a new
    upload go on, and the hog's own space comes back when its files go."""
    data = zip_dir(FIXTURES / "vite-react")
    for name in ("hog", "calm"):
        await api.upload(data, name)
        await api.wait(name)
    hog = docker_client.containers.get(engine_name(owner, projects_dir, "hog"))
    code, out = hog.exec_run(["node", "-e", HOG])
    made = json.loads(out.decode().strip().splitlines()[-1])
    assert made["code"] == "ENOSPC" and 3000 < made["made"] < 5000, made

    # The others go on: an edit of another project, and a new upload that runs.
    app = app_of(projects_dir, "calm") / "src" / "App.jsx"
    text = app.read_text().replace("Get started", "Still here")
    await jp_fetch("reactbox", "api", "projects", "calm", "files", "src/App.jsx",
                   method="PUT", body=text)  # fmt: skip
    assert app.read_text() == text
    await api.upload(data, "third")
    assert (await api.wait("third"))["status"] == "running"
    usage = os.statvfs(small_folder)
    assert usage.f_ffree > 10_000 and usage.f_bavail * usage.f_frsize > 400 << 20

    # The hog itself is told why it cannot write, and gets its space back.
    hog_app = app_of(projects_dir, "hog") / "src" / "App.jsx"
    with pytest.raises(HTTPClientError) as full:
        await jp_fetch("reactbox", "api", "projects", "hog", "files", "src/App.jsx",
                       method="PUT", body=hog_app.read_text() + "\n")  # fmt: skip
    assert full.value.code == 507
    assert "its own filesystem is full" in json.loads(full.value.response.body)["message"]
    code, out = hog.exec_run(["rm", "-rf", "/project/many"])
    assert code == 0, out
    await jp_fetch("reactbox", "api", "projects", "hog", "files", "src/App.jsx",
                   method="PUT", body=hog_app.read_text() + "\n")  # fmt: skip
