"""Lifecycle of previews on a real engine: idle culling and resume, crashes and
restarts, max_running, the node_modules cache, install progress, disk quota."""

from __future__ import annotations

import asyncio
import json
import re
import time

import aiohttp
import pytest
import yarl
from conftest import (
    FIXTURES,
    app_of,
    chromium,
    container_events,
    containers_made,
    engine_name,
    next_second,
    zip_dir,
)
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

pytestmark = pytest.mark.docker

NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "iframe", "Accept": "text/html"}
MODULE = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "script", "Accept": "*/*"}


@pytest.fixture
def reactbox_config():
    return {"idle_timeout": 3.0}


async def fetch(url: str, method: str = "GET", headers: dict | None = None, body=None):
    return await AsyncHTTPClient().fetch(
        url, method=method, headers=headers, body=body, raise_error=False, request_timeout=30
    )


async def post(jp_fetch, project_id: str, action: str) -> dict:
    r = await jp_fetch("reactbox", "api", "projects", project_id, action, method="POST", body=b"")
    return json.loads(r.body) if r.body else {}


def containers(docker_client, owner: str, project_id: str, **kw):
    """The project's dev-server container (by its name: a taken spare has no
    project label), as a list."""
    selector = {"label": f"org.jupyter.reactbox.owner={owner}",
                "name": f"^/reactbox-{owner}-[a-z0-9]{{6}}-{project_id}$"}  # fmt: skip
    return docker_client.containers.list(filters=selector, **kw)


async def test_idle_preview_stops_and_the_next_page_load_resumes_it(
    api, server_url, jp_serverapp, docker_client, owner
):
    info = await api.upload_running()
    page = server_url + info["preview_url"]
    activity = jp_serverapp.web_app.settings.setdefault("last_activity_times", {})

    # The app's own requests (modules, polling) are not use: it stops anyway.
    deadline = time.monotonic() + 8
    while (await api.get("shop"))["status"] == "running":
        r = await fetch(page + "src/main.jsx", headers=MODULE)
        assert r.code in (200, 503)
        assert time.monotonic() < deadline, "an unused preview was not stopped"
        await asyncio.sleep(0.2)
    stopped = await api.get("shop")
    assert stopped["status"] == "stopped"
    assert "without use" in stopped["detail"]
    assert stopped["preview_url"] == info["preview_url"]  # the link stays valid
    # The proxy stops forwarding at once; the engine stops the container just after.
    for _ in range(100):
        [kept] = containers(docker_client, owner, "shop", all=True)
        if kept.status == "exited":
            break
        await asyncio.sleep(0.1)
    assert kept.status == "exited"
    # ... and they did not count as Jupyter activity either (jupyterhub-idle-culler).
    assert "jupyter-server-proxy" not in activity and "jupyter_reactbox" not in activity

    # Another module request is answered, but does not start it again.
    r = await fetch(page + "src/main.jsx", headers=MODULE)
    assert r.code == 503 and b"reload the page" in r.body
    await asyncio.sleep(1)
    assert (await api.get("shop"))["status"] == "stopped"

    # A page load does: it is held while the preview resumes, then served.
    r = await fetch(page, headers=NAVIGATE)
    assert r.code == 200 and b"__reactbox/heartbeat" in r.body
    assert "frame-ancestors 'self'" in r.headers["Content-Security-Policy"]
    assert "jupyter_reactbox" in activity
    resumed = await api.get("shop")
    assert (resumed["status"], resumed["preview_url"]) == ("running", info["preview_url"])
    assert [c.id for c in containers(docker_client, owner, "shop")] == [kept.id]

    # Input in the page (the injected reporter's heartbeat, with this page load's key)
    # keeps it running; a heartbeat without the key is refused.
    key = re.search(rb'const key = "([^"]+)"', r.body).group(1).decode()
    r = await fetch(page + "__reactbox/heartbeat", method="POST", body=b"")
    assert r.code == 403
    for _ in range(6):
        r = await fetch(page + "__reactbox/heartbeat/" + key, method="POST", body=b"")
        assert r.code == 200 and json.loads(r.body) == {"status": "running"}
        await asyncio.sleep(1)
    assert (await api.get("shop"))["status"] == "running"


@pytest.mark.browser
@pytest.mark.parametrize("reactbox_config", [{"idle_timeout": 8.0}])  # a first load may take 3 s
async def test_a_click_in_a_stopped_preview_brings_it_back(api, server_url):
    info = await api.upload_running()
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(server_url + info["preview_url"])
        await page.wait_for_selector("text=count is 0")
        await api.wait("shop", "stopped", timeout=30)
        # The reporter sees input, learns the preview stopped, and reloads:
        # the starting page reloads itself until the app is back.
        await page.mouse.click(5, 5)
        await page.wait_for_selector("text=count is 0", timeout=60_000)
    # The app answers as soon as its dev server does; "running" follows its checks.
    await api.wait("shop", "running", timeout=60)


