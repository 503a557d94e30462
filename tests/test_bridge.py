"""The app and its notebook, both ways: a real server, a real kernel it started, the
app's dev server, and chromium showing the preview in a frame (as the widget and
the Lab panel do) and in a tab of its own.  Then attacks on the bridge from inside
the preview: nothing the notebook did not expose reaches the kernel, and the
server keeps answering."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from urllib.parse import urljoin

import pytest
from conftest import (
    ARTIFACTS,
    FIXTURES,
    JupyterProcess,
    chromium,
    embed_preview,
    start_lab,
    zip_dir,
)
from test_notebook import NOTEBOOKS, Kernel

pytestmark = [pytest.mark.docker, pytest.mark.browser]

APP = FIXTURES / "bridge-app"
SETUP = """
import pandas as pd
from jupyter_reactbox.kernel.client import connect
shop = connect().project("prices")
picked = []

@shop.expose
def total(prices):
    print("summing", len(prices))
    return sum(prices)

@shop.expose
def fail(x):
    raise ValueError(f"bad {x}")

running, peak = {"slow": 0, "nap": 0}, {"slow": 0, "nap": 0}

def sleeper(name):
    def sleep(seconds):
        import time
        running[name] += 1
        peak[name] = max(peak[name], running[name])
        time.sleep(seconds)
        running[name] -= 1
        return seconds
    return sleep

shop.expose(sleeper("slow"), name="slow")
shop.expose(sleeper("nap"), name="nap", concurrent=True)

shop.on("picked", picked.append)
shop.send("rows", pd.DataFrame({"name": ["apple", "pear"], "price": [3, 4]}))
print(shop.bridge)
"""
RAW = """async ({url, frames, wait}) => {
    // The bridge's own socket, spoken by hand: what any script of the page can send.
    const got = [];
    const ws = new WebSocket(url);
    ws.onmessage = (e) => got.push(e.data);
    const opened = await new Promise((done) => {
        ws.onopen = () => done(true);
        ws.onclose = () => done(false);
    });
    if (!opened) return {opened, got, closed: true};
    for (const frame of frames) ws.send(frame);
    let closed = false, code = null;
    ws.onclose = (e) => { closed = true; code = e.code; };
    await new Promise((done) => setTimeout(done, wait));
    ws.close();
    return {opened, got, closed, code};
}"""


class Cells:
    """Runs cells in a kernel and keeps every output under the cell it belongs to,
    also what comes after the cell finished (a function the app calls prints then)."""

    def __init__(self, kernel: Kernel):
        self.kernel = kernel
        self.out: dict[str, list[str]] = {}

    def run(self, code: str, timeout: float = 120) -> str:
        msg_id = self.kernel.client.execute(code)
        while True:
            msg = self.kernel.client.get_iopub_msg(timeout=timeout)
            self._keep(msg)
            if (
                msg["parent_header"].get("msg_id") == msg_id
                and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"
            ):
                break
        reply = self.kernel.client.get_shell_msg(timeout=timeout)
        assert reply["content"]["status"] == "ok", self.text(msg_id)
        self.last = msg_id
        return self.text(msg_id)

    def _keep(self, msg) -> None:
        parent, kind, content = msg["parent_header"].get("msg_id"), msg["msg_type"], msg["content"]
        if kind == "stream":
            self.out.setdefault(parent, []).append(content["text"])
        elif kind == "error":
            self.out.setdefault(parent, []).append("\n".join(content["traceback"]))

    def text(self, msg_id: str) -> str:
        return "".join(self.out.get(msg_id, []))

    def until(self, msg_id: str, wanted: str, timeout: float = 20) -> str:
        """The output of the cell ``msg_id`` once ``wanted`` is in it."""
        deadline = time.monotonic() + timeout
        while wanted not in self.text(msg_id):
            assert time.monotonic() < deadline, f"no {wanted!r} in {self.text(msg_id)!r}"
            try:
                self._keep(self.kernel.client.get_iopub_msg(timeout=0.5))
            except Exception:  # queue.Empty
                pass
        return self.text(msg_id)


def _jupyter(tmp_path, owner, package_cache, sandbox_image, mode: str):
    runtime = tmp_path / "server-runtime"
    runtime.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    proc = JupyterProcess(
        root,
        owner,
        f"--ReactBoxApp.cache_dir={package_cache}",
        f"--DockerBackend.image={sandbox_image}",
        f"--ReactBoxApp.preview_origin={mode}",
        env={"JUPYTER_RUNTIME_DIR": str(runtime)},
    )
    proc.runtime_dir = runtime
    return proc.start()


@pytest.fixture
def server(tmp_path, owner, package_cache, sandbox_image):
    """A Jupyter server whose previews are under its path, in the sandbox."""
    proc = _jupyter(tmp_path, owner, package_cache, sandbox_image, "path")
    yield proc
    proc.stop()


@pytest.fixture(params=["path", "auto"], ids=["under-jupyters-path", "own-origin"])
def any_server(request, tmp_path, owner, package_cache, sandbox_image):
    """Either mode: under Jupyter's path, or at <project>.localhost (a local server's
    default)."""
    proc = _jupyter(tmp_path, owner, package_cache, sandbox_image, request.param)
    yield proc
    proc.stop()


async def _frame_of(page, preview: str):
    """The preview in an iframe of a page of Jupyter's, as the widget and Lab show it."""
    if preview.startswith("http://127.0.0.1"):
        return await embed_preview(page, preview)
    origin = preview.split("/__reactbox/")[0]
    await page.evaluate(  # the link, which goes on to the app at / of its origin
        "src => { const f = document.createElement('iframe'); f.src = src;"
        " f.style.width = '1000px'; f.style.height = '700px'; document.body.replaceChildren(f) }",
        preview,
    )
    for _ in range(400):
        found = [f for f in page.frames if f.url.startswith(origin + "/") and "enter" not in f.url]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no frame at {origin}")


