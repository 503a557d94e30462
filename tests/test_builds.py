"""Production builds and published snapshots, through a real Jupyter server (base
URL ``/a%40b/``): real builds on the engine, snapshots in Chromium with no
container running, the attacks a build and a snapshot could make, and the API's
refusals (those need no engine)."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
import zipfile

import pytest
from conftest import BLOCKED, FIXTURES, app_of, attack_jupyter, chromium, zip_dir
from IPython.testing.globalipapp import get_ipython
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from jupyter_reactbox.kernel.client import ReactBoxClient
from jupyter_reactbox.kernel.magics import ReactBoxMagics

needs_engine = [pytest.mark.docker, pytest.mark.browser]


async def fetch(url, **kw):
    return await AsyncHTTPClient().fetch(url, raise_error=False, follow_redirects=False, **kw)


async def call(jp_fetch, method: str, *path: str, body: dict | None = None) -> dict:
    r = await jp_fetch(
        "reactbox", "api", *path, method=method,
        body=json.dumps(body or {}) if method == "POST" else None,
    )  # fmt: skip
    return json.loads(r.body) if r.body else {}


async def until(jp_fetch, path: tuple[str, ...], done, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = await call(jp_fetch, "GET", *path)
        if done(info):
            return info
        assert time.monotonic() < deadline, f"not done in {timeout} s: {info}"
        await asyncio.sleep(0.5)


async def share(jp_fetch, project: str, **body) -> dict:
    """A new share of ``project``, once built (or failed)."""
    made = await call(jp_fetch, "POST", "projects", project, "shares", body=body)
    assert made["status"] == "building"
    return await until(jp_fetch, ("shares", made["id"]), lambda s: s["status"] != "building")


async def build(jp_fetch, project: str, base: str = "/") -> dict:
    made = await call(jp_fetch, "POST", "projects", project, "builds", body={"base": base})
    path = ("projects", project, "builds", made["id"])
    return await until(jp_fetch, path, lambda b: b["status"] != "building")


def running_containers(docker_client, owner: str) -> list[str]:
    found = docker_client.containers.list(filters={"label": f"org.jupyter.reactbox.owner={owner}"})
    return [c.name for c in found]


# -- on the engine, in Chromium ---------------------------------------------------------


@pytest.mark.docker
@pytest.mark.browser
async def test_a_shared_vite_app_is_served_with_nothing_running_and_cannot_act_as_anyone(
    api, jp_fetch, jp_serverapp, jp_base_url, server_url, docker_client, owner, capsys
):
    await api.upload_running("vite-routers", "shop")
    shared = await share(jp_fetch, "shop", days=2)
    assert shared["status"] == "live", shared
    assert shared["url"] == f"{jp_base_url}reactbox/shared/{shared['id']}/"
    assert jp_serverapp.identity_provider.token not in shared["url"]
    assert 2 * 86400 - 60 < shared["expires"] - shared["created"] <= 2 * 86400
    await call(jp_fetch, "POST", "projects", "shop", "stop")
    await api.wait("shop", "stopped")
    assert running_containers(docker_client, owner) == []

    link = server_url + shared["url"]
    jupyter = f"{server_url}{jp_base_url}"
    kernels_before = len(jp_serverapp.kernel_manager.list_kernel_ids())
    async with chromium() as browser:
        context = await browser.new_context()
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # The viewer is logged in to this Jupyter: the browser holds its cookies.
        token = jp_serverapp.identity_provider.token
        assert (await page.goto(f"{jupyter}api/status?token={token}")).ok

        r = await page.goto(link)
        assert r.status == 200
        assert "sandbox allow-scripts" in r.headers["content-security-policy"]
        await page.wait_for_selector("h1")
        assert await page.inner_text("h1") == "Home page"
        await page.click("text=About")  # the client router knows the link's base
        await page.wait_for_function("document.querySelector('h1').textContent === 'About page'")
        assert page.url == link + "about"
        await page.goto(link + "about")  # a deep link is the app's route too
        await page.wait_for_selector("h1")
        assert await page.inner_text("h1") == "About page"
        assert await page.evaluate("self.origin") == "null"

        attack = await attack_jupyter(page.main_frame, jupyter)
        assert attack["cookie"] == ""  # the shim's jar: none of Jupyter's
        for key in BLOCKED:
            assert attack[key].startswith(("blocked", "403")), (key, attack[key])
        assert attack["websocket"] == "error"
        # Nor the owner's REST API, nor a preview's storage.
        api_call = await page.evaluate(
            """async (url) => { try { const r = await fetch(url, {credentials: 'include'});
                 return `${r.status} ${await r.text()}` } catch (e) { return `blocked: ${e.name}` } }""",
            f"{jupyter}reactbox/api/projects",
        )
        assert api_call.startswith(("blocked", "403")), api_call
        assert len(jp_serverapp.kernel_manager.list_kernel_ids()) == kernels_before
        assert errors == []

    listed = (await call(jp_fetch, "GET", "shares"))["shares"]
    assert [s["id"] for s in listed] == [shared["id"]]
    assert listed[0]["last_access"] is not None

    # Revoked: the page and its assets are 404 at once, as a link never made.
    page_html = (await fetch(link)).body.decode()
    script = re.search(r'src="([^"]+\.js)"', page_html)[1]  # the app's bundle
    assert (await fetch(server_url + script)).code == 200
    await call(jp_fetch, "DELETE", "shares", shared["id"])
    never = server_url + f"{jp_base_url}reactbox/shared/{'x' * 24}/"
    for url in (link, link + "about", server_url + script, never):
        r = await fetch(url)
        assert (r.code, r.body) == (404, (await fetch(never)).body), url
    with pytest.raises(HTTPClientError) as err:
        await call(jp_fetch, "GET", "shares", shared["id"])
    assert err.value.code == 404

    # From the notebook: a link that expires, live, then 404 like any other.
    client = ReactBoxClient(f"{server_url}{jp_base_url}", jp_serverapp.identity_provider.token)
    project = await asyncio.to_thread(client.project, "shop")
    brief = await asyncio.to_thread(project.share, 4 / 86400)
    assert brief["status"] == "live"
    assert (await fetch(server_url + brief["url"])).code == 200
    await asyncio.sleep(max(0.0, brief["expires"] - time.time()) + 0.5)
    assert (await fetch(server_url + brief["url"])).code == 404
    assert (await call(jp_fetch, "GET", "shares", brief["id"]))["status"] == "expired"
    ip = get_ipython()
    ip.register_magics(ReactBoxMagics(ip, client=client))
    await asyncio.to_thread(ip.run_line_magic, "reactbox", "shares shop")
    assert f"{brief['id']}  shop  expired" in capsys.readouterr().out
    await asyncio.to_thread(ip.run_line_magic, "reactbox", f"revoke {brief['id']}")
    assert await asyncio.to_thread(client.shares) == []


@pytest.mark.docker
@pytest.mark.browser
@pytest.mark.parametrize(
    "fixture, heading",
    [("cra-app", "Hello from create-react-app"), ("next-app", "Hello from Next.js")],
)
async def test_create_react_app_and_nextjs_snapshots_render_under_the_prefix(
    api, jp_fetch, server_url, docker_client, owner, fixture, heading
):
    r = await api.upload(zip_dir(FIXTURES / fixture), "app")
    assert r.code == 201
    # A build needs the app's dependencies, not its dev server: it is stopped as soon
    # as they are installed, and nothing runs while the snapshot is built and served.
    await until(jp_fetch, ("projects", "app"), lambda p: p["status"] in ("starting", "running"))
    await call(jp_fetch, "POST", "projects", "app", "stop")
    await api.wait("app", "stopped")
    assert running_containers(docker_client, owner) == []
    shared = await share(jp_fetch, "app")
    assert shared["status"] == "live", shared
    async with chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(server_url + shared["url"])
        await page.wait_for_selector("h1", timeout=30_000)
        assert await page.inner_text("h1") == heading
        assert await page.evaluate("self.origin") == "null"  # the previews' sandbox
        # Its image is a file of the app named from the root: under the link here.
        await page.wait_for_function(
            "[...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout=10_000
        )
        await page.click("button.counter")  # it is the app, hydrated, not just HTML
        await page.wait_for_function(
            "document.querySelector('button.counter').textContent.includes('1')"
        )
        # The create-react-app app reads its companion API at load: a snapshot is
        # static files, so that request is a 404 (text) whose JSON parse the app does
        # not catch.
        expected = "JSON" if fixture == "cra-app" else "-"
        assert [e for e in errors if expected not in e] == []


@pytest.mark.docker
async def test_a_build_downloads_as_a_zip_and_a_failed_one_says_its_first_error(
    api, jp_fetch, jp_serverapp, jp_base_url, server_url, projects_dir, tmp_path
):
    await api.upload_running("vite-react", "shop")
    client = ReactBoxClient(f"{server_url}{jp_base_url}", jp_serverapp.identity_provider.token)
    project = await asyncio.to_thread(client.project, "shop")
    done = await asyncio.to_thread(project.build)
    assert done["status"] == "ready" and done["base"] == "/", done
    path = await asyncio.to_thread(project.download_build, done["id"], tmp_path / "site.zip")
    site = zipfile.ZipFile(path)
    assert 'src="/assets/' in site.read("index.html").decode()
    assert len(site.namelist()) == done["files"]
    assert (await call(jp_fetch, "GET", "projects", "shop"))["build"]["id"] == done["id"]

    # Written behind the editor's back (the files API refuses a syntax error).
    app_jsx = app_of(projects_dir, "shop") / "src" / "App.jsx"
    app_jsx.write_text("export default function App() { return <main><h1>Broken</main> }\n")
    failed = await build(jp_fetch, "shop")
    assert failed["status"] == "failed"
    assert "App.jsx" in failed["error"] or "closing tag" in failed["error"], failed["error"]
    r = await jp_fetch("reactbox", "api", "projects", "shop", "builds", failed["id"], "log")
    assert "Broken" in r.body.decode() or "App.jsx" in r.body.decode()
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("reactbox", "api", "projects", "shop", "builds", failed["id"], "zip")
    assert err.value.code == 404
    listed = (await call(jp_fetch, "GET", "projects", "shop", "builds"))["builds"]
    assert [b["id"] for b in listed] == [failed["id"], done["id"]]
    assert not list(app_jsx.parent.parent.parent.glob(".reactbox-build-*"))


HOSTILE_BUILD = b"""
import fs from 'node:fs'
import net from 'node:net'
import react from '@vitejs/plugin-react'
import { defineConfig } from 'vite'

