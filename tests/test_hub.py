"""Under a real JupyterHub (configurable-http-proxy, the local-process spawner),
set up as `docs/jupyterhub.md` says: the hub runs as root, with the
configuration that `jupyter reactbox hub-config` prints; Alice and Bob are
Unix users made for the test (not root, not in the `docker` group), whose
servers run as themselves from a system-wide environment.  The service holds
the engine and the AI key (in the hub's environment, passed to it alone); the
users' servers relay to it.

`jupyterhub-singleuser` sends `Content-Security-Policy: frame-ancestors 'none'`
on every handler by default; a preview must still appear in a frame on the
user's own pages, and must not open any door into the user's server or the hub.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import os
import pwd
import secrets
import shutil
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
from conftest import (
    ARTIFACTS,
    FIXTURES,
    app_of,
    chromium,
    embed_preview,
    free_port,
    remove_owned,
    zip_dir,
)
from llm import ThreadedLLM
from test_attacks import FORK_BOMB, MEMORY_BOMB
from test_edits import BUTTON, JOIN_NOW, block
from test_mcp import call, over_http, refused
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_reactbox.backends import hostguard
from jupyter_reactbox.backends.docker import PORT

pytestmark = [pytest.mark.docker, pytest.mark.browser, pytest.mark.hub]

ROOT = Path(__file__).parent.parent


async def fetch(url, **kw):
    kw.setdefault("request_timeout", 60)
    return await AsyncHTTPClient().fetch(url, raise_error=False, follow_redirects=False, **kw)


def add_user(name: str) -> None:
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    groups = subprocess.check_output(["id", "-Gn", name], text=True).split()
    assert "docker" not in groups and pwd.getpwnam(name).pw_uid != 0


def remove_user(name: str) -> None:
    subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
    subprocess.run(["userdel", "--remove", name], capture_output=True)


LIMIT = ("--Runtime.max_running=1",)
"""Each user's previews at once on the test hubs, unless a test says otherwise."""
DOCKER_ARGS = ("--DockerBackend.pids_limit=128", "--DockerBackend.memory_limit=256m")


