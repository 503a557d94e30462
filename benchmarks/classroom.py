"""A workshop on one hub: N people at once, against one of them alone.

A real JupyterHub (configurable-http-proxy, hub-API-made users whose servers the
simple local-process spawner starts) with the jupyter-reactbox hub service
(Docker), and the scripted model.  First one user goes through the workshop
alone (the baseline); then N users at once, each doing what a workshop does:

  upload     upload the app (half with the lockfile the baseline installed, half a
             new one), until its page renders in a browser context of their own
  hand edit  a change through the files API, until the page shows it (HMR)
  AI edit    an instruction to the scripted model, until the page shows the change
  resume     the preview left alone until it is frozen; then its page loaded again

For each step: p50, p95 and max seconds, errors, and the p95's ratio to the same
step of the user alone; then peak memory in use on the host, peak containers, and
the longest wait in each of the service's lines.  Traffic goes only to this
machine's loopback and the project's own containers; every wait is bounded.

    python benchmarks/classroom.py --users 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import docker
from harness import (
    FIXTURES,
    free_port,
    parse_args,
    pct,
    quiet_interfaces,
    remove_owned,
    unique_manifest,
    zip_dir,
)
from llm import ThreadedLLM
from test_edits import BUTTON, JOIN_NOW, block
from tornado.httpclient import AsyncHTTPClient

from jupyter_reactbox.admission import meminfo
from jupyter_reactbox.backends.docker import LABEL

STEPS = ("upload", "hand edit", "AI edit", "resume")
STEP_TIMEOUT = 600.0
"""Seconds one step of one user may take before it counts as an error."""
RELOAD_AFTER = 30.0
"""Seconds a person waits for a blank page before reloading it."""
MAX_RELOADS = 3
FREEZE = 5.0
"""The service's freeze_timeout: how long a preview is left alone before the resume."""
ROOT = Path(__file__).resolve().parent.parent


async def fetch(url: str, **kw):
    kw.setdefault("request_timeout", STEP_TIMEOUT)
    return await AsyncHTTPClient(max_clients=200).fetch(
        url, raise_error=False, follow_redirects=False, **kw
    )


