"""The preview through the proxy: real Vite, real Docker, Debian's chromium.

The preview is untrusted code; these tests attack from inside it.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from conftest import (
    ARTIFACTS,
    BLOCKED,
    FIXTURES,
    app_of,
    attack_jupyter,
    chromium,
    embed_preview,
    engine_name,
    zip_dir,
)
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_reactbox.backends.docker import PORT

pytestmark = [pytest.mark.docker, pytest.mark.browser]


async def fetch(url, **kw):
    return await AsyncHTTPClient().fetch(url, raise_error=False, **kw)


def test_a_query_goes_on_byte_for_byte_but_for_jupyters_token():
    from jupyter_reactbox.proxy import without_token

    keep_all = lambda value: True  # noqa: E731
    for query in ("import&url", "raw", "import&raw??", "a=1&&b=%20c+d", "worker_file&type=module"):
        assert without_token(query, keep=keep_all) == query
    vite_own = lambda value: value == "vite-own"  # noqa: E731
    assert without_token("import&token=secret&url", keep=vite_own) == "import&url"
    assert without_token("t%6Fken=secret&raw", keep=vite_own) == "raw"
    assert without_token("token=vite-own&x", keep=vite_own) == "token=vite-own&x"


SPECIAL_QUERIES = (
    "src/assets/react.svg?import&url",
    "src/assets/react.svg?url",
    "src/assets/react.svg?import&raw",
    "src/assets/react.svg?import&inline",
    "src/App.css?inline",
    "src/App.css?import&raw",
    "src/main.jsx?worker",
    "src/main.jsx?import&worker",
)


async def test_asset_and_worker_queries_reach_the_dev_server_as_sent(
    api, server_url, docker_client, owner, projects_dir
):
    """Vite answers ``?url``, ``?raw``, ``?inline`` and ``?worker`` only when it sees
    them as written: through the proxy, the same answer as straight from it."""
    info = await api.upload_running()
    box = docker_client.containers.get(engine_name(owner, projects_dir, "shop"))
    ip = box.attrs["NetworkSettings"]["Networks"][engine_name(owner, projects_dir, "previews")][
        "IPAddress"
    ]
    base = info["preview_url"]
    module = {"Sec-Fetch-Dest": "script", "Sec-Fetch-Mode": "cors", "Accept": "*/*"}
    for path in SPECIAL_QUERIES:
        proxied = await fetch(server_url + base + path, headers=module)
        direct = await fetch(f"http://{ip}:{PORT}{base}{path}", headers=module)
        assert (proxied.code, direct.code) == (200, 200), path
        assert proxied.headers["Content-Type"] == direct.headers["Content-Type"], path
        assert "javascript" in proxied.headers["Content-Type"], path  # a module, not the file
        assert proxied.body == direct.body.replace(b"%2540", b"%40"), path
    url = await fetch(server_url + base + SPECIAL_QUERIES[0], headers=module)
    assert url.body.decode().startswith(f'export default "{base}src/assets/react.svg"')


async def test_proxy_forwards_no_credentials_and_checks_the_token(
    api, server_url, jp_serverapp, jp_base_url
):
    blob = os.urandom(1 << 20)  # a large file, to stream through in many chunks
    await api.upload(zip_dir(FIXTURES / "vite-react", extra={"public/big.bin": blob}), "shop")
    info = await api.wait("shop")
    preview = server_url + info["preview_url"]
    jupyter_token = jp_serverapp.identity_provider.token

    r = await fetch(
        f"{preview}__reactbox_echo?token={jupyter_token}&keep=1",
        headers={
            "Cookie": "username-x=secret; _xsrf=abc",
            "Authorization": f"token {jupyter_token}",
            "X-XSRFToken": "abc",
        },
    )
    assert r.code == 200
    seen = json.loads(r.body)
    assert seen["url"] == f"{info['preview_url']}__reactbox_echo?keep=1"
    for header in ("cookie", "authorization", "x-xsrftoken"):
        assert header not in seen["headers"]
    assert jupyter_token not in r.body.decode()
    assert "Set-Cookie" not in r.headers

    page = await fetch(preview)
    assert page.code == 200
    assert page.headers["Content-Security-Policy"] == (
        "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads; "
        "frame-ancestors 'self'"
    )
    assert page.headers["Access-Control-Allow-Origin"] == "*"
    body = page.body.decode()
    assert body.index("jupyter-reactbox preview shim") < body.index("@vite/client")
    assert f'href="{info["preview_url"]}favicon.svg"' in body

    r = await fetch(f"{preview}big.bin")
    assert r.code == 200 and len(r.body) == len(blob) and r.body == blob

    # The app's own absolute references to public/ files are moved under the base.
    app_js = await fetch(f"{preview}src/App.jsx")
    assert f'"{info["preview_url"]}icons.svg#documentation-icon"' in app_js.body.decode()

    base = f"{server_url}{jp_base_url}reactbox/preview"
    token = info["preview_url"].rstrip("/").rsplit("/", 1)[1]
    for url in (
        f"{base}/shop/{'x' * len(token)}/",  # wrong token
        f"{base}/shop/",  # no token
        f"{base}/shop",
        f"{base}/other/{token}/",  # right token, other project
        f"{base}/shop/{token}<script>alert(1)</script>/",
        f"{base}/",
    ):
        r = await fetch(url, headers={"Authorization": f"token {jupyter_token}"})
        assert r.code == 403, url
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert "<script>" not in r.body.decode()
        assert "Set-Cookie" not in r.headers

    for path in ("..%2F..%2Fapi/kernels", "src/%2e%2e/%2e%2e/x", "a%2Fb"):
        r = await fetch(f"{preview}{path}")
        assert r.code == 400, path

    # host@ip: an address in the path stays a path of the project's own dev server,
    # and one in the Host header is refused.
    r = await fetch(f"{preview}__reactbox_echo@169.254.169.254/latest/meta-data/")
    assert r.code == 200
    url = json.loads(r.body)["url"]
    assert url == f"{info['preview_url']}__reactbox_echo@169.254.169.254/latest/meta-data/"
    for host in ("x@169.254.169.254", f"127.0.0.1:{server_url.rsplit(':', 1)[1]}@evil.example"):
        r = await fetch(preview, headers={"Host": host})
        assert r.code == 400, host

    # The websocket: no token, no connection; a foreign Origin, no connection.
    ws = preview.replace("http://", "ws://")
    for path in ("shop/wrong/", "shop/", f"other/{token}/"):
        with pytest.raises(HTTPClientError) as err:
            await websocket_connect(f"{base.replace('http://', 'ws://')}/{path}")
        assert err.value.code == 403, path
    with pytest.raises(HTTPClientError) as err:
        await websocket_connect(
            HTTPRequest(
                ws, headers={"Origin": "http://evil.example", "Sec-WebSocket-Protocol": "vite-hmr"}
            )
        )
    assert err.value.code == 403


async def test_preview_renders_hot_reloads_and_cannot_act_as_the_user(
    api, server_url, jp_serverapp, jp_base_url, projects_dir
):
    info = await api.upload_running()
    preview = server_url + info["preview_url"]
    jupyter = f"{server_url}{jp_base_url}"
    kernels_before = len(jp_serverapp.kernel_manager.list_kernel_ids())
    ARTIFACTS.mkdir(exist_ok=True)

    async with chromium() as browser:
        context = await browser.new_context()
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        console: list[str] = []
        page.on("console", lambda m: console.append(m.text))

        # Log in to Jupyter the way a user does: the browser now holds the cookies.
        r = await page.goto(f"{jupyter}api/status?token={jp_serverapp.identity_provider.token}")
        assert r.ok
        cookies = {c["name"] for c in await context.cookies()}
        assert any(name.startswith("username-") for name in cookies)

        # Embed the preview as JupyterLab does: in an iframe on a Jupyter page (any
        # HTML page on Jupyter's origin will do; API responses forbid frames).
        await page.goto(f"{jupyter}a-page-that-is-not-there")
        frame = await embed_preview(page, preview)
        await frame.wait_for_selector("h1", timeout=30_000)
        assert await frame.inner_text("h1") == "Get started"

        # Every image loads (Vite's asset URLs are built from the encoded base).
        await frame.wait_for_function(
            "[...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout=10_000
        )
        assert await frame.evaluate("document.images.length") >= 3

        # It runs in an opaque origin, with the shim's storage and cookie jar.
        assert await frame.evaluate("self.origin") == "null"
        assert await frame.evaluate(
            "localStorage.setItem('k', 'v'), document.cookie = 'a=1', "
            "[localStorage.getItem('k'), document.cookie]"
        ) == ["v", "a=1"]
        # SVG sprites from public/ are inlined so <use> renders.
        await frame.wait_for_function(
            "[...document.querySelectorAll('use')].every(u => u.getAttribute('href').startsWith('#reactbox-sprite-'))"
        )
        assert await frame.evaluate(
            "[...document.querySelectorAll('use')].every(u => document.getElementById(u.getAttribute('href').slice(1)))"
        )
        # ... without the browser first refusing the external reference.
        assert not [line for line in console if "Unsafe attempt to load URL" in line], console

        # Attacks from inside the preview.
        attack = await attack_jupyter(frame, jupyter)
        assert attack["cookie"] == "a=1"
        assert attack["parentCookie"] == "blocked: SecurityError"
        for key in BLOCKED:
            assert attack[key].startswith(("blocked", "403")), (key, attack[key])
        assert attack["websocket"] == "error"
        assert len(jp_serverapp.kernel_manager.list_kernel_ids()) == kernels_before

        # HMR: click to make React state, edit the source, see the change keep state.
        await frame.click("button.counter")
        assert await frame.inner_text("button.counter") == "Count is 1"
        await frame.evaluate("window.__reactbox_marker = 42")
        app_jsx = app_of(projects_dir, "shop") / "src" / "App.jsx"
        app_jsx.write_text(app_jsx.read_text().replace("Get started", "Hot reloaded"))
        await frame.wait_for_function(
            "document.querySelector('h1').textContent === 'Hot reloaded'", timeout=15_000
        )
        assert await frame.evaluate("window.__reactbox_marker") == 42  # no full reload
        assert await frame.inner_text("button.counter") == "Count is 1"  # state kept
        await page.screenshot(path=ARTIFACTS / "vite-preview-in-iframe.png")
        assert errors == []


async def test_create_react_app_renders_and_hot_reloads(api, jp_fetch, server_url, projects_dir):
    """Its dev script starts its API beside it (concurrently), which its "proxy"
    reaches from a fetch of "/api/feedback", from the root, as outside a preview."""
    r = await api.upload(zip_dir(FIXTURES / "cra-app"), "cra")
    assert r.code == 201
    info = await api.wait("cra", timeout=600)
    assert info["framework"] == "cra"
    preview = server_url + info["preview_url"]
    ARTIFACTS.mkdir(exist_ok=True)

    async with chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(preview)
        await page.wait_for_selector("h1", timeout=60_000)
        assert await page.inner_text("h1") == "Hello from create-react-app"
        assert await page.evaluate("self.origin") == "null"
        await page.wait_for_selector("text=Feedback: First!", timeout=30_000)
        log = (await jp_fetch("reactbox", "api", "projects", "cra", "logs")).body.decode()
        assert "[jupyter-reactbox] companion: node api.js" in log, log[-2000:]
        # "/logo.svg" in the component is a public/ file: served under the base.
        await page.wait_for_function(
            "[...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout=10_000
        )
        await page.click("button.counter")
        await page.evaluate("window.__reactbox_marker = 7")
        app_js = app_of(projects_dir, "cra") / "src" / "App.js"
        app_js.write_text(app_js.read_text().replace("Hello from", "Hot reloaded"))
        await page.wait_for_function(
            "document.querySelector('h1').textContent === 'Hot reloaded create-react-app'",
            timeout=60_000,
        )
        assert await page.evaluate("window.__reactbox_marker") == 7
        assert await page.inner_text("button.counter") == "Count is 1"
        await page.screenshot(path=ARTIFACTS / "cra-preview.png")
        assert errors == []


async def test_an_app_that_opens_a_browser_on_start_runs(api, server_url):
    """`server.open` in the app's own Vite config: there is no browser in a container,
    and the dev server must not die looking for one."""
    config = (FIXTURES / "vite-react" / "vite.config.js").read_text()
    opening = config.replace(
        "plugins: [react(), echoHeaders],",
        "plugins: [react(), echoHeaders],\n  server: { open: true },",
    )
    assert opening != config
    r = await api.upload(
        zip_dir(FIXTURES / "vite-react", extra={"vite.config.js": opening.encode()}), "opener"
    )
    info = await api.wait(json.loads(r.body)["id"])
    await asyncio.sleep(2)  # past the moment it would try to open one
    assert (await api.get("opener"))["status"] == "running"
    r = await AsyncHTTPClient().fetch(server_url + info["preview_url"], request_timeout=30)
    assert r.code == 200 and b'<div id="root">' in r.body


async def test_a_lockfile_out_of_step_with_package_json_falls_back_to_npm_install(
    api, jp_fetch, runtime
):
    """A dependency added to package.json and not to the lockfile (as tutorials leave
    them): `npm ci` refuses; the install resolves again with `npm install` and says so."""
    manifest = json.loads((FIXTURES / "vite-react" / "package.json").read_text())
    manifest["dependencies"]["is-number"] = "^7.0.0"
    data = zip_dir(
        FIXTURES / "vite-react", extra={"package.json": json.dumps(manifest, indent=2).encode()}
    )
    r = await api.upload(data, "stale")
    await api.wait(json.loads(r.body)["id"])
    log = (await jp_fetch("reactbox", "api", "projects", "stale", "logs")).body.decode()
    assert "package-lock.json does not match package.json: installing with `npm install" in log
    app = runtime.store.get("stale").app_dir
    assert (app / "node_modules" / "is-number" / "package.json").is_file()


async def test_a_page_that_loses_one_of_its_modules_loads_itself_again(api, server_url):
    """A module request dropped on the way (what a browser on the engine's host does to
    requests in flight when a container starts) leaves the page blank; a young page
    loads itself again, and renders."""
    info = await api.upload_running()
    dropped: list[str] = []

    async def drop_the_first(route):
        if not dropped:
            dropped.append(route.request.url)
            await route.abort("internetdisconnected")
        else:
            await route.continue_()

    async with chromium() as browser:
        page = await browser.new_page()
        await page.route("**/src/App.jsx*", drop_the_first)
        await page.goto(server_url + info["preview_url"])
        await page.wait_for_selector("button.counter", timeout=30_000)
        assert len(dropped) == 1
        assert await page.evaluate("window.name") == "reactbox-reloads:1"


async def test_the_apps_storage_and_cookies_survive_a_reload_and_stay_its_own(
    api, server_url, projects_dir
):
    """In the sandbox, localStorage and cookies are the shim's, in memory: the server
    keeps them for the project (bounded, strings only) and gives them to its next
    page load, and to no other project's page."""
    shop = await api.upload_running()
    await api.upload(zip_dir(FIXTURES / "vite-react"), "other")
    other = await api.wait("other")
    kept = "dark</script><script>window.injected = 1</script>"
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(server_url + shop["preview_url"])
        await page.wait_for_selector("button.counter")
        await page.evaluate(
            "kept => { localStorage.setItem('theme', kept); document.cookie = 'session=abc; path=/' }",
            kept,
        )
        for _ in range(40):  # saved a moment after the change
            if (projects_dir / "shop" / "page-storage.json").exists():
                break
            await asyncio.sleep(0.1)
        await page.reload()
        await page.wait_for_selector("button.counter")
        assert await page.evaluate("localStorage.getItem('theme')") == kept
        assert await page.evaluate("document.cookie") == "session=abc"
        assert await page.evaluate("self.origin") == "null"
        assert await page.evaluate("window.injected") is None
        await page.goto(server_url + other["preview_url"])
        await page.wait_for_selector("button.counter")
        assert await page.evaluate("[localStorage.length, document.cookie]") == [0, ""]

    url = server_url + shop["preview_url"] + "__reactbox/storage"
    before = (projects_dir / "shop" / "page-storage.json").read_bytes()
    too_large = json.dumps({"local": {"x": "y" * (300 << 10)}})
    for body, code in ((too_large, 413), ("not json", 400), ('["a"]', 400), ('{"local": 1}', 400)):
        assert (await fetch(url, method="POST", body=body)).code == code, body
    wrong = url.replace(shop["preview_url"].split("/")[-2], "not-the-token")
    assert (await fetch(wrong, method="POST", body='{"local": {}}')).code == 403
    assert (projects_dir / "shop" / "page-storage.json").read_bytes() == before
