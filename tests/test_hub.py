"""Under a real JupyterHub (configurable-http-proxy, two users, local-process spawner).

`jupyterhub-singleuser` sends `Content-Security-Policy: frame-ancestors 'none'`
on every handler by default; a preview must still appear in a frame on the
user's own pages, and must not open any door into the user's server or the hub.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ARTIFACTS, FIXTURES, chromium, embed_preview, free_port, remove_owned, zip_dir
from tornado.httpclient import AsyncHTTPClient

pytestmark = [pytest.mark.docker, pytest.mark.browser]


async def fetch(url, **kw):
    kw.setdefault("request_timeout", 60)
    return await AsyncHTTPClient().fetch(url, raise_error=False, follow_redirects=False, **kw)


class Hub:
    def __init__(self, tmp: Path, package_cache: Path, image: str):
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        suffix = secrets.token_hex(3)
        self.alice, self.bob = f"alice-{suffix}", f"bob-{suffix}"
        (tmp / "jupyterhub_config.py").write_text(
            textwrap.dedent(
                f"""
                c.JupyterHub.ip = "127.0.0.1"
                c.JupyterHub.port = {self.port}
                c.JupyterHub.hub_ip = "127.0.0.1"
                c.JupyterHub.hub_port = {free_port()}
                c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
                c.JupyterHub.db_url = "sqlite:///{tmp}/hub.sqlite"
                c.JupyterHub.cookie_secret_file = "{tmp}/cookie_secret"
                c.ConfigurableHTTPProxy.pid_file = "{tmp}/proxy.pid"
                c.JupyterHub.authenticator_class = "dummy"
                c.DummyAuthenticator.password = "pw"
                c.Authenticator.allowed_users = {{"{self.alice}", "{self.bob}"}}
                c.JupyterHub.spawner_class = "simple"
                c.SimpleLocalProcessSpawner.home_dir_template = "{tmp}/home/{{username}}"
                c.Spawner.args = [
                    "--allow-root",
                    "--ReactBoxApp.cache_dir={package_cache}",
                    "--DockerBackend.image={image}",
                ]
                c.Spawner.start_timeout = 120
                c.Spawner.http_timeout = 120
                c.JupyterHub.services = [{{"name": "tester", "api_token": "{self.token}"}}]
                c.JupyterHub.load_roles = [{{
                    "name": "tester",
                    "scopes": ["admin:users", "admin:servers", "tokens", "access:servers"],
                    "services": ["tester"],
                }}]
                """
            )
        )
        self.log = open(tmp / "hub.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(tmp / "jupyterhub_config.py")],
            cwd=tmp,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def api(self, method, path, body=None, token=None):
        r = await fetch(
            f"{self.url}/hub/api/{path}",
            method=method,
            body=None if body is None else json.dumps(body),
            headers={"Authorization": f"token {token or self.token}"},
            allow_nonstandard_methods=True,
        )
        return r.code, (json.loads(r.body) if r.body else None)

    async def ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if (await fetch(f"{self.url}/hub/api/")).code == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.5)
        raise AssertionError("JupyterHub did not start:\n" + self.logs())

    async def start_server(self, user):
        code, _ = await self.api("POST", "users", {"usernames": [user]})
        assert code in (201, 409)
        code, _ = await self.api("POST", f"users/{user}/server")
        assert code in (201, 202), self.logs()
        for _ in range(240):
            _, info = await self.api("GET", f"users/{user}")
            if info["servers"].get("", {}).get("ready"):
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError(f"{user}'s server did not start:\n" + self.logs())
        code, tok = await self.api("POST", f"users/{user}/tokens", {"note": "test"})
        assert code in (200, 201), tok
        return tok["token"]

    async def start_kernel(self, user, token) -> str:
        """A kernel in ``user``'s server; its id."""
        r = await fetch(
            f"{self.url}/user/{user}/api/kernels",
            method="POST",
            body="{}",
            headers={"Authorization": f"token {token}"},
        )
        assert r.code == 201, r.body
        return json.loads(r.body)["id"]

    def logs(self) -> str:
        self.log.flush()
        return (self.tmp / "hub.log").read_text(errors="replace")[-5000:]

    def stop(self):
        os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
        try:  # the proxy outlives a hub that did not stop cleanly
            os.kill(int((self.tmp / "proxy.pid").read_text()), 9)
        except (OSError, ValueError):
            pass
        self.log.close()


@pytest.fixture
def hub(tmp_path, package_cache, sandbox_image, docker_client, request):
    if not shutil.which("configurable-http-proxy"):
        pytest.fail(
            "These tests need configurable-http-proxy: npm install -g configurable-http-proxy"
        )
    h = Hub(tmp_path, package_cache, sandbox_image)
    yield h
    if getattr(request.node, "rep_call", None) and request.node.rep_call.failed:
        print(h.logs())
    h.stop()
    for user in (h.alice, h.bob):
        remove_owned(docker_client, user)