class Hub:
    def __init__(
        self,
        tmp: Path,
        python: Path,
        image: str,
        llm: ThreadedLLM,
        service_args: tuple[str, ...] = DOCKER_ARGS,
    ):
        self.tmp = tmp
        self.python = python
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        self.ai_key = f"sk-test-{secrets.token_hex(20)}"
        self.llm = llm
        suffix = secrets.token_hex(3)
        self.alice, self.bob = f"alice-{suffix}", f"bob-{suffix}"
        self.admin = f"admin-{suffix}"  # a hub admin, with no server of their own
        for user in (self.alice, self.bob):
            add_user(user)
        self.data_dir = tmp / "reactbox"
        self.proxy_api = f"http://127.0.0.1:{free_port()}"
        self.proxy_token = secrets.token_hex(16)
        self.service_port = free_port()
        self.service = f"http://127.0.0.1:{self.service_port}/services/reactbox/"
        fragment = subprocess.check_output(
            [
                str(python),
                "-m",
                "jupyter_reactbox.cli",
                "hub-config",
                f"--url=http://127.0.0.1:{self.service_port}",
                "--",
                f"--HubService.data_dir={self.data_dir}",
                f"--DockerBackend.image={image}",
                "--AIEditor.model=scripted",
                *(() if any("max_running=" in a for a in service_args) else LIMIT),
                *service_args,
            ],
            text=True,
        )
        (tmp / "jupyterhub_config.py").write_text(
            textwrap.dedent(
                f"""
                c.JupyterHub.ip = "127.0.0.1"
                c.JupyterHub.port = {self.port}
                c.JupyterHub.hub_ip = "127.0.0.1"
                c.JupyterHub.hub_port = {free_port()}
                c.ConfigurableHTTPProxy.api_url = "{self.proxy_api}"
                c.JupyterHub.db_url = "sqlite:///{tmp}/hub.sqlite"
                c.JupyterHub.cookie_secret_file = "{tmp}/cookie_secret"
                c.ConfigurableHTTPProxy.pid_file = "{tmp}/proxy.pid"
                c.JupyterHub.authenticator_class = "dummy"
                c.DummyAuthenticator.password = "pw"
                c.Authenticator.allowed_users = {{"{self.alice}", "{self.bob}", "{self.admin}"}}
                c.Authenticator.admin_users = {{"{self.admin}"}}
                c.JupyterHub.spawner_class = "localprocess"
                c.Spawner.cmd = ["{python}", "-m", "jupyterhub.singleuser"]
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
            + fragment
        )
        self.log = open(tmp / "hub.log", "wb")
        # The AI settings are the hub's: its environment, which no user can read.
        env = {**os.environ, "OPENAI_API_KEY": self.ai_key, "OPENAI_BASE_URL": llm.base_url}
        env["CONFIGPROXY_AUTH_TOKEN"] = self.proxy_token
        self.proc = subprocess.Popen(
            [str(python), "-m", "jupyterhub", "-f", str(tmp / "jupyterhub_config.py")],
            cwd=tmp,
            env=env,
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

    async def ready(self, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                hub = (await fetch(f"{self.url}/hub/api/")).code == 200
                service = (await fetch(self.service + "reactbox/api/projects")).code == 403
                if hub and service:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.5)
        raise AssertionError("JupyterHub or its reactbox service did not start:\n" + self.logs())

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

    async def server_origin(self, user: str) -> str:
        """Where ``user``'s server listens, past the hub's proxy (from its routes)."""
        r = await fetch(
            f"{self.proxy_api}/api/routes",
            headers={"Authorization": f"token {self.proxy_token}"},
        )
        return json.loads(r.body)[f"/user/{user}"]["target"]

    def service_pid(self) -> int | None:
        """The pid of this hub's reactbox service, if it runs."""
        mine = f"--HubService.data_dir={self.data_dir}".encode()
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = cmdline.read_bytes().split(b"\0")
            except OSError:
                continue
            if b"jupyter_reactbox.hub.service" in argv and mine in argv:
                return int(cmdline.parent.name)
        return None

    async def restart_service(self, timeout: float = 90) -> None:
        """SIGTERM the service, then wait until the hub has started it again (the hub
        looks at its services every 30 s)."""
        old = await asyncio.to_thread(self.service_pid)
        assert old is not None, self.logs()
        os.kill(old, 15)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = await asyncio.to_thread(self.service_pid)
            if new not in (None, old):
                try:
                    if (await fetch(self.service + "reactbox/api/projects")).code == 403:
                        return
                except OSError:
                    pass
            await asyncio.sleep(0.5)
        raise AssertionError("The hub did not start its service again:\n" + self.logs())

    def logs(self) -> str:
        self.log.flush()
        return (self.tmp / "hub.log").read_text(errors="replace")[-8000:]

    def stop(self):
        os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
        try:  # the proxy outlives a hub that did not stop cleanly
            os.kill(int((self.tmp / "proxy.pid").read_text()), 9)
        except (OSError, ValueError):
            pass
        self.log.close()
        for user in (self.alice, self.bob):
            remove_user(user)


@pytest.fixture
def hub(tmp_path, hub_python, sandbox_image, docker_client, hub_llm, request):
    if not shutil.which("configurable-http-proxy"):
        pytest.fail(
            "These tests need configurable-http-proxy: npm install -g configurable-http-proxy"
        )
    h = Hub(tmp_path, hub_python, sandbox_image, hub_llm)
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

    await upload(hub, hub.alice, alice_token, "shop")
    info = await settled(hub, hub.alice, alice_token, "shop")
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

    # A preview path is relayed with the server's hub token: one that climbs out of
    # the preview paths must reach nothing of Alice's.  (The hub's proxy resolves
    # dots, plain or encoded, before her server; her server refuses any it gets.)
    for climb in ("../../../services/reactbox/reactbox/api/projects", "x/%2e%2e/%2e%2e/%2fapi"):
        r = await fetch(f"{alice}reactbox/preview/{climb}")
        assert r.code in (302, 400, 403, 404), (climb, r.code)
        assert b"shop" not in (r.body or b""), (climb, r.body)
        # Sent to her server itself, past the hub's proxy, the path is refused there.
        r = await fetch(
            await hub.server_origin(hub.alice) + f"/user/{hub.alice}/reactbox/preview/{climb}"
        )
        assert r.code == 400, (climb, r.code, r.body)

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

        # An AI edit, made by the service with the hub's key: applied, hot-reloaded
        # in her page, and undone.
        alice_auth = {"Authorization": f"token {alice_token}"}
        await frame.evaluate("window.__reactbox_marker = 42")  # gone if the page reloads
        hub.llm.answer(block("src/App.jsx", BUTTON, JOIN_NOW))
        r = await fetch(
            f"{api}/shop/edits",
            method="POST",
            body=json.dumps({"instruction": "Make the button say Join Now"}),
            headers=alice_auth,
        )
        assert r.code == 200 and json.loads(r.body)["status"] == "applied", r.body
        assert hub.llm.requests[-1]["authorization"] == f"Bearer {hub.ai_key}"
        await frame.wait_for_selector("text=Join Now", timeout=15_000)
        assert await frame.evaluate("window.__reactbox_marker") == 42  # hot, not reloaded
        r = await fetch(f"{api}/shop/undo", method="POST", body=b"", headers=alice_auth)
        assert r.code == 200, r.body
        await frame.wait_for_selector("text=Count is 0", timeout=15_000)

        # The service stops (an upgrade, a crash) and the hub starts it again: the
        # preview was left running, is re-attached, and its link still works.
        await hub.restart_service()
        again = json.loads((await fetch(f"{api}/shop", headers=alice_auth)).body)
        assert (again["status"], again["preview_url"]) == ("running", info["preview_url"])
        reopened = await browser.new_page()  # the link alone opens it
        await reopened.goto(preview)
        await reopened.wait_for_selector("text=Count is 0", timeout=30_000)
        await reopened.close()

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


async def share_with_bob(hub, project: str, auth: dict, alice_token: str, bob) -> None:
    """Alice shares a snapshot of ``project`` with Bob alone: he opens it logged in as
    himself; the admin (not named) gets the 404 of a link that never was, and so
    does anyone once it is revoked or expired; Bob's kernel reaches the published
    files and nothing else of hers."""
    body = json.dumps({"users": [hub.bob], "days": 1})
    r = await fetch(f"{project}/shares", method="POST", headers=auth, body=body)
    assert r.code == 202, r.body
    shared = json.loads(r.body)
    shares = project.split("/projects/")[0] + "/shares"
    for _ in range(240):
        if shared["status"] != "building":
            break
        await asyncio.sleep(0.5)
        shared = json.loads((await fetch(f"{shares}/{shared['id']}", headers=auth)).body)
    assert shared["status"] == "live", shared
    assert shared["url"] == f"/services/reactbox/reactbox/shared/{shared['id']}/"
    assert hub.alice not in shared["url"] and alice_token not in shared["url"]
    assert (shared["owner"], shared["users"]) == (hub.alice, [hub.bob])
    link = hub.url + shared["url"]
    never = f"{hub.url}/services/reactbox/reactbox/shared/{'x' * 24}/"
    # With no login, both links go to the hub's login alike (nothing said of either).
    for url in (link, never):
        r = await fetch(url, headers={"Sec-Fetch-Mode": "navigate"})
        assert r.code == 302 and "/hub/api/oauth2/authorize" in r.headers["Location"], url
    # A share names nobody's server: Bob's kernel lists none of hers.
    out = await bob.run(
        "import os, requests\n"
        "auth = {'Authorization': 'token ' + os.environ['JUPYTERHUB_API_TOKEN']}\n"
        f"print(requests.get({hub.service!r} + 'reactbox/api/shares', headers=auth).json())\n"
        f"print(requests.get({hub.service!r} + 'reactbox/api/shares/{shared['id']}', "
        "headers=auth).status_code)"
    )
    assert out.strip().splitlines() == ["{'shares': []}", "404"], out
    async with chromium() as browser:
        viewer = await login(await browser.new_context(), hub, hub.bob)
        r = await viewer.goto(link)
        assert r.status == 200 and viewer.url == link, viewer.url
        await viewer.wait_for_selector("h1", timeout=30_000)
        assert await viewer.inner_text("h1") == "From the drive"
        assert await viewer.evaluate("self.origin") == "null"
        attack = await viewer.evaluate(
            """async (urls) => { const out = {};
                 for (const url of urls) { try { const r = await fetch(url, {credentials: 'include'});
                   out[url] = `${r.status}`; } catch (e) { out[url] = `blocked: ${e.name}`; } }
                 return out; }""",
            [f"{hub.url}/hub/api/user", f"{hub.url}/user/{hub.alice}/reactbox/api/projects",
             f"{hub.url}/user/{hub.bob}/api/kernels", hub.service + "reactbox/api/projects"],
        )  # fmt: skip
        assert all(v.startswith(("blocked", "403", "401", "302")) for v in attack.values()), attack
        other = await login(await browser.new_context(), hub, hub.admin)
        seen = []
        for url in (link, never):
            r = await other.goto(url)
            seen.append((r.status, await r.text()))
        assert seen[0] == seen[1] and seen[0][0] == 404, seen
        # Revoked: Bob too gets the 404 of a link that never was.
        r = await fetch(f"{shares}/{shared['id']}", method="DELETE", headers=auth)
        assert r.code == 204
        r = await viewer.goto(link)
        assert (r.status, await r.text()) == seen[1]
        # Expired: the same.
        body = json.dumps({"users": [hub.bob], "days": 3 / 86400})
        brief = json.loads(
            (await fetch(f"{project}/shares", method="POST", headers=auth, body=body)).body
        )
        for _ in range(240):
            if brief["status"] != "building":
                break
            await asyncio.sleep(0.5)
            brief = json.loads((await fetch(f"{shares}/{brief['id']}", headers=auth)).body)
        await asyncio.sleep(max(0.0, brief["expires"] - time.time()) + 0.5)
        r = await viewer.goto(hub.url + brief["url"])
        assert (r.status, await r.text()) == seen[1]


class Kernel:
    """A kernel of a user's server, driven from this test (as root) on a thread of
    its own: the blocking client runs its own loop."""

    def __init__(self, connection: Path):
        from jupyter_client import BlockingKernelClient

        self.pool = concurrent.futures.ThreadPoolExecutor(1)
        self.client = BlockingKernelClient(connection_file=str(connection))

    async def start(self) -> Kernel:
        def connect():
            self.client.load_connection_file()
            self.client.start_channels()
            self.client.wait_for_ready(60)

        await asyncio.get_running_loop().run_in_executor(self.pool, connect)
        return self

    async def run(self, code: str) -> str:
        def run() -> str:
            out: list[str] = []

            def hook(msg):
                if msg["msg_type"] == "stream":
                    out.append(msg["content"]["text"])
                elif msg["msg_type"] == "error":
                    out.append("\n".join(msg["content"]["traceback"]))

            self.client.execute_interactive(code, output_hook=hook, timeout=120)
            return "".join(out)

        return await asyncio.get_running_loop().run_in_executor(self.pool, run)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.pool, self.client.stop_channels)
        self.pool.shutdown()


async def kernel_of(hub, user: str, token: str) -> Kernel:
    kernel_id = await hub.start_kernel(user, token)
    home = Path(pwd.getpwnam(user).pw_dir)
    found = await asyncio.to_thread(lambda: next(home.rglob(f"kernel-{kernel_id}.json")))
    return await Kernel(found).start()


# Run in a user's kernel: every place a process of theirs can read that holds
# ``needle``: the environment and command line of each process it may open, the
# files it can read under ``roots``, and those at the top of /tmp and /var/tmp.
FIND = """
import glob, os
def find(needle, roots):
    roots = [*roots, *(p for p in glob.glob('/tmp/*') + glob.glob('/var/tmp/*') if os.path.isfile(p))]
    found = []
    for proc in glob.glob('/proc/[0-9]*'):
        for name in ('environ', 'cmdline'):
            try:
                with open(f'{proc}/{name}', 'rb') as f:
                    if needle in f.read():
                        found.append(f'{proc}/{name}')
            except OSError:
                pass
    for root in roots:
        if os.path.isfile(root):
            try:
                if needle in open(root, 'rb').read(8 << 20):
                    found.append(root)
            except OSError:
                pass
        for folder, _, files in os.walk(root):
            for name in files:
                path = os.path.join(folder, name)
                try:
                    if os.path.getsize(path) < 8 << 20 and needle in open(path, 'rb').read():
                        found.append(path)
                except OSError:
                    pass
    return found
"""


def http_status(url: str) -> int:
    """The HTTP status ``url`` answers with (any answer: the address is reachable)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def settled(hub, user: str, token: str, project: str) -> dict:
    """The project's JSON once it no longer installs or starts."""
    url = f"{hub.url}/user/{user}/reactbox/api/projects/{project}"
    for _ in range(480):
        info = json.loads((await fetch(url, headers={"Authorization": f"token {token}"})).body)
        if info["status"] not in ("installing", "starting"):
            return info
        await asyncio.sleep(0.25)
    raise AssertionError(f"{user}'s {project} is still starting: {info}")


def dev_server(docker_client, user: str, project: str):
    """The run container of ``user``'s ``project`` (in the service's store for them)."""
    [container] = docker_client.containers.list(
        all=True, filters={"name": f"^/reactbox-{user}-[a-z0-9]{{6}}-{project}$"}
    )
    return container


async def running_dev_server(hub, token: str, docker_client) -> str:
    """host:port of Alice's running dev server of ``shop``, once it runs."""
    info = await settled(hub, hub.alice, token, "shop")
    assert info["status"] == "running", info
    container = await asyncio.to_thread(dev_server, docker_client, hub.alice, "shop")
    (network,) = container.attrs["NetworkSettings"]["Networks"].values()
    return f"{network['IPAddress']}:{PORT}"


async def upload(hub, user: str, token: str, name: str) -> None:
    r = await fetch(
        f"{hub.url}/user/{user}/reactbox/api/projects?name={name}",
        method="POST",
        body=zip_dir(FIXTURES / "vite-react"),
        headers={"Authorization": f"token {token}", "Content-Type": "application/zip"},
    )
    assert r.code == 201, r.body


async def test_a_kernel_in_a_hub_server_finds_it_and_nothing_of_anyone_else(
    hub, tmp_path, docker_client
):
    """A kernel of Alice's server reaches her projects with the hub's token from its
    environment.  From Bob's kernel: the engine's socket is unusable, Alice's files
    cannot be read, the service answers his token on her project as on one that does
    not exist, and the AI key is nowhere either of them can read."""
    await hub.ready()
    alice_token = await hub.start_server(hub.alice)
    bob_token = await hub.start_server(hub.bob)
    alice = await kernel_of(hub, hub.alice, alice_token)
    bob = await kernel_of(hub, hub.bob, bob_token)
    shop_zip = Path(pwd.getpwnam(hub.alice).pw_dir) / "shop.zip"
    shop_zip.write_bytes(zip_dir(FIXTURES / "vite-react"))
    try:
        out = await alice.run(
            "import os\n"
            "from jupyter_reactbox.kernel.client import connect\n"
            "print(sorted(k for k in os.environ if k.startswith(('JUPYTERHUB_', 'JUPYTER_REACTBOX'))))\n"
            "print(connect().url)",
        )
        assert f"/user/{hub.alice}/" in out.splitlines()[-1], out
        assert "'JUPYTERHUB_API_TOKEN'" in out and "'JUPYTER_REACTBOX_URL'" in out
        out = await alice.run(
            f"%load_ext jupyter_reactbox\n%reactbox upload {shop_zip} --name shop --no-wait"
        )
        assert "Uploaded shop" in out, out
        # Without the extension's variable: the hub's own variables are enough.
        out = await alice.run(
            "del os.environ['JUPYTER_REACTBOX_URL']\n"
            "c = connect()\nprint(c.url, [p.id for p in c.projects()])",
        )
        assert out.strip().endswith("['shop']"), out
        # Events (streamed through the relay), logs, files and data, as on a laptop.
        out = await alice.run(
            "p = c.project('shop').wait('running', timeout=300)\n"
            "print(p.status, 'VITE' in p.logs())\n"
            "print(p.publish('sales', {'q1': 3}), 'function App' in p.read('src/App.jsx'))"
        )
        lines = out.strip().splitlines()
        assert lines[0] == "running True" and lines[1].endswith("True"), out
        shop = app_of(next(hub.data_dir.glob("users/*/projects")), "shop") / "src" / "App.jsx"

        # The bridge, through her server's relay to the service: her kernel exposes,
        # the page's socket (no credential but the preview's path) calls and hears.
        out = await alice.run(
            "p.expose(lambda a, b: a + b, name='add')\n"
            "p.send('greeting', {'to': 'alice'})\nprint(p.bridge)"
        )
        assert "connected: exposes ['add']" in out, out
        preview = hub.url + (await settled(hub, hub.alice, alice_token, "shop"))["preview_url"]
        page = await websocket_connect(
            HTTPRequest(preview.replace("http", "ws", 1) + "__reactbox/bridge",
                        headers={"Origin": "null"})
        )  # fmt: skip
        heard = [await page.read_message()]  # hello, then what the kernel sent
        while not heard[-1].startswith('{"t":"value"'):
            heard.append(await asyncio.wait_for(page.read_message(), 10))
        assert heard[-1] == '{"t":"value","name":"greeting"}\n{"to": "alice"}', heard
        assert json.loads(heard[-2])["functions"] == ["add"], heard
        page.write_message('{"t":"call","id":7,"name":"add"}\n[2, 3]')
        assert await page.read_message() == '{"t":"result","id":7,"ok":true}\n5'
        # Bob's kernel cannot take her project's bridge: to him it does not exist.
        out = await bob.run(
            "from jupyter_reactbox.kernel.client import connect\n"
            "from jupyter_reactbox.kernel.bridge import KernelBridge\n"
            "try:\n    KernelBridge(connect(), 'shop').expose(print)\n"
            "except Exception as e:\n    print(e)"
        )
        assert "No project 'shop'" in out, out
        page.close()

        # The files as the ReactBox drive of her JupyterLab asks for them, through her
        # server to the service (the files are not on her server): a version per file,
        # a stale save refused, a folder, a rename and a delete, each on the timeline.
        files = f"{hub.url}/user/{hub.alice}/reactbox/api/projects/shop/files"
        auth = {"Authorization": f"token {alice_token}"}
        r = await fetch(f"{files}/src/App.jsx", headers=auth)
        assert r.code == 200 and r.headers["ETag"], r.code
        opened = r.headers["ETag"]
        stat = json.loads((await fetch(f"{files}/src/App.jsx?stat=1", headers=auth)).body)
        assert stat["type"] == "file" and f'"{stat["version"]}"' == opened
        saved = r.body.replace(b"Get started", b"From the drive")
        put = {"method": "PUT", "headers": {**auth, "Content-Type": "text/plain"}}
        r = await fetch(f"{files}/src/App.jsx?from=editor", body=saved,
                        **{**put, "headers": {**put["headers"], "If-Match": opened}})  # fmt: skip
        assert r.code == 200, r.body
        r = await fetch(f"{files}/src/App.jsx", body=b"stale",
                        **{**put, "headers": {**put["headers"], "If-Match": opened}})  # fmt: skip
        assert r.code == 409 and b"changed since you opened it" in r.body

        # Her app leaves with her, through her server: its source as it is now, and
        # a production build (in the service's sandbox).
        project = files.removesuffix("/files")
        r = await fetch(f"{project}/export", headers=auth)
        assert r.code == 200, r.body
        assert b"From the drive" in zipfile.ZipFile(io.BytesIO(r.body)).read("shop/src/App.jsx")
        r = await fetch(f"{project}/builds", method="POST", headers=auth, body="{}")
        assert r.code == 202, r.body
        built = json.loads(r.body)
        for _ in range(240):
            if built["status"] != "building":
                break
            await asyncio.sleep(0.5)
            r = await fetch(f"{project}/builds/{built['id']}", headers=auth)
            built = json.loads(r.body)
        assert built["status"] == "ready", built
        r = await fetch(f"{project}/builds/{built['id']}/zip", headers=auth)
        assert "index.html" in zipfile.ZipFile(io.BytesIO(r.body)).namelist()
        await share_with_bob(hub, project, auth, alice_token, bob)

        r = await fetch(f"{files}/src/parts?type=directory", body=b"", **put)
        assert r.code == 201, r.body
        r = await fetch(f"{files}/src/App.css", method="PATCH", headers=auth,
                        body=json.dumps({"path": "src/parts/App.css"}))  # fmt: skip
        assert r.code == 200, r.body
        r = await fetch(f"{files}/src/parts", method="DELETE", headers=auth)
        assert r.code == 200, r.body
        history = json.loads((await fetch(files.replace("/files", "/history"), headers=auth)).body)[
            "commits"
        ]
        assert [c["kind"] for c in history[:3]] == ["hand-edit", "hand-edit", "editor-save"]
        home = Path(pwd.getpwnam(hub.alice).pw_dir)
        found = await asyncio.to_thread(lambda: list(home.rglob("App.css")))
        assert not found, "the files are the service's, not her server's"

        # Bob's own server and the service itself answer his token on Alice's
        # project exactly as on a project that does not exist.
        out = await bob.run(
            "import os, requests\n"
            "auth = {'Authorization': 'token ' + os.environ['JUPYTERHUB_API_TOKEN']}\n"
            f"for base in ({hub.service!r}, os.environ['JUPYTER_REACTBOX_URL']):\n"
            "    for name in ('shop', 'no-such-project'):\n"
            "        r = requests.get(f'{base}reactbox/api/projects/{name}', headers=auth)\n"
            "        print(r.status_code, r.json()['message'].replace(name, 'NAME'))\n"
        )
        lines = out.strip().splitlines()
        assert len(lines) == 4 and lines[0] == lines[1] and lines[2] == lines[3], out
        assert lines[0].startswith("404"), out

        # So do the MCP tools, for an agent with his token: at the service through the
        # hub, and at his own server.  Alice's token sees her project at both.
        mcp_urls = {
            user: (f"{hub.url}/services/reactbox/reactbox/mcp",
                   f"{hub.url}/user/{user}/reactbox/mcp")
            for user in (hub.alice, hub.bob)
        }  # fmt: skip
        for url in mcp_urls[hub.alice]:
            async with over_http(url, alice_token) as session:
                assert "shop" in [p["id"] for p in await call(session, "list_projects")]
        for url in mcp_urls[hub.bob]:
            async with over_http(url, bob_token) as session:
                assert "shop" not in [p["id"] for p in await call(session, "list_projects")]
                said = [
                    (await refused(session, "read_file", project=name, path="src/App.jsx")).replace(
                        name, "NAME"
                    )
                    for name in ("shop", "no-such-project")
                ]
                assert said[0] == said[1] and "No project 'NAME'" in said[0], said
        async with over_http(mcp_urls[hub.bob][0], bob_token) as session:
            said = await refused(session, "upload", name="x", folder="/home")
            assert "cannot read folders" in said, said

        # The engine's socket, and Alice's files: each refused.
        out = await bob.run(
            "import socket\n"
            "for attempt in (\n"
            "    lambda: socket.socket(socket.AF_UNIX).connect('/var/run/docker.sock'),\n"
            f"    lambda: open({str(shop)!r}).read(),\n"
            f"    lambda: os.listdir({str(hub.data_dir)!r} + '/users'),\n"
            "):\n"
            "    try:\n        attempt(); print('ok')\n"
            "    except OSError as e:\n        print(type(e).__name__)\n"
        )
        assert out.split() == ["PermissionError"] * 3, out
        assert shop.read_text()  # it is there, for root

        # Alice's dev server, at its address on the engine's network: open to the
        # service's user (root, here the test), refused to Bob's kernel.
        address = await running_dev_server(hub, alice_token, docker_client)
        assert await asyncio.to_thread(http_status, f"http://{address}/") > 0
        probe = (
            "import urllib.request, urllib.error\n"
            f"try:\n    urllib.request.urlopen('http://{address}/', timeout=5); print('ok')\n"
            "except urllib.error.HTTPError:\n    print('ok')\n"
            "except OSError as e:\n    print('refused', e)\n"
        )
        out = await bob.run(probe)
        assert out.startswith("refused"), out
        # Without the service's firewall rule, the same probe gets through.
        networks = docker_client.networks.list(names=[f"reactbox-{hub.alice}-"])
        previews = [n for n in networks if n.name.endswith("-previews")]
        assert len(previews) == 1, [n.name for n in networks]
        network = previews[0]
        network.reload()
        (subnet,) = (config["Subnet"] for config in network.attrs["IPAM"]["Config"])
        hostguard.unguard(subnet, network.name)
        try:
            assert (await bob.run(probe)).startswith("ok")
        finally:
            hostguard.guard(subnet, network.name)

        # Bob holds to his own limit (one preview on this hub): a second stops his first.
        for name in ("shop", "blog"):
            await upload(hub, hub.bob, bob_token, name)
            assert (await settled(hub, hub.bob, bob_token, name))["status"] == "running"
        first = await settled(hub, hub.bob, bob_token, "shop")
        assert (first["status"], first["detail"]) == ("stopped", "Stopped to make room for blog.")

        # Bombs in Bob's preview: they stop at his container's limits, and Alice's
        # preview answers throughout.
        alice_preview = (
            hub.url + (await settled(hub, hub.alice, alice_token, "shop"))["preview_url"]
        )
        bombed = await asyncio.to_thread(dev_server, docker_client, hub.bob, "blog")
        slowest = 0.0

        async def bomb(command: str):
            nonlocal slowest
            going = asyncio.ensure_future(asyncio.to_thread(bombed.exec_run, ["sh", "-c", command]))
            while not going.done():
                began = time.monotonic()
                r = await fetch(alice_preview, headers={"Accept": "text/html"}, request_timeout=10)
                assert r.code == 200, r.code
                slowest = max(slowest, time.monotonic() - began)
                await asyncio.sleep(0.1)
            return await going

        forked = await bomb(FORK_BOMB)
        ate = await bomb(MEMORY_BOMB)
        assert b"fork" in forked.output or b"unavailable" in forked.output, forked
        assert ate.exit_code == 137, ate  # the OOM killer, inside Bob's container
        print(f"Alice's preview answered in at most {slowest:.2f} s during Bob's bombs")

        # A hub admin sees every user's previews and stops one; Bob may not.
        # (admin_users are made by the hub at its start)
        code, made = await hub.api("POST", f"users/{hub.admin}/tokens", {"note": "test"})
        assert code in (200, 201), made
        admin = {"Authorization": f"token {made['token']}"}
        overview = f"{hub.service}reactbox/admin/previews"
        r = await fetch(overview, headers={"Authorization": f"token {bob_token}"})
        assert r.code == 403
        listed = json.loads((await fetch(overview, headers=admin)).body)["users"]
        mine = {u["user"]: {p["id"]: p["status"] for p in u["projects"]} for u in listed}
        assert mine[hub.alice] == {"shop": "running"}, listed
        action = {"user": hub.alice, "project": "shop", "action": "stop"}
        r = await fetch(overview, method="POST", body=json.dumps(action), headers=admin)
        assert r.code == 204, r.body
        shop_api = f"{hub.url}/user/{hub.alice}/reactbox/api/projects/shop"
        r = await fetch(shop_api, headers={"Authorization": f"token {alice_token}"})
        assert json.loads(r.body)["detail"] == "Stopped by a hub admin."

        # The AI key: nowhere either user can read.  The search can tell: it finds
        # the user's own server token in their server's environment.
        for kernel in (alice, bob):
            await kernel.run(FIND)
            own = await kernel.run(
                "print(find(os.environ['JUPYTERHUB_API_TOKEN'].encode(), []) != [])"
            )
            assert own.strip() == "True", own
            # (Sent reversed: the kernel's own history must not hold it either.)
            out = await kernel.run(
                f"key = {hub.ai_key[::-1]!r}[::-1]\n"
                f"roots = [os.path.expanduser('~'), {str(hub.data_dir)!r}]\n"
                "print(find(key.encode(), roots) + [k for k, v in os.environ.items() if key in v])"
            )
            assert out.strip() == "[]", out
    finally:
        await alice.close()
        await bob.close()
