"""Separate-origin mode (``c.ReactBoxApp.preview_origin_template``), end to end.

Each preview is served at ``/`` of its own host, here ``<project>.localhost``
(Chromium sends every ``*.localhost`` name to loopback), by the same Jupyter
server: no prefix, no sandbox, no shim, and the isolation from Jupyter comes from
the origin alone.  So the attacks of test_preview are made again from there.
Real engine, real Vite, Debian's chromium.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import BLOCKED, FIXTURES, app_of, attack_jupyter, chromium, zip_dir
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

pytestmark = [pytest.mark.docker, pytest.mark.browser]


@pytest.fixture
def reactbox_config(jp_http_port):
    return {
        "preview_origin_template": f"http://{{project}}.localhost:{jp_http_port}",
        "frame_ancestors": f"http://localhost:{jp_http_port}",
    }


async def fetch(url: str, host: str, **kw):
    """A request to this server as ``host`` (the host's name needs no resolver)."""
    headers = {"Host": host, **kw.pop("headers", {})}
    return await AsyncHTTPClient().fetch(
        url, headers=headers, raise_error=False, follow_redirects=False, **kw
    )


async def frame_at(page, origin: str):
    for _ in range(400):
        frame = next((f for f in page.frames if f.url.startswith(origin + "/")), None)
        if frame is not None:
            return frame
        await asyncio.sleep(0.05)
    raise AssertionError(f"no frame at {origin}")


async def test_a_preview_on_its_own_origin_runs_at_root_and_cannot_act_as_the_user(
    api, jp_fetch, jp_serverapp, jp_http_port, jp_base_url, projects_dir
):
    folder = FIXTURES / "vite-routers"
    r = await api.upload(zip_dir(folder), "shop")
    info = await api.wait(json.loads(r.body)["id"], timeout=400)
    origin = f"http://shop.localhost:{jp_http_port}"
    link = info["preview_url"]
    assert link.startswith(f"{origin}/__reactbox/enter/"), link
    token = link.rsplit("/", 1)[1]
    loopback = f"http://127.0.0.1:{jp_http_port}"
    host = f"shop.localhost:{jp_http_port}"

    # The link trades its token for an HttpOnly cookie of this host, then goes to /.
    r = await fetch(f"{loopback}/__reactbox/enter/{token}?to=//evil.example/", host)
    assert r.code == 303 and r.headers["Location"] == "/"
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(f"reactbox-preview={token};") and "HttpOnly" in cookie
    jar = {"Cookie": f"reactbox-preview={token}"}
    r = await fetch(f"{loopback}/", host, headers=jar)
    assert r.code == 200 and b'id="root"' in r.body
    # Without the cookie, with another token, or on Jupyter's host: nothing.
    for headers in ({}, {"Cookie": "reactbox-preview=" + "x" * len(token)}):
        r = await fetch(f"{loopback}/", host, headers=headers)
        assert r.code == 403, headers
    r = await fetch(f"{loopback}/__reactbox/enter/{'y' * len(token)}", host)
    assert r.code == 403 and "Set-Cookie" not in r.headers
    r = await fetch(
        f"{loopback}{jp_base_url}reactbox/preview/shop/{token}/", f"localhost:{jp_http_port}"
    )
    assert r.code == 403 and origin.encode() in r.body
    # Nothing of Jupyter is served on a preview host, even with Jupyter's token.
    jupyter_token = jp_serverapp.identity_provider.token
    r = await fetch(f"{loopback}{jp_base_url}api/kernels?token={jupyter_token}", host, headers=jar)
    assert not r.body.lstrip().startswith(b"["), r.body[:200]
    assert "application/json" not in r.headers.get("Content-Type", "")

    jupyter = f"http://localhost:{jp_http_port}{jp_base_url}"
    kernels_before = len(jp_serverapp.kernel_manager.list_kernel_ids())
    async with chromium() as browser:
        context = await browser.new_context()
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        r = await page.goto(f"{jupyter}api/status?token={jupyter_token}")
        assert r.ok
        assert any(c["name"].startswith("username-") for c in await context.cookies())

        # In a frame of a Jupyter page, as JupyterLab shows it.
        await page.goto(f"{jupyter}a-page-that-is-not-there")
        await page.evaluate(
            """src => { const f = document.createElement('iframe'); f.src = src;
                        f.style.width = '1000px'; f.style.height = '700px';
                        document.body.replaceChildren(f); }""",
            link,
        )
        frame = await frame_at(page, origin)
        await frame.wait_for_selector("text=Home page", timeout=60_000)
        assert await frame.evaluate("self.origin") == origin
        assert await frame.evaluate("location.pathname") == "/"
        await frame.click("button.counter")
        await frame.wait_for_selector("text=Clicked 1")
        await frame.click("text=About")
        await frame.wait_for_selector("text=About page")
        assert await frame.evaluate("location.pathname") == "/about"

        attack = await attack_jupyter(frame, jupyter)
        assert "username-" not in attack["cookie"] and "_xsrf" not in attack["cookie"]
        assert "reactbox-preview" not in attack["cookie"]  # HttpOnly
        assert attack["parentCookie"] == "blocked: SecurityError"
        for key in BLOCKED:
            assert attack[key].startswith(("blocked", "403")), (key, attack[key])
        assert attack["websocket"] == "error"
        assert len(jp_serverapp.kernel_manager.list_kernel_ids()) == kernels_before

        # HMR at the root: the edit shows, the page keeps its state.
        await frame.evaluate("window.__reactbox_marker = 7")
        pages = app_of(projects_dir, "shop") / "src" / "pages.jsx"
        pages.write_text(pages.read_text().replace("About page", "About us"))
        await frame.wait_for_selector("text=About us", timeout=15_000)
        assert await frame.evaluate("window.__reactbox_marker") == 7

        # The page's error reporter works at the root of its own origin too.
        await frame.evaluate("setTimeout(() => { throw new Error('boom at the root') })")
        for _ in range(100):
            if any("boom at the root" in e["message"] for e in (await api.get("shop"))["errors"]):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the page's error never reached the project")
        assert [e for e in errors if "boom at the root" not in e] == []

        # A deep route loads by itself, in a tab of its own (the cookie is set there anew).
        tab = await context.new_page()
        await tab.goto(f"{origin}/__reactbox/enter/{token}?to=/about")
        await tab.wait_for_selector("text=About us", timeout=30_000)
        assert tab.url == f"{origin}/about"

        # Stopped, its link and cookie stay good: the next page load brings it back.
        await jp_fetch("reactbox", "api", "projects", "shop", "stop", method="POST", body=b"")
        assert (await api.get("shop"))["status"] == "stopped"
        await tab.reload()
        await tab.wait_for_selector("text=About us", timeout=60_000)
        assert (await api.get("shop"))["status"] == "running"


async def test_an_app_with_a_service_worker_runs_on_its_own_origin(api, jp_http_port):
    """What the sandbox cannot give an app (test_real_apps), its own origin does: the
    worker registers, takes over, and answers the app's API."""
    r = await api.upload(zip_dir(FIXTURES / "vite-worker"), "worker")
    info = await api.wait(json.loads(r.body)["id"])
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(info["preview_url"])
        await page.wait_for_selector("text=Hello from the worker", timeout=30_000)
        assert await page.evaluate("self.origin") == f"http://worker.localhost:{jp_http_port}"
        await page.click("button.counter")
        await page.wait_for_selector("text=Count is 1")


@pytest.mark.parametrize("reactbox_config", [{"preview_origin": "auto"}])
async def test_a_local_server_gives_each_preview_its_own_origin_by_default(
    api, jp_serverapp, jp_http_port, jp_base_url
):
    """Nothing configured, a server on localhost: previews are at <project>.localhost
    of its port, framed by its own origins (by name and by address), and say so;
    from there the app reaches nothing of Jupyter's."""
    r = await api.upload(zip_dir(FIXTURES / "vite-react"), "shop")
    info = await api.wait(json.loads(r.body)["id"])
    origin = f"http://shop.localhost:{jp_http_port}"
    assert info["preview_url"].startswith(f"{origin}/__reactbox/enter/"), info
    assert info["preview_mode"]["mode"] == "separate"
    assert "this machine only" in info["preview_mode"]["why"]
    token = jp_serverapp.identity_provider.token
    async with chromium() as browser:
        for host in ("localhost", "127.0.0.1"):  # however the user opened Jupyter
            jupyter = f"http://{host}:{jp_http_port}{jp_base_url}"
            page = await browser.new_page()
            await page.goto(f"{jupyter}api/status?token={token}")  # logged in, with its cookie
            await page.goto(f"{jupyter}a-page-that-is-not-there")
            await page.evaluate(
                """src => { const f = document.createElement('iframe'); f.src = src;
                            document.body.replaceChildren(f); }""",
                info["preview_url"],
            )
            frame = await frame_at(page, origin)
            await frame.wait_for_selector("button.counter", timeout=60_000)
            await frame.click("button.counter")
            await frame.wait_for_selector("text=Count is 1")
            assert await frame.evaluate("self.origin") == origin
            attack = await attack_jupyter(frame, jupyter)
            assert "username-" not in attack["cookie"], attack
            assert attack["parentCookie"] == "blocked: SecurityError"
            for key in BLOCKED:
                assert attack[key].startswith(("blocked", "403")), (host, key, attack[key])
            await page.close()


@pytest.mark.parametrize(
    "fixture, heading, hydrated, button, after, link, linked",
    [
        # React Router 7's framework mode: server-rendered with its loader's data,
        # hydrated, and a client navigation that fetches the next route's data.
        (
            "rr-framework",
            "Trail notes",
            "body",
            "button.like",
            "Liked 1",
            "About",
            "walking since 2019",
        ),
        # Astro with a React island (client:load), and a link to another page.
        (
            "astro-react",
            "Field guide",
            "astro-island:not([ssr])",
            "button.counter",
            "Visitors 1",
            "About",
            "About the field",
        ),
    ],
)
async def test_frameworks_that_need_the_root_run_on_their_own_origin(
    api, jp_fetch, fixture, heading, hydrated, button, after, link, linked
):
    """Refused under a path prefix (they match routes from the origin's root), they
    run as they are where a preview has an origin of its own."""
    r = await api.upload(zip_dir(FIXTURES / fixture), fixture)
    info = await api.wait(json.loads(r.body)["id"], timeout=400)
    async with chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(info["preview_url"])
        await page.wait_for_selector(f"h1:has-text('{heading}')", timeout=60_000)
        await page.wait_for_selector(hydrated, timeout=30_000)
        # Hydrated: React has put its fiber on the button.  A click before its
        # code even loaded (a busy machine) is lost, as it would be for a person.
        await page.wait_for_function(
            """selector => {
                const node = document.querySelector(selector);
                return !!node && Object.keys(node).some(key => key.startsWith('__reactFiber$'));
            }""",
            arg=button,
            timeout=60_000,
        )
        await page.click(button)
        await page.wait_for_selector(f"text={after}", timeout=10_000)
        await page.click(f"text={link}")
        await page.wait_for_selector(f"text={linked}", timeout=20_000)
        assert errors == []


@pytest.mark.parametrize("reactbox_config", [{"preview_origin": "path"}])
async def test_under_jupyters_path_they_are_refused_saying_how_to_run_them(jp_fetch):
    upload = dict(
        method="POST",
        body=zip_dir(FIXTURES / "rr-framework"),
        headers={"Content-Type": "application/zip"},
    )
    with pytest.raises(HTTPClientError) as exc:
        await jp_fetch("reactbox", "api", "projects", params={"name": "rr"}, **upload)
    assert exc.value.code == 422
    message = json.loads(exc.value.response.body)["message"]
    assert "React Router's framework mode" in message
    assert "preview_origin = 'separate'" in message