async def test_preview_under_jupyterhub(hub):
    await hub.ready()
    alice_token = await hub.start_server(hub.alice)
    bob_token = await hub.start_server(hub.bob)
    alice = f"{hub.url}/user/{hub.alice}/"
    api = f"{alice}reactbox/api/projects"

    r = await fetch(
        f"{api}?name=shop",
        method="POST",
        body=zip_dir(FIXTURES / "vite-react"),
        headers={"Authorization": f"token {alice_token}", "Content-Type": "application/zip"},
    )
    assert r.code == 201, r.body
    for _ in range(480):
        r = await fetch(f"{api}/shop", headers={"Authorization": f"token {alice_token}"})
        info = json.loads(r.body)
        if info["status"] in ("running", "failed"):
            break
        await asyncio.sleep(0.25)
    assert info["status"] == "running", info
    assert info["preview_url"].startswith(f"/user/{hub.alice}/reactbox/preview/shop/")
    preview = hub.url + info["preview_url"]

    # Bob cannot use Alice's API, nor guess her previews.
    for url in (api, f"{api}/shop", f"{api}/shop/logs"):
        r = await fetch(url, headers={"Authorization": f"token {bob_token}"})
        assert r.code in (302, 403, 404), (url, r.code)
        assert b"shop" not in (r.body or b"")
    token = info["preview_url"].rstrip("/").rsplit("/", 1)[1]
    wrong = preview.replace(token, "x" * len(token))
    r = await fetch(wrong, headers={"Authorization": f"token {bob_token}"})
    assert r.code == 403

    # The preview overrides the hub's frame-ancestors 'none' with its own policy.
    r = await fetch(preview)
    assert r.code == 200
    assert r.headers.get_list("Content-Security-Policy") == [
        "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads; "
        "frame-ancestors 'self'"
    ]

    # A kernel of Alice's, for the preview to go after.
    kernel = await hub.start_kernel(hub.alice, alice_token)
    ws_kernel = f"ws://127.0.0.1:{hub.port}/user/{hub.alice}/api/kernels/{kernel}/channels"

    ARTIFACTS.mkdir(exist_ok=True)
    async with chromium() as browser:
        page = await login(browser, hub, hub.alice)
        # Any HTML page of Alice's own server, reached through the hub's OAuth.
        await page.goto(f"{alice}a-page-that-is-not-there")
        assert page.url.startswith(alice)
        assert any(c["name"].startswith("jupyterhub") for c in await page.context.cookies())
        frame = await embed_preview(page, preview)
        await frame.wait_for_selector("h1", timeout=30_000)
        assert await frame.inner_text("h1") == "Get started"
        attack = await frame.evaluate(ATTACK, [alice, hub.url, ws_kernel])
        assert attack["cookie"] == "", attack  # the shim's own, empty: none of the hub's
        assert attack["parentCookie"] == "SecurityError", attack
        assert attack["kernelSocket"] in ("error", "closed"), attack
        for name in ("kernels", "kernelStart", "contents", "hubUser", "projects"):
            assert attack[name].startswith(("blocked", "401", "403")), (name, attack)
        await page.screenshot(path=ARTIFACTS / "preview-under-jupyterhub.png")

        # Alice's server has only the kernel she started herself.
        r = await fetch(f"{alice}api/kernels", headers={"Authorization": f"token {alice_token}"})
        assert [k["id"] for k in json.loads(r.body)] == [kernel]

        # Bob, logged in to the same hub in his own browser.
        bob = await login(await browser.new_context(), hub, hub.bob)
        for url in (api, f"{api}/shop"):
            r = await bob.goto(url)
            assert r.status in (403, 404), (url, r.status)
            assert "Get started" not in await bob.content()
        # Without her link he learns nothing, not even whether a project exists.
        probes = []
        for url in (wrong, wrong.replace("/shop/", "/no-such-project/")):
            r = await bob.goto(url)
            probes.append((r.status, await r.text()))
        assert probes[0] == probes[1] and probes[0][0] == 403, probes
        # A link Alice shares is a capability for the current run: it shows the app
        # but gives Bob nothing of Alice's (nor of his own), and a restart revokes it.
        await bob.goto(f"{hub.url}/user/{hub.bob}/a-page-that-is-not-there")
        frame = await embed_preview(bob, preview)
        await frame.wait_for_selector("h1", timeout=30_000)
        attack = await frame.evaluate(ATTACK, [alice, hub.url, ws_kernel])
        for name in ("kernels", "kernelStart", "contents", "hubUser", "projects"):
            assert attack[name].startswith(("blocked", "401", "403")), (name, attack)
        assert attack["kernelSocket"] in ("error", "closed"), attack
        r = await fetch(
            f"{api}/shop/restart",
            method="POST",
            body=b"",
            headers={"Authorization": f"token {alice_token}"},
        )
        assert r.code == 202
        r = await bob.goto(preview)
        assert r.status == 403