@pytest.mark.browser
@pytest.mark.parametrize("reactbox_config", [{"freeze_timeout": 2.0, "idle_timeout": 0}])
async def test_an_unused_preview_is_frozen_and_any_use_wakes_it_as_it_was(
    api, server_url, jp_fetch, docker_client, owner
):
    async def frozen(expected: bool) -> dict:
        for _ in range(100):
            info = await api.get("shop")
            if info["frozen"] is expected:
                return info
            await asyncio.sleep(0.1)
        raise AssertionError(f"frozen never became {expected}")

    info = await api.upload_running()
    url = server_url + info["preview_url"]
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(url)
        await page.click("text=count is 0")
        await page.wait_for_selector("text=count is 1")

        # Nobody uses it: its container is paused (memory kept, no CPU), still "running".
        assert (await frozen(True))["status"] == "running"
        [container] = containers(docker_client, owner, "shop")
        assert container.status == "paused"

        # The app's own request wakes it (a frozen dev server answers nothing).
        r = await fetch(url + "src/main.jsx", headers=MODULE)
        assert r.code == 200 and b"createRoot" in r.body
        assert not (await api.get("shop"))["frozen"]
        container.reload()
        assert container.status == "running"

        # Frozen again, an edit wakes it: HMR reaches the page, whose state is kept.
        await frozen(True)
        new = (FIXTURES / "vite-react" / "src" / "App.jsx").read_text()
        new = new.replace("Get started", "Welcome back")
        await jp_fetch(
            "reactbox", "api", "projects", "shop", "files", "src", "App.jsx",
            method="PUT", body=new.encode(),
        )  # fmt: skip
        await page.wait_for_selector("text=Welcome back", timeout=10_000)
        assert await page.is_visible("text=count is 1")
        assert not (await api.get("shop"))["frozen"]


KILL_VITE = (
    "for p in /proc/[0-9]*; do grep -q 'vite-serve[.]mjs' $p/cmdline && kill -9 ${p#/proc/}; done"
)


@pytest.mark.parametrize("reactbox_config", [{"idle_timeout": 0, "max_restarts": 1}])
async def test_a_dead_dev_server_is_reported_and_restarted_then_given_up(
    api, docker_client, owner, server_url
):
    info = await api.upload_running()
    [container] = containers(docker_client, owner, "shop")

    # The dev process dies (not the container's init): reported, then restarted.
    container.exec_run(["sh", "-c", KILL_VITE])
    failed = await api.wait("shop", "failed", timeout=30)
    assert "exited with code 137" in failed["error"] and "VITE" in failed["error"]
    assert failed["detail"].startswith("restarting in 1 s (restart 1 of 1)")
    page = server_url + info["preview_url"]
    # Meanwhile a page load gets a page that says why, and reloads itself.
    r = await fetch(page, headers=NAVIGATE)
    assert r.code == 503 and b"exited with code 137" in r.body
    assert r.headers["Retry-After"] == "1" and b'http-equiv="refresh"' in r.body
    assert "frame-ancestors 'self'" in r.headers["Content-Security-Policy"]
    back = await api.wait("shop", timeout=60, through=["failed"])
    assert (back["restarts"], back["preview_url"]) == (1, info["preview_url"])
    assert (await fetch(page, headers=NAVIGATE)).code == 200

    # The container is killed from outside: with no restarts left, it stays failed.
    containers(docker_client, owner, "shop")[0].kill()
    failed = await api.wait("shop", "failed", timeout=30)
    assert "gave up after 1 restarts" in failed["detail"]
    await asyncio.sleep(2)
    assert (await api.get("shop"))["status"] == "failed"


@pytest.mark.parametrize("reactbox_config", [{"max_running": 1}])
async def test_max_running_stops_the_least_recently_used_or_answers_429(api, jp_fetch):
    data = zip_dir(FIXTURES / "vite-react")
    first = json.loads((await api.upload(data, "first")).body)
    assert first["status"] == "installing"
    # While the first is still starting, nothing can make room: the upload is
    # kept, but not started, and an explicit start is a clear 429.
    second = json.loads((await api.upload(data, "second")).body)
    assert second["status"] == "stopped" and "max_running" in second["detail"]
    with pytest.raises(HTTPClientError) as err:
        await post(jp_fetch, "second", "start")
    assert err.value.code == 429
    assert "max_running" in err.value.response.body.decode()

    await api.wait("first")
    await post(jp_fetch, "second", "start")
    await api.wait("second")
    evicted = await api.get("first")
    assert evicted["status"] == "stopped"
    assert evicted["detail"] == "Stopped to make room for second."