def _upload(server, name: str) -> dict:
    server.upload(zip_dir(APP), name)
    return server.wait(name)


def _until(check, what: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"waited for {what}"
        time.sleep(0.1)
    return value


async def test_the_app_and_the_notebook_talk_both_ways(any_server):
    server = any_server
    info = _upload(server, "prices")
    preview = urljoin(server.url, info["preview_url"])
    kernel = Kernel(server)
    cells = Cells(kernel)
    try:
        cells.run(SETUP)
        setup = cells.last
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(f"{server.url}/api/status?token={server.token}")  # logged in
            await page.goto(f"{server.url}/a-page-that-is-not-there")  # Jupyter's, frames it
            frame = await _frame_of(page, preview)
            await frame.get_by_text("Notebook: fail, nap, slow, total").wait_for(timeout=60_000)
            await frame.get_by_text("apple: 3").wait_for(timeout=10_000)
            for _ in range(2):
                await frame.get_by_role("button", name="Clicked").click()
            await frame.get_by_text("Clicked 2").wait_for()
            await frame.evaluate("window.loadedOnce = performance.timeOrigin")

            # The app calls Python.
            await frame.get_by_role("button", name="Total").click()
            await frame.get_by_text("total 7").wait_for(timeout=10_000)

            # The notebook pushes: the page renders it at once, same page, state kept.
            cells.run(
                'shop.send("rows", pd.DataFrame({"name": ["apple", "pear", "plum"], '
                '"price": [3, 4, 5]}))'
            )
            await frame.get_by_text("plum: 5").wait_for(timeout=10_000)
            assert await frame.get_by_text("Clicked 2").is_visible()
            assert await frame.evaluate("window.loadedOnce === performance.timeOrigin")

            # An event from the app reaches the Python handler as an object.
            await frame.get_by_text("pear: 4").click()
            text = _until(
                lambda: (t := cells.run("print(picked)")) != "[]\n" and t,
                "the event in the kernel",
            )
            assert text.strip() == "[{'name': 'pear', 'price': 4}]"

            # Shared state, both ways, and with every page of the app: a tab of its own.
            tab = await browser.new_page()
            await tab.goto(preview)
            await tab.get_by_text("plum: 5").wait_for(timeout=30_000)
            await frame.get_by_label("Filter").fill("p")
            _until(
                lambda: cells.run("print(shop.state.get('filter'))").strip() == "p",
                "the state in the kernel",
            )
            assert await tab.get_by_label("Filter").input_value() == "p"
            cells.run('shop.state["filter"] = "pe"')
            await frame.get_by_text("plum: 5").wait_for(state="detached", timeout=10_000)
            assert await frame.get_by_text("pear: 4").is_visible()
            assert await tab.get_by_label("Filter").input_value() == "pe"
            assert await frame.get_by_label("Filter").input_value() == "pe"

            # A Python exception rejects with its type and message; the traceback,
            # and what total() printed, are in the output of the cell that exposed them.
            caught = await tab.evaluate(
                "reactbox.call('fail', 2).catch((e) => [e.name, e.type, e.message])"
            )
            assert caught == ["NotebookError", "ValueError", "ValueError: bad 2"]
            assert await tab.evaluate("reactbox.call('total', [1, 2])") == 3
            outputs = cells.until(setup, "ValueError: bad 2")
            assert "summing 2" in outputs and "Traceback" in outputs, outputs
            assert "fail() called from the app raised" in outputs, outputs

            # Calls of a function run one at a time unless it was exposed concurrent;
            # the server answers meanwhile.
            both = asyncio.gather(*(
                tab.evaluate(f"Promise.all([reactbox.call('{name}', 0.5), "
                             f"reactbox.call('{name}', 0.5)])")
                for name in ("slow", "nap")
            ))  # fmt: skip
            status_ms = await asyncio.to_thread(_status_ms, server)
            assert await both == [[0.5, 0.5], [0.5, 0.5]] and status_ms < 1000
            assert cells.run("print(peak)").strip() == "{'slow': 1, 'nap': 2}"

            # A kernel restart: a pending call is rejected, the page says no notebook.
            pending = asyncio.ensure_future(
                frame.evaluate("reactbox.call('slow', 30).catch((e) => [e.type, e.message])")
            )
            await asyncio.sleep(0.5)
            status, body = server.call("POST", f"api/kernels/{kernel.id}/restart", b"{}")
            assert status == 200, body
            kind, message = await pending
            assert kind == "NotConnected" and "the notebook is not connected" in message
            await frame.get_by_text("No notebook").wait_for(timeout=10_000)
            refused = await frame.evaluate(
                "reactbox.call('total', [1]).catch((e) => e.type + ': ' + e.message)"
            )
            assert refused.startswith("NotConnected: the notebook is not connected")
            # The kernel that comes back exposes again; the page carries on.
            kernel.client.wait_for_ready(60)
            cells.run("%load_ext jupyter_reactbox\ndef times(a, b):\n    return a * b")
            out = cells.run("%reactbox expose prices times")
            assert out.startswith("prices may call: times."), out
            await frame.get_by_text("Notebook: times").wait_for(timeout=10_000)
            assert await frame.evaluate("reactbox.call('times', 6, 7)") == 42
            out = cells.run(
                "basket = [{'name': 'peach', 'price': 9}]\n%reactbox send prices basket --as rows"
            )
            assert "Sent basket as 'rows'" in out, out
            await frame.get_by_text("peach: 9").wait_for(timeout=10_000)
            assert await frame.get_by_text("Clicked 2").is_visible()
    finally:
        kernel.close()


def _kernel_idle(server) -> bool:
    status, body = server.call("GET", "api/kernels")
    kernels = json.loads(body) if status == 200 else []
    return any(k["execution_state"] == "idle" for k in kernels)


def _status_ms(server) -> float:
    started = time.monotonic()
    status, _ = server.call("GET", "api/status")
    assert status == 200
    return 1000 * (time.monotonic() - started)


async def test_attacks_from_the_preview_reach_nothing_the_notebook_did_not_expose(server):
    info = _upload(server, "prices")
    server.upload(zip_dir(APP), "other")  # another project, whose kernel side exposes more
    preview = server.url + info["preview_url"]
    bridge_url = preview.replace("http://", "ws://") + "__reactbox/bridge"
    kernel = Kernel(server)
    cells = Cells(kernel)
    try:
        cells.run(
            "from jupyter_reactbox.kernel.client import connect\n"
            "client = connect()\n"
            "shop = client.project('prices')\n"
            "other = client.project('other')\n"
            "shop.expose(lambda xs: sum(xs), name='total')\n"
            "shop.on('picked', print)\n"
            "other.expose(lambda: open('/etc/hostname').read(), name='secret')"
        )
        calls = lambda: int(cells.run("print(shop.bridge.calls_received)"))  # noqa: E731
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(f"{server.url}/api/status?token={server.token}")  # logged in
            await page.goto(f"{server.url}/a-page-that-is-not-there")  # Jupyter's, frames it
            frame = await embed_preview(page, preview)
            await frame.get_by_text("Notebook: total").wait_for(timeout=60_000)

            def call(name, args="[]", id=1):
                return json.dumps({"t": "call", "id": id, "name": name}) + "\n" + args

            async def raw(frames, wait=800, url=bridge_url):
                return await frame.evaluate(RAW, {"url": url, "frames": frames, "wait": wait})

            def answers(result) -> list[dict]:
                return [json.loads(m.partition("\n")[2]) for m in result["got"]
                        if m.startswith('{"t":"result"') or m.startswith('{"t":"error"')]  # fmt: skip

            # Names the notebook did not expose: Python's own, the other project's.
            tried = await raw([
                call(name, id=i) for i, name in enumerate(
                    ["secret", "eval", "exec", "__import__", "os.system", "shop.bridge"]
                )
            ])  # fmt: skip
            assert [a["type"] for a in answers(tried)] == ["NotExposed"] * 6
            assert (
                await frame.evaluate("reactbox.call('secret').catch((e) => e.type)") == "NotExposed"
            )

            # Arguments that are not a JSON array, or not JSON; events nobody listens to;
            # messages that are not the bridge's; state with a bad key.
            tried = await raw([
                call("total", "[1, NaN]"),
                call("total", "[1, Infinity]"),
                call("total", "[1,"),
                call("total", '{"xs": [1]}'),
                call("total", "[" * 100_000 + "]" * 100_000),
                '{"t":"emit","name":"os.system"}\n"ls"',
                '{"t":"emit","name":"picked"}\nundefined',
                '{"t":"run","code":"import os"}',
                "import os; os.system('id')",
                '{"t":"state","key":"../x"}\n1',
                '{"t":"call","id":"1","name":"total"}\n[]',
            ])  # fmt: skip
            kinds = [a["type"] for a in answers(tried)]
            assert kinds == ["BadValue"] * 5 + ["NotListened", "BadValue"] + ["BadMessage"] * 4
            assert calls() == 0

            # Too large: the socket is closed before anything is parsed (1009, "too big";
            # 1006 when the page hears only the connection end).
            tried = await raw([call("total", "[" + '"x",' * (2 << 20) + "1]")], wait=2000)
            assert tried["closed"] and tried["code"] in (1009, 1006), tried
            assert calls() == 0

            # Another project's bridge, with this preview's token: no.
            other_url = bridge_url.replace("/prices/", "/other/")
            assert not (await raw([call("secret")], url=other_url))["opened"]
            # The kernel's end, from the page: no (no credential, an opaque origin).
            kernel_end = server.url.replace("http", "ws") + "/reactbox/api/projects/prices/bridge"
            assert not (await raw(['{"t":"serve","functions":["x"]}'], url=kernel_end))["opened"]

            # A flood of calls: most are refused at once (429), the kernel gets a
            # bounded share, and the server answers throughout.
            slowest: list[float] = []
            stop = threading.Event()

            def watch():
                while not stop.is_set():
                    slowest.append(_status_ms(server))
                    time.sleep(0.05)

            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                tried = await raw([call("total", "[[1]]", id=i) for i in range(5000)], wait=3000)
                # Large arguments that are not JSON, to make the server parse: 30 MB.
                junk = await raw([call("total", "[" + "1," * 100_000 + "1")] * 150, wait=2000)
            finally:
                stop.set()
                await asyncio.to_thread(watcher.join)
            kinds = [a["type"] if isinstance(a, dict) else "answered" for a in answers(tried)]
            assert kinds.count("TooManyCalls") > 3000, kinds[:5]
            assert "TooManyCalls" in [a["type"] for a in answers(junk)]
            assert {a["type"] for a in answers(junk)} == {"TooManyCalls", "BadValue"}
            assert max(slowest) < 1000, max(slowest)
            assert 0 < calls() < 2000
            # And the app still works.
            assert await frame.evaluate("reactbox.call('total', [2, 3])") == 5
    finally:
        kernel.close()


def test_outside_a_preview_the_module_loads_and_calls_say_why(tmp_path):
    """The app's module in plain Node (as in a production build's tests or SSR): it
    imports, hooks are not needed, and a call rejects with a clear message."""
    import shutil
    import subprocess

    from jupyter_reactbox.frameworks import SUPPORT_DIR

    node = shutil.which("node")
    assert node, "Node is needed"
    folder = tmp_path / "app"
    (folder / "node_modules" / "react").mkdir(parents=True)
    (folder / "node_modules" / "react" / "package.json").write_text(
        '{"name": "react", "main": "index.js"}'
    )
    (folder / "node_modules" / "react" / "index.js").write_text("module.exports = {}")
    provide = SUPPORT_DIR / "provide.cjs"
    script = (
        f"require({json.dumps(str(provide))})(process.cwd());"
        "import('reactbox').then(async (m) => {"
        " try { await m.call('predict', 1) } catch (e) {"
        "  console.log(JSON.stringify([e.name, e.type, e.message])) } })"
    )
    out = subprocess.run(
        [node, "-e", script], cwd=folder, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    name, kind, message = json.loads(out.stdout)
    assert (name, kind) == ("NotebookError", "Unavailable")
    assert "not running in a jupyter-reactbox preview" in message and "predict" in message
    manifest = json.loads((folder / "node_modules" / "reactbox" / "package.json").read_text())
    assert manifest["types"] == "index.d.ts"
    assert (folder / "node_modules" / "reactbox" / "index.d.ts").read_text().startswith("//")
    # A package of that name the app installed itself is kept.
    (folder / "node_modules" / "reactbox" / "package.json").write_text('{"name": "reactbox"}')
    (folder / "node_modules" / "reactbox" / "index.js").write_text("export const mine = 1")
    subprocess.run(
        [node, "-e", f"require({json.dumps(str(provide))})('.')"], cwd=folder, check=True
    )
    assert (
        folder / "node_modules" / "reactbox" / "index.js"
    ).read_text() == "export const mine = 1"


@pytest.mark.parametrize("app", ["lab", "notebook"], ids=["jupyterlab", "notebook-7"])
async def test_the_example_notebook(app, tmp_path, owner, package_cache, sandbox_image):
    """notebooks/explore-data.ipynb as a person runs it, in JupyterLab (the app in a
    panel beside the notebook) and in Notebook 7 (the app in the upload cell's
    output): its filters run in the kernel, a row clicked arrives in the notebook,
    and the data the notebook pushes shows without a reload."""
    root = tmp_path / "lab"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns("explorer", "node_modules"))
    lab = start_lab(root, owner, package_cache, sandbox_image, app=app)
    try:
        async with chromium() as browser:
            page = await browser.new_page(viewport={"width": 1600, "height": 1000})
            try:
                where = "lab/tree" if app == "lab" else "notebooks"
                await page.goto(f"{lab.url}/{where}/explore-data.ipynb?reset&token={lab.token}")
                cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")
                await cells.first.wait_for(timeout=90_000)
                await asyncio.to_thread(_until, lambda: _kernel_idle(lab), "the kernel", 90)
                await cells.first.click()
                # Through `%reactbox open explorer` in Lab (a panel beside the notebook);
                # in Notebook 7, the preview the upload cell shows.
                for _ in range(13 if app == "lab" else 12):
                    await page.keyboard.press("Shift+Enter")
                if app == "lab":
                    panel = page.locator("#reactbox-preview-explorer")
                    frame = panel.frame_locator(".jp-ReactBox-frame")
                else:
                    frame = cells.nth(7).frame_locator("iframe[title='React preview']")
                await frame.get_by_text("Sales explorer: February").wait_for(timeout=240_000)
                await frame.get_by_text("8 products").wait_for(timeout=20_000)
                await frame.get_by_label("Category").select_option("dairy")
                await frame.get_by_text("3 products, revenue 578.00").wait_for(timeout=10_000)
                await frame.get_by_role("cell", name="cheese").click()

                # The next cell shows what was clicked, as a DataFrame.
                await cells.nth(13).locator(".jp-InputPrompt").click()
                await page.keyboard.press("Shift+Enter")
                table = cells.nth(13).locator(".jp-OutputArea-output table")
                await table.get_by_text("cheese").wait_for(timeout=20_000)
                assert await table.get_by_text("6.5").is_visible()

                # The notebook pushes March: the app asks Python again, filter kept.
                await page.keyboard.press("Shift+Enter")  # the text
                await page.keyboard.press("Shift+Enter")  # the push
                await frame.get_by_text("Sales explorer: March").wait_for(timeout=20_000)
                await frame.get_by_text("3 products, revenue 620.00").wait_for(timeout=10_000)
                await frame.get_by_label("Category").select_option("fruit")
                await frame.get_by_text("cherries").wait_for(timeout=10_000)
            finally:
                await page.screenshot(path=str(ARTIFACTS / f"{app}-explore-data.png"))
    finally:
        lab.stop()