ATTACK = """async ([alice, hub, kernelSocket]) => {
    const get = async (url, init = {}) => {
        try {
            const r = await fetch(url, {credentials: 'include', ...init});
            return `${r.status}`;
        } catch (e) { return `blocked: ${e.name}`; }
    };
    let parentCookie;
    try { parentCookie = parent.document.cookie; } catch (e) { parentCookie = e.name; }
    const socket = await new Promise((resolve) => {
        try {
            const ws = new WebSocket(kernelSocket);
            ws.onopen = () => { ws.close(); resolve('open'); };
            ws.onerror = () => resolve('error');
            ws.onclose = () => resolve('closed');
        } catch (e) { resolve(`blocked: ${e.name}`); }
        setTimeout(() => resolve('timeout'), 10000);
    });
    return {
        cookie: document.cookie,
        parentCookie,
        kernelSocket: socket,
        kernels: await get(alice + 'api/kernels'),
        kernelStart: await get(alice + 'api/kernels', {method: 'POST', body: '{}'}),
        contents: await get(alice + 'api/contents'),
        hubUser: await get(hub + '/hub/api/user'),
        projects: await get(alice + 'reactbox/api/projects'),
    };
}"""


async def login(browser_or_context, hub, user):
    """A page logged in to the hub as ``user`` (a new page of the browser or context)."""
    page = await browser_or_context.new_page()
    await page.goto(f"{hub.url}/hub/login")
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", "pw")
    await page.click("input[type=submit], button[type=submit]")
    await page.wait_for_load_state()
    return page


async def test_a_kernel_in_a_hub_server_finds_it_with_nothing_pasted(hub, tmp_path):
    """A kernel of Alice's single-user server reaches her projects with the hub's
    token from its environment; Bob's token for the same URL is refused."""
    from jupyter_client import BlockingKernelClient

    await hub.ready()
    alice_token = await hub.start_server(hub.alice)
    bob_token = await hub.start_server(hub.bob)
    kernel_id = await hub.start_kernel(hub.alice, alice_token)
    home = tmp_path / "home" / hub.alice
    connection = next(home.rglob(f"kernel-{kernel_id}.json"))
    # One thread of its own drives the kernel (the blocking client runs its own loop).
    pool = concurrent.futures.ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()

    def connect_kernel():
        client = BlockingKernelClient(connection_file=str(connection))
        client.load_connection_file()
        client.start_channels()
        client.wait_for_ready(60)
        return client

    kernel = await loop.run_in_executor(pool, connect_kernel)
    shop_zip = tmp_path / "shop.zip"
    shop_zip.write_bytes(zip_dir(FIXTURES / "vite-react"))

    def run(code: str) -> str:
        out: list[str] = []

        def hook(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        kernel.execute_interactive(code, output_hook=hook, timeout=120)
        return "".join(out)

    try:
        out = await loop.run_in_executor(
            pool,
            run,
            "import os\n"
            "from jupyter_reactbox.kernel.client import connect\n"
            "print(sorted(k for k in os.environ if k.startswith(('JUPYTERHUB_', 'JUPYTER_REACTBOX'))))\n"
            "print(connect().url)",
        )
        assert f"/user/{hub.alice}/" in out.splitlines()[-1], out
        assert "'JUPYTERHUB_API_TOKEN'" in out and "'JUPYTER_REACTBOX_URL'" in out
        out = await loop.run_in_executor(
            pool,
            run,
            f"%load_ext jupyter_reactbox\n%reactbox upload {shop_zip} --name shop --no-wait",
        )
        assert "Uploaded shop" in out, out
        # Without the extension's variable: the hub's own variables are enough.
        out = await loop.run_in_executor(
            pool,
            run,
            "del os.environ['JUPYTER_REACTBOX_URL']\n"
            "c = connect()\nprint(c.url, [p.id for p in c.projects()])",
        )
        assert out.strip().endswith("['shop']"), out
        # Bob's token, pointed at Alice's server, is refused (and learns nothing).
        out = await loop.run_in_executor(
            pool,
            run,
            "from jupyter_reactbox.kernel.client import ReactBoxClient, ReactBoxClientError\n"
            "import os\n"
            f"bob = ReactBoxClient(os.environ['JUPYTERHUB_SERVICE_URL'], {bob_token!r})\n"
            "try:\n    print(bob.check().projects())\n"
            "except ReactBoxClientError as e:\n    print('refused:', e)",
        )
        assert out.startswith("refused:") and "shop" not in out, out
    finally:
        await loop.run_in_executor(pool, kernel.stop_channels)
        pool.shutdown()