const tryIt = (fn) => { try { return String(fn()) } catch (e) { return 'refused: ' + e.code } }
const connect = (host, port) => new Promise((resolve) => {
  const s = net.connect({ host, port, timeout: 3000 }, () => { s.destroy(); resolve('connected') })
  s.on('error', (e) => resolve('refused: ' + e.code))
  s.on('timeout', () => { s.destroy(); resolve('timed out') })
})

// Only in a build: what a build script could try.
const hostile = {
  name: 'hostile',
  apply: 'build',
  async generateBundle() {
    const report = {
      internet: await fetch('http://1.1.1.1/').then((r) => String(r.status), (e) => 'refused: ' + (e.cause?.code ?? e.name)),
      host: await connect(process.env.JUPYTER_HOST || '172.17.0.1', Number(process.env.JUPYTER_PORT || 22)),
      outside: tryIt(() => fs.writeFileSync('/project/../escaped.txt', 'x')),
      root: tryIt(() => fs.writeFileSync('/escaped.txt', 'x')),
      env: Object.keys(process.env).filter((k) => /TOKEN|KEY|JUPYTER/.test(k)),
    }
    this.emitFile({ type: 'asset', fileName: 'report.json', source: JSON.stringify(report) })
    if (fs.existsSync('huge')) {
      for (let i = 0; i < 64; i++) fs.writeFileSync(`/out/blob-${i}.bin`, Buffer.alloc(1 << 20, i))
      await new Promise((r) => setTimeout(r, 60_000))
    }
  },
}