async def test_a_name_deleted_and_uploaded_again_at_once_runs_one_tracked_preview(
    api, jp_fetch, server_url, docker_client, owner
):
    """DELETE, and meanwhile POSTs of the same name until one is not a 409 (the name is
    free): the project that remains is the one whose preview runs, with its link,
    and no container runs that the server does not know."""
    data = zip_dir(FIXTURES / "vite-react")
    await api.upload_running()

    async def delete():
        return await jp_fetch(
            "reactbox", "api", "projects", "shop", method="DELETE", raise_error=False
        )

    async def upload_once_free():
        for _ in range(2000):
            r = await api.upload(data, "shop", raise_error=False)
            if r.code != 409:
                return r
            await asyncio.sleep(0.005)
        raise AssertionError("the name was never free")

    for round_ in range(6):
        deleted, uploaded = await asyncio.gather(delete(), upload_once_free())
        assert deleted.code == 204, (round_, deleted.code, deleted.body)
        assert uploaded.code == 201, (round_, uploaded.code, uploaded.body)
        info = await api.wait("shop", timeout=60)
        assert info["preview_url"], (round_, info)
        page = await fetch(server_url + info["preview_url"], headers=NAVIGATE)
        assert page.code == 200, (round_, page.code)
        assert len(containers(docker_client, owner, "shop", all=True)) == 1, round_
    await delete()
    for _ in range(50):
        if not containers(docker_client, owner, "shop", all=True):
            break
        await asyncio.sleep(0.1)
    assert containers(docker_client, owner, "shop", all=True) == []


async def test_concurrent_starts_make_one_container(
    api, jp_fetch, server_url, docker_client, owner, projects_dir
):
    info = await api.upload_running()
    await post(jp_fetch, "shop", "stop")
    since = await next_second()
    page = server_url + info["preview_url"]
    await asyncio.gather(
        *(post(jp_fetch, "shop", "start") for _ in range(8)),
        *(fetch(page, headers=NAVIGATE) for _ in range(8)),
    )
    await api.wait("shop")
    assert len(containers(docker_client, owner, "shop", all=True)) == 1
    events = container_events(docker_client, owner, since, "create", "start")
    # The kept container, started once; nothing created (but the spare for the next
    # new preview, made once a start is over).
    name = engine_name(owner, projects_dir, "shop")
    assert [e["Action"] for e in events if e["Actor"]["Attributes"]["name"] == name] == ["start"]


@pytest.mark.parametrize("backend_config", [{"package_store_size": 0}])  # npm, not the store
async def test_install_progress_then_a_second_project_with_the_same_lockfile_installs_nothing(
    api, server_url, jp_base_url, jp_auth_header, docker_client, owner, projects_dir
):
    # A manifest no earlier test installed, so this one really installs.
    manifest = json.loads((FIXTURES / "vite-react" / "package.json").read_text())
    manifest["description"] = f"installed by {owner}"
    data = zip_dir(FIXTURES / "vite-react", extra={"package.json": json.dumps(manifest)})
    await api.upload(data, "fresh")

    events: list[dict] = []
    # encoded=True: keep the base's %40 as it is.
    url = yarl.URL(f"{server_url}{jp_base_url}reactbox/api/projects/fresh/events", encoded=True)
    async with aiohttp.ClientSession() as session, session.get(url, headers=jp_auth_header) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        async for line in r.content:
            if line.startswith(b"data: "):
                events.append(json.loads(line[6:]))
                if events[-1]["status"] in ("running", "failed"):
                    break
    statuses = [e["status"] for e in events]
    assert statuses[-1] == "running", events[-1]
    assert statuses.index("installing") < statuses.index("starting") < statuses.index("running")
    counts = [e["progress"] for e in events if e["progress"]]
    assert counts, "no package counts while installing"
    assert all(0 <= c["done"] <= c["total"] for c in counts)
    assert counts[-1]["total"] > 10 and counts[-1]["done"] > counts[0]["done"] - 1
    assert any(e["detail"] and "packages" in e["detail"] for e in events)

    # The same lockfile again: a copy of the kept tree, no install container.
    since = await next_second()
    await api.upload(data, "twin")
    twin = await api.wait("twin")
    assert "install" not in containers_made(docker_client, owner, since)
    # ... and its install log says where node_modules came from.
    twin_log = (projects_dir / "twin" / "install.log").read_text()
    assert twin_log.startswith("$ npm ci") and "skipped: node_modules copied" in twin_log
    marker = "node_modules/.reactbox-installed"
    assert (app_of(projects_dir, "twin") / marker).read_text() == (
        app_of(projects_dir, "fresh") / marker
    ).read_text()
    assert twin["status"] == "running"