class ClassHub:
    """A JupyterHub with the reactbox service, as docs/jupyterhub.md sets one up."""

    def __init__(self, tmp: Path, image: str, llm: ThreadedLLM, users: int):
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        self.teacher = f"teacher-{secrets.token_hex(2)}"  # a hub admin, with no server
        self.data_dir = tmp / "reactbox"
        service_port = free_port()
        self.service = f"http://127.0.0.1:{service_port}/services/reactbox/"
        fragment = subprocess.check_output(
            [
                sys.executable,
                "-m",
                "jupyter_reactbox.cli",
                "hub-config",
                f"--url=http://127.0.0.1:{service_port}",
                "--",
                f"--HubService.data_dir={self.data_dir}",
                f"--DockerBackend.image={image}",
                "--DockerBackend.memory_limit=512m",
                "--AIEditor.model=scripted",
                f"--Runtime.freeze_timeout={FREEZE}",
                "--AIEditor.page_check_seconds=0",
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
                c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
                c.JupyterHub.db_url = "sqlite:///{tmp}/hub.sqlite"
                c.JupyterHub.cookie_secret_file = "{tmp}/cookie_secret"
                c.ConfigurableHTTPProxy.pid_file = "{tmp}/proxy.pid"
                c.JupyterHub.authenticator_class = "dummy"
                c.DummyAuthenticator.password = "pw"
                c.Authenticator.allow_all = True
                c.Authenticator.admin_users = {{"{self.teacher}"}}
                c.JupyterHub.spawner_class = "simple"
                c.Spawner.cmd = ["{sys.executable}", "-m", "jupyterhub.singleuser"]
                c.Spawner.args = ["--ServerApp.allow_root=True"]  # hub-API-made users: as root
                c.Spawner.notebook_dir = "{tmp}/homes/{{username}}"
                c.SimpleLocalProcessSpawner.home_dir_template = "{tmp}/homes/{{username}}"
                c.Spawner.start_timeout = 300
                c.Spawner.http_timeout = 300
                c.JupyterHub.concurrent_spawn_limit = {max(users + 1, 100)}
                c.JupyterHub.active_server_limit = 0
                c.JupyterHub.services = [{{"name": "bench", "api_token": "{self.token}"}}]
                c.JupyterHub.load_roles = [{{
                    "name": "bench",
                    "scopes": ["admin:users", "admin:servers", "tokens", "access:servers",
                               "access:services"],
                    "services": ["bench"],
                }}]
                """
            )
            + fragment
        )
        self.log = open(tmp / "hub.log", "wb")
        env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": llm.base_url}
        env["CONFIGPROXY_AUTH_TOKEN"] = secrets.token_hex(16)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(tmp / "jupyterhub_config.py")],
            cwd=tmp,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def api(self, method: str, path: str, body=None, token: str | None = None):
        r = await fetch(
            f"{self.url}/hub/api/{path}",
            method=method,
            body=None if body is None else json.dumps(body),
            headers={"Authorization": f"token {token or self.token}"},
            allow_nonstandard_methods=True,
        )
        return r.code, (json.loads(r.body) if r.body else None)

    async def ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                hub = (await fetch(f"{self.url}/hub/api/", request_timeout=5)).code == 200
                service = (await fetch(self.service + "reactbox/api/projects")).code == 403
                if hub and service:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.5)
        raise RuntimeError("JupyterHub or its reactbox service did not start:\n" + self.logs())

    async def server(self, user: str) -> str:
        """Make ``user``, start their server; a token of theirs."""
        await self.api("POST", f"users/{user}")
        code, _ = await self.api("POST", f"users/{user}/server")
        if code not in (201, 202):
            raise RuntimeError(f"{user}'s server did not start: {code}")
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            _, info = await self.api("GET", f"users/{user}")
            if info["servers"].get("", {}).get("ready"):
                break
            await asyncio.sleep(1)
        else:
            raise RuntimeError(f"{user}'s server did not start in time")
        _, tok = await self.api("POST", f"users/{user}/tokens", {"note": "bench"})
        return tok["token"]

    async def lines(self) -> dict:
        """The service's lines of installs, starts and edits, as a hub admin (the
        teacher, with no server) sees them in its admin view."""
        teacher = self.teacher
        scopes = ["access:services!service=reactbox"]
        await self.api("POST", f"users/{teacher}")
        code, made = await self.api("POST", f"users/{teacher}/tokens", {"scopes": scopes})
        if code not in (200, 201):
            raise RuntimeError(f"no token for the teacher: {code} {made}")
        r = await fetch(
            self.service + "reactbox/admin/previews",
            headers={"Authorization": f"token {made['token']}"},
        )
        return json.loads(r.body)["admission"]

    def logs(self) -> str:
        self.log.flush()
        return (self.tmp / "hub.log").read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
        try:
            os.kill(int((self.tmp / "proxy.pid").read_text()), 9)
        except (OSError, ValueError):
            pass
        self.log.close()


class Student:
    """One user going through the workshop; their times per step, and errors."""

    def __init__(self, hub: ClassHub, name: str, new_lockfile: bool):
        self.hub = hub
        self.name = name
        self.new_lockfile = new_lockfile
        self.times: dict[str, float] = {}
        self.errors: dict[str, str] = {}
        self.reloads = 0
        self.failures: list[str] = []
        """Requests the browser lost (their errors), on the pages that rendered."""

    def api(self, *parts: str) -> str:
        return f"{self.hub.url}/user/{self.name}/reactbox/api/" + "/".join(parts)

    async def call(self, method: str, url: str, body=None, content_type="application/json"):
        r = await fetch(
            url,
            method=method,
            body=body,
            headers={"Authorization": f"token {self.token}", "Content-Type": content_type},
            allow_nonstandard_methods=True,
        )
        if r.code == 429:  # a full line: wait as the clients do
            await asyncio.sleep(float(r.headers.get("Retry-After", "5")))
            return await self.call(method, url, body, content_type)
        if r.code >= 400:
            raise RuntimeError(f"{method} {url}: {r.code} {r.body[:300]!r}")
        return json.loads(r.body) if r.body else None

    async def step(self, name: str, work, *, timed: bool = True) -> None:
        began = time.monotonic()
        try:
            await asyncio.wait_for(work(), STEP_TIMEOUT)
            if timed:
                self.times[name] = time.monotonic() - began
        except Exception as exc:  # counted, and the next steps are not taken
            self.errors[name] = f"{type(exc).__name__}: {exc}"[:300]
            raise

    async def workshop(self, browser) -> None:
        context = await browser.new_context()
        context.set_default_timeout(STEP_TIMEOUT * 1000)
        page = await context.new_page()
        try:
            await self.step("server", self.start_server, timed=False)
            await self.step("login", lambda: self.login(page), timed=False)
            await self.step("upload", lambda: self.upload(page))
            await self.step("hand edit", lambda: self.hand_edit(page))
            await self.step("AI edit", lambda: self.ai_edit(page))
            await self.step("frozen", self.until_frozen, timed=False)
            await self.step("resume", lambda: self.resume(page))
        except Exception:
            pass  # the step said what failed; this user stops there
        finally:
            await context.close()

    async def start_server(self) -> None:
        self.token = await self.hub.server(self.name)

    async def login(self, page) -> None:
        await page.goto(f"{self.hub.url}/hub/login")
        await page.fill("input[name=username]", self.name)
        await page.fill("input[name=password]", "pw")
        await page.click("input[type=submit], button[type=submit]")
        await page.wait_for_load_state()

    async def upload(self, page) -> None:
        extra = unique_manifest(self.name) if self.new_lockfile else None
        data = zip_dir(FIXTURES / "vite-react", extra=extra)
        await self.call("POST", self.api("projects") + "?name=app", data, "application/zip")
        deadline = time.monotonic() + STEP_TIMEOUT
        while (info := await self.call("GET", self.api("projects", "app")))["status"] != "running":
            if info["status"] == "failed" or time.monotonic() > deadline:
                raise RuntimeError(f"did not run: {info['status']} {info['error']}")
            await asyncio.sleep(0.5)
        self.preview = self.hub.url + info["preview_url"]
        await self.rendered(page, "Count is 0", page.goto(self.preview))

    async def hand_edit(self, page) -> None:
        url = self.api("projects", "app", "files", "src/App.jsx")
        r = await fetch(url, headers={"Authorization": f"token {self.token}"})
        text = r.body.decode().replace("Get started", f"Hello {self.name}")
        await self.call("PUT", url, text.encode(), "text/plain")
        await page.get_by_role("heading", name=f"Hello {self.name}").wait_for(
            timeout=STEP_TIMEOUT * 1000
        )

    async def ai_edit(self, page) -> None:
        result = await self.call(
            "POST", self.api("projects", "app", "edits"), json.dumps({"instruction": "Join now"})
        )
        if result["status"] != "applied":
            raise RuntimeError(f"the AI edit: {result['status']}: {result['message']}")
        await page.get_by_role("button", name="Join Now").wait_for(timeout=STEP_TIMEOUT * 1000)

    async def until_frozen(self) -> None:
        """Left alone (the page open, nobody using it) until the service freezes it."""
        deadline = time.monotonic() + FREEZE * 12
        while not (await self.call("GET", self.api("projects", "app")))["frozen"]:
            if time.monotonic() > deadline:
                raise RuntimeError("never frozen")
            await asyncio.sleep(0.5)

    async def resume(self, page) -> None:
        await self.rendered(page, "Join Now", page.reload())

    async def rendered(self, page, button: str, load) -> None:
        """Load the page until the app renders ``button``: as a person does, reload a
        page that shows nothing after ``RELOAD_AFTER`` seconds (a browser on the Docker
        host loses the requests in flight when a container or network is made, and
        the app's modules with them), and count the reloads and the failed requests."""
        failed: list[str] = []

        def lost(request) -> None:
            failed.append(request.failure or "?")

        page.on("requestfailed", lost)
        await load
        for attempt in range(MAX_RELOADS + 1):
            try:
                await page.get_by_role("button", name=button).wait_for(timeout=RELOAD_AFTER * 1000)
                break
            except Exception:
                if attempt == MAX_RELOADS:
                    raise RuntimeError(f"never rendered; failed requests: {failed[:5]}") from None
                self.reloads += 1
                await page.reload()
        self.failures += failed
        page.remove_listener("requestfailed", lost)


class Peaks:
    """Host memory in use and containers, sampled every second."""

    def __init__(self):
        self.memory = 0
        self.containers = 0
        self.client = docker.from_env()

    async def sample(self, owners: set[str]) -> None:
        while True:
            info = meminfo()
            self.memory = max(self.memory, info.get("MemTotal", 0) - info.get("MemAvailable", 0))
            listed = await asyncio.to_thread(
                self.client.api.containers, filters={"label": f"{LABEL}.owner"}
            )
            ours = [c for c in listed if c["Labels"].get(f"{LABEL}.owner") in owners]
            self.containers = max(self.containers, len(ours))
            await asyncio.sleep(1)


async def run_class(hub: ClassHub, students: list[Student], llm: ThreadedLLM) -> None:
    from conftest import CHROMIUM, CHROMIUM_ARGS
    from playwright.async_api import async_playwright

    for _ in students:
        llm.answer(block("src/App.jsx", BUTTON, JOIN_NOW))
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            await asyncio.gather(*(s.workshop(browser) for s in students))
        finally:
            await browser.close()


def report(alone: Student, students: list[Student], peaks: Peaks, lines: dict) -> int:
    print(f"\nA workshop of {len(students)} users on one hub, against one user alone (seconds)")
    print(
        f"{'step':12}{'alone':>8}{'n':>5}{'p50':>8}{'p95':>8}{'max':>8}{'errors':>8}{'p95/alone':>11}"
    )
    lost = 0
    for step in STEPS:
        times = [s.times[step] for s in students if step in s.times]
        errors = sum(step in s.errors for s in students)
        lost += errors
        base = alone.times.get(step)
        if not times:
            print(f"{step:12}{base or 0:>8.2f}{0:>5}{'-':>8}{'-':>8}{'-':>8}{errors:>8}")
            continue
        ratio = f"{pct(times, 95) / base:>10.1f}x" if base else "-"
        print(
            f"{step:12}{base or 0:>8.2f}{len(times):>5}{pct(times, 50):>8.2f}"
            f"{pct(times, 95):>8.2f}{max(times):>8.2f}{errors:>8}{ratio:>11}"
        )
    for s in students:
        for step, error in s.errors.items():
            print(f"  {s.name} {step}: {error}")
            lost += step not in STEPS  # a server or a login that failed
    lost_requests = Counter(f for s in students for f in s.failures)
    print(
        f"pages reloaded because they rendered nothing in {RELOAD_AFTER:.0f} s: "
        f"{sum(s.reloads for s in students)}; requests the browser lost: "
        + (", ".join(f"{n} x {e}" for e, n in lost_requests.most_common()) or "none")
    )
    print(f"peak memory in use on the host: {peaks.memory >> 20} MiB")
    print(f"peak containers (previews, and spares for next starts): {peaks.containers}")
    for kind in ("install", "start", "edit"):
        line = lines[kind]
        print(
            f"longest wait to {kind}: {line['longest_wait']:.1f} s "
            f"(at most {line['limit']} at once)"
        )
    return 1 if lost or alone.errors else 0


async def main(args) -> int:
    image = os.environ.get("REACTBOX_IMAGE", "jupyter-reactbox-sandbox:0.1.0")
    if not shutil.which("configurable-http-proxy"):
        raise SystemExit("needs configurable-http-proxy: npm install -g configurable-http-proxy")
    tmp = Path(tempfile.mkdtemp(prefix="reactbox-class-"))
    llm = ThreadedLLM()
    llm.start()
    hub = ClassHub(tmp, image, llm, args.users)
    suffix = secrets.token_hex(2)
    names = [f"s{n:02d}-{suffix}" for n in range(args.users)]
    peaks = Peaks()
    sampler = None
    try:
        with quiet_interfaces():
            await hub.ready()
            alone = Student(hub, f"alone-{suffix}", new_lockfile=False)
            await run_class(hub, [alone], llm)
            if alone.errors:
                print("the user alone failed:", alone.errors, hub.logs())
                return 1
            students = [Student(hub, n, new_lockfile=i % 2 == 1) for i, n in enumerate(names)]
            sampler = asyncio.ensure_future(peaks.sample(set(names)))
            await run_class(hub, students, llm)
            lines = await hub.lines()
        return report(alone, students, peaks, lines)
    except Exception:
        print(hub.logs(), file=sys.stderr)
        raise
    finally:
        if sampler is not None:
            sampler.cancel()
        hub.stop()
        client = docker.from_env()
        for name in [f"alone-{suffix}", *names]:
            remove_owned(client, name)
        llm.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=30)
    sys.exit(asyncio.run(main(parse_args(parser))))