export default defineConfig({ plugins: [react(), hostile] })
"""


@pytest.mark.docker
async def test_a_build_script_has_no_network_cannot_write_outside_and_is_stopped_when_huge(
    api, jp_fetch, jp_serverapp, jp_http_port, projects_dir
):
    r = await api.upload(
        zip_dir(FIXTURES / "vite-react", extra={"vite.config.js": HOSTILE_BUILD}), "evil"
    )
    assert r.code == 201
    await api.wait("evil")
    done = await build(jp_fetch, "evil")
    assert done["status"] == "ready", done
    r = await jp_fetch("reactbox", "api", "projects", "evil", "builds", done["id"], "zip")
    report = json.loads(zipfile.ZipFile(io.BytesIO(r.body)).read("report.json"))
    assert report["internet"].startswith("refused"), report
    assert report["host"] != "connected", report
    assert report["outside"].startswith("refused") and report["root"].startswith("refused")
    assert report["env"] == []
    app = app_of(projects_dir, "evil")
    assert not (app.parent / "escaped.txt").exists()

    # What it writes is bounded: past c.Builds.max_size it is stopped, and nothing stays.
    space = jp_serverapp.web_app.settings["reactbox_spaces"].space
    space.builds.max_size = 16 << 20
    (app / "huge").write_text("1")
    started = time.monotonic()
    stopped = await build(jp_fetch, "evil")
    assert stopped["status"] == "failed"
    assert "more than 16,777,216 bytes" in stopped["error"], stopped
    assert time.monotonic() - started < 55  # stopped, not left to run out its sleep
    assert not list(app.parent.glob(".reactbox-build-*"))


# -- refusals: no engine needed -------------------------------------------------------------


async def test_builds_and_shares_refuse_bad_input_with_a_clear_4xx(api, jp_fetch, jp_base_url):
    r = await api.upload(zip_dir(FIXTURES / "vite-react"), "shop")
    assert r.code == 201

    async def refused(method: str, *path: str, body=None) -> tuple[int, str]:
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch(
                "reactbox", "api", *path, method=method,
                body=body if body is None or isinstance(body, bytes) else json.dumps(body),
            )  # fmt: skip
        body = err.value.response.body or b"{}"
        message = json.loads(body).get("message", "") if body.startswith(b"{") else ""
        return err.value.code, message

    assert await refused("POST", "projects", "shop", "builds", body={"base": "shop/"}) == (
        400,
        '"base" is a path from the root that ends in /, e.g. "/shop/".',
    )
    assert (await refused("POST", "projects", "shop", "builds", body=b"[1]"))[0] == 400
    code, message = await refused("POST", "projects", "shop", "shares", body={"days": 365})
    assert code == 400 and "at most 30 days" in message
    assert (await refused("POST", "projects", "shop", "shares", body={"days": "7"}))[0] == 400
    assert (await refused("POST", "projects", "shop", "shares", body={"days": True}))[0] == 400
    code, message = await refused("POST", "projects", "shop", "shares", body={"users": ["bob"]})
    assert code == 400 and "is for JupyterHub" in message
    assert (await refused("POST", "projects", "shop", "shares", body={"users": "bob"}))[0] == 400
    assert (await refused("POST", "projects", "shop", "shares", body={"public": "yes"}))[0] == 400
    # The fake backend installs nothing: the build says what is missing.
    code, message = await refused("POST", "projects", "shop", "builds", body={})
    assert code == 422 and "start it first" in message
    assert (await refused("GET", "projects", "shop", "builds", "b-000000000000"))[0] == 404
    assert (await refused("GET", "projects", "shop", "builds", "../../etc"))[0] == 404
    assert (await refused("GET", "projects", "nope", "builds"))[0] == 404
    assert (await refused("GET", "shares", "x" * 24))[0] == 404
    assert (await refused("DELETE", "shares", "x" * 24))[0] == 404
    assert (await refused("DELETE", "shares"))[0] == 400
    assert (await call(jp_fetch, "GET", "shares")) == {"shares": []}


async def test_a_share_link_that_does_not_exist_is_404_and_asks_for_no_login(
    jp_fetch, jp_base_url, server_url
):
    for tail in ("x" * 24 + "/", "x" * 24 + "/assets/a.js", "../../api/kernels", "%2e%2e/"):
        r = await fetch(f"{server_url}{jp_base_url}reactbox/shared/{tail}")
        assert r.code == 404, tail
        assert b"No such share" in r.body or tail.startswith((".", "%"))
    r = await fetch(f"{server_url}{jp_base_url}reactbox/shared/{'x' * 24}")
    assert r.code in (302, 404)


def test_expired_shares_are_listed_for_a_day_then_removed_with_their_builds(tmp_path):
    from jupyter_reactbox.builds import Builds
    from jupyter_reactbox.shares import Share, Shares
    from jupyter_reactbox.store import ProjectStore

    store = ProjectStore(tmp_path / "projects")
    project = store.import_zip(zip_dir(FIXTURES / "vite-react"), "shop")
    builds = Builds(backend=None, changed=lambda project_id: None)
    shares = Shares(store=store, builds=builds, base_url="/")
    now = time.time()
    for key, expires in (("a", now - 3600), ("b", now - 2 * 86400), ("c", now + 3600)):
        build_id = f"b-{key * 12}"
        builds.folder(project, build_id).mkdir(parents=True)
        shares._write(Share(key * 24, "shop", build_id, "/x/", now - 3 * 86400, expires))
    listed = {s["id"][0]: (s["status"], s["error"]) for s in shares.list()}
    assert listed == {"a": ("expired", None), "c": ("failed", "Its project or build is gone.")}
    assert not builds.folder(project, "b-" + "b" * 12).exists()  # removed with its share
    assert builds.folder(project, "b-" + "a" * 12).exists()
    assert shares.site("a" * 24) is None and shares.site("c" * 24) is None


def test_under_jupyterhub_a_share_opens_for_those_it_names_and_is_its_owners_alone(tmp_path):
    from jupyter_reactbox.builds import Builds
    from jupyter_reactbox.errors import BadRequest, Forbidden, NotFound
    from jupyter_reactbox.shares import Share, Shares, share_owner
    from jupyter_reactbox.store import ProjectStore

    root = tmp_path / "shares"
    root.mkdir()
    stores = {}
    for name in ("alice", "bob"):
        stores[name] = ProjectStore(tmp_path / name)

    def shares_of(name: str) -> Shares:
        builds = Builds(backend=None, changed=lambda project_id: None)
        return Shares(store=stores[name], builds=builds, base_url="/s/", root=root, owner=name)

    alice, bob = shares_of("alice"), shares_of("bob")
    now = time.time()
    named = Share("a" * 24, "shop", "b-" + "a" * 12, "/s/", now, now + 60, owner="alice",
                  users=["bob"], groups=["physics"])  # fmt: skip
    alice._write(named)
    assert share_owner(root, "a" * 24) == "alice"
    assert share_owner(root, "../../etc/passwd") is None
    assert alice.may_view("a" * 24, {"name": "alice"})
    assert alice.may_view("a" * 24, {"name": "bob", "groups": []})
    assert alice.may_view("a" * 24, {"name": "dana", "groups": ["physics"]})
    assert not alice.may_view("a" * 24, {"name": "carol", "groups": ["chemistry"]})
    assert not alice.may_view("a" * 24, None)
    # Bob's own shares hold none of hers: to him it does not exist.
    assert bob.list() == [] and [s["id"] for s in alice.list()] == ["a" * 24]
    for verb in (bob.get, bob.revoke):
        with pytest.raises(NotFound):
            verb("a" * 24)
    assert bob.site("a" * 24) is None and not bob.may_view("a" * 24, {"name": "bob"})
    # Public: for anyone, only if the admin allows it.
    alice._write(Share("p" * 24, "shop", "b-" + "p" * 12, "/s/", now, now + 60, owner="alice",
                       public=True))  # fmt: skip
    assert alice.may_view("p" * 24, None)
    project = stores["alice"].import_zip(zip_dir(FIXTURES / "vite-react"), "shop")
    with pytest.raises(Forbidden, match="allow_public"):
        alice.create(project, project.plan(), public=True)
    with pytest.raises(BadRequest, match="hub user names"):
        alice.create(project, project.plan(), users=["bad/name"])