@pytest.mark.parametrize(
    "reactbox_config", [{"disk_quota": "150m", "idle_timeout": 0, "disk_limits": "check"}]
)
async def test_a_project_over_its_disk_quota_is_stopped_and_cannot_start(
    api, runtime, jp_fetch, docker_client, owner, projects_dir
):
    runtime.watcher.quota_interval = 0.5
    await api.upload_running()
    [container] = containers(docker_client, owner, "shop")
    code, out = container.exec_run(["sh", "-c", "head -c 200000000 /dev/zero > /project/filler"])
    assert code == 0, out
    failed = await api.wait("shop", "failed", timeout=30)
    assert "its quota is 150.0 MiB" in failed["error"]
    assert containers(docker_client, owner, "shop") == []  # stopped

    assert (await post(jp_fetch, "shop", "start"))["status"] == "installing"
    failed = await api.wait("shop", "failed", timeout=30)
    assert "its quota is 150.0 MiB" in failed["error"]

    (app_of(projects_dir, "shop") / "filler").unlink()
    await post(jp_fetch, "shop", "start")
    await api.wait("shop")


@pytest.mark.parametrize(
    "reactbox_config", [{"file_quota": 30_000, "idle_timeout": 0, "disk_limits": "check"}]
)
async def test_a_project_over_its_file_quota_is_stopped(api, runtime, docker_client, owner):
    """Empty files cost no bytes but an inode each: 40,000 of them, written by the app's
    code, stop the preview (a byte quota alone never would)."""
    runtime.watcher.quota_interval = 0.5
    await api.upload_running()
    [container] = containers(docker_client, owner, "shop")
    make = (
        "node -e \"const fs=require('fs'); fs.mkdirSync('/project/many'); "
        "for (let i = 0; i < 40000; i++) fs.writeFileSync('/project/many/f' + i, '')\""
    )
    code, out = container.exec_run(["sh", "-c", make])
    assert code == 0, out
    failed = await api.wait("shop", "failed", timeout=30)
    assert "more than 30000 files and folders, its quota" in failed["error"]
    assert "c.ReactBoxApp.file_quota" in failed["error"]
    assert containers(docker_client, owner, "shop") == []  # stopped


FORGERIES = """async () => {
  const tried = {};
  const post = async (url) => {
    try {
      return (await fetch(url, { method: "POST" })).status;
    } catch {
      return "refused";  // a 403 without CORS headers is a network error to the page
    }
  };
  tried.plain = await post("__reactbox/heartbeat");
  tried.guessed = await post("__reactbox/heartbeat/" + "A".repeat(24));
  // Read the key: our script element, the page fetched again, and from the cache.
  tried.scripts = [...document.scripts].map((s) => s.textContent).join("\\n");
  tried.refetched = await (await fetch(location.href)).text();
  tried.cached = await (await fetch(location.href, { cache: "force-cache" })).text();
  for (const text of [tried.scripts, tried.refetched, tried.cached]) {
    const m = /const key = "([^"]+)"/.exec(text);
    if (m) tried.stolen = await post("__reactbox/heartbeat/" + m[1]);
  }
  // Events the app makes are not a person's.
  for (const type of ["pointerdown", "keydown", "wheel", "touchstart"]) {
    window.dispatchEvent(new Event(type));
    document.body.dispatchEvent(new KeyboardEvent(type, { bubbles: true }));
  }
  return tried;
}"""


@pytest.mark.browser
@pytest.mark.parametrize("reactbox_config", [{"idle_timeout": 30.0}])  # input reported 10 s apart
async def test_the_apps_own_script_cannot_report_use(api, runtime, server_url):
    info = await api.upload_running()
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(server_url + info["preview_url"])
        await page.wait_for_selector("text=count is 0")
        await asyncio.sleep(11)  # past the page load's own report, and the throttle
        used = runtime.state("shop").last_used
        tried = await page.evaluate(FORGERIES)  # run as the app's code runs
        await asyncio.sleep(1)
        assert runtime.state("shop").last_used == used, tried
        assert tried["plain"] in (403, "refused") and tried["guessed"] in (403, "refused")
        assert "stolen" not in tried, tried
        # A person's click (a trusted event) does count.
        await page.mouse.click(5, 5)
        for _ in range(50):
            if runtime.state("shop").last_used > used:
                break
            await asyncio.sleep(0.1)
        assert runtime.state("shop").last_used > used
