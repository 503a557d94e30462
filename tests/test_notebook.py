"""The notebook experience: the kernel client, ``%reactbox`` magics, the widget,
notebook data in the app, page errors back in the notebook, and the
getting-started notebook, against real Jupyter servers, kernels and chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import ARTIFACTS, CHROMIUM_ARGS, JupyterProcess, app_of, free_port, start_lab, zip_dir
from IPython.core.error import UsageError
from llm import ThreadedLLM

from jupyter_reactbox import history
from jupyter_reactbox.kernel.client import ReactBoxClient, ReactBoxClientError, connect
from jupyter_reactbox.kernel.magics import ReactBoxMagics

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
SAMPLE = NOTEBOOKS / "sample-app"
DISCOVERY_VARS = (
    "JUPYTER_REACTBOX_URL",
    "JUPYTER_REACTBOX_TOKEN",
    "JUPYTER_REACTBOX_SERVER_INFO",
    "JUPYTERHUB_API_TOKEN",
    "JUPYTERHUB_SERVICE_URL",
    "JUPYTERHUB_SERVICE_PREFIX",
)
STICKY = (
    "src/App.jsx\n```jsx\n<<<<<<< SEARCH\n"
    '      <header className="header">\n'
    "=======\n"
    '      <header className="header" style={{ position: \'sticky\', top: 0, color: "#0b5fff" }}>\n'
    ">>>>>>> REPLACE\n```\n"
)


@pytest.fixture
def no_server_env(monkeypatch, tmp_path):
    """A kernel environment that points at no server: empty runtime dir, no hub."""
    for name in DISCOVERY_VARS:
        monkeypatch.delenv(name, raising=False)
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    monkeypatch.chdir(tmp_path)
    return runtime


@pytest.fixture
def ip():
    from IPython.testing.globalipapp import get_ipython

    return get_ipython()


@pytest.fixture
def scripted_llm():
    server = ThreadedLLM()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(tmp_path, owner, package_cache, sandbox_image, scripted_llm):
    """A Jupyter server with the extension and the scripted model, in its own process,
    writing its info file (and its kernels' connection files) to a runtime dir."""
    runtime = tmp_path / "server-runtime"
    runtime.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    proc = JupyterProcess(
        root,
        owner,
        f"--ReactBoxApp.cache_dir={package_cache}",
        f"--DockerBackend.image={sandbox_image}",
        f"--AIEditor.base_url={scripted_llm.base_url}",
        "--AIEditor.api_key=test-key",
        "--AIEditor.model=scripted",
        env={"JUPYTER_RUNTIME_DIR": str(runtime)},
    )
    proc.runtime_dir = runtime
    proc.start()
    yield proc
    proc.stop()


def client_of(server: JupyterProcess) -> ReactBoxClient:
    return ReactBoxClient(server.url + "/", server.token)


# -- argument parsing and one-line errors (IPython's test shell, no server) -------------


def test_magics_parse_arguments_and_fail_in_one_line(ip, no_server_env, capsys, tmp_path):
    ip.register_magics(ReactBoxMagics(ip))
    ip.run_line_magic("reactbox", "")
    assert "upload SOURCE" in capsys.readouterr().out
    ip.run_line_magic("reactbox", "upload --help")
    out = capsys.readouterr().out
    assert "--replace" in out and "%reactbox upload" in out

    cases = {
        "frobnicate": "Unknown command 'frobnicate'",
        "upload": "the following arguments are required: source",
        "logs": "the following arguments are required: project",
        "logs shop --tail many": "invalid int value",
        "write shop src/App.jsx": "write is a cell magic",
        "edit shop": "Say what to change",
        "edit shop --at App.jsx Make it bold": "--at takes FILE:LINE",
        "edit shop --image /nope.png Like this": "--image /nope.png: no such file",
        "fix": "the following arguments are required: project",
        "expose shop": "the following arguments are required: functions",
        "send shop": "the following arguments are required: variable",
        "list": "No Jupyter server with jupyter-reactbox was found for this kernel",
    }
    for line, message in cases.items():
        with pytest.raises(UsageError, match=message):
            ip.run_line_magic("reactbox", line)

    # Through run_cell, as a user sees it: one line on stderr, no traceback.
    result = ip.run_cell("%reactbox list")
    assert isinstance(result.error_in_exec, UsageError)
    err = capsys.readouterr().err
    assert "UsageError: No Jupyter server with jupyter-reactbox was found" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_discovery_says_when_the_extension_is_not_enabled(no_server_env, tmp_path):
    port, token = free_port(), "t0k3n"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "server",
            "--allow-root",
            "--no-browser",
            f"--port={port}",
            f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={tmp_path}",
            "--ServerApp.jpserver_extensions={'jupyter_reactbox': False}",
        ],
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(no_server_env)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(no_server_env.glob("jpserver-*.json")):
            assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
            time.sleep(0.1)
        # Found through the runtime dir (this directory is under the server's root).
        with pytest.raises(ReactBoxClientError) as err:
            connect()
        assert "does not have jupyter-reactbox" in str(err.value)
        assert "jupyter server extension enable jupyter_reactbox" in str(err.value)
    finally:
        proc.terminate()
        proc.wait(30)


# -- a real kernel, started by the real server ---------------------------------------------


class Kernel:
    """A kernel the server started (so it has the server's environment), driven over
    ZMQ with jupyter_client through the connection file the server wrote."""

    def __init__(self, server: JupyterProcess):
        from jupyter_client import BlockingKernelClient

        status, body = server.call("POST", "api/kernels", b"{}", "application/json")
        assert status == 201, body
        self.id = json.loads(body)["id"]
        self.client = BlockingKernelClient(
            connection_file=str(server.runtime_dir / f"kernel-{self.id}.json")
        )
        self.client.load_connection_file()
        self.client.start_channels()
        self.client.wait_for_ready(60)

    def run(self, code: str, timeout: float = 300) -> tuple[str, str, list[dict]]:
        """(status, text printed, rich outputs) of one cell."""
        text: list[str] = []
        rich: list[dict] = []

        def hook(msg):
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                text.append(content["text"])
            elif kind in ("display_data", "execute_result"):
                rich.append(content["data"])
            elif kind == "error":
                text.append("\n".join(content["traceback"]))

        reply = self.client.execute_interactive(code, output_hook=hook, timeout=timeout)
        return reply["content"]["status"], "".join(text), rich

    def close(self):
        self.client.stop_channels()


@pytest.mark.docker
def test_magics_in_a_kernel_of_the_server(server, scripted_llm, tmp_path):
    kernel = Kernel(server)
    try:
        ok = lambda code: _ok(kernel.run(code))  # noqa: E731
        # The server told its kernel where it is; the token stays in its info file.
        text, _ = ok("import os; print(os.environ['JUPYTER_REACTBOX_URL'])")
        assert text.strip() == f"http://127.0.0.1:{server.port}/"
        status, text, _ = kernel.run("print(os.environ.get('JUPYTER_REACTBOX_TOKEN'))")
        assert (
            text.strip() == "None" and server.token not in kernel.run("print(dict(os.environ))")[1]
        )
        # A wrong token given by hand is named as such.
        text, _ = ok(
            "from jupyter_reactbox.kernel.client import connect, ReactBoxClientError\n"
            "os.environ['JUPYTER_REACTBOX_TOKEN'] = 'wrong'\n"
            "try:\n    connect()\nexcept ReactBoxClientError as e:\n    print(e)\n"
            "del os.environ['JUPYTER_REACTBOX_TOKEN']"
        )
        assert "refused this kernel's credentials" in text
        ok("%load_ext jupyter_reactbox")
        status, text, _ = kernel.run("%reactbox open shop")
        assert (
            status == "error"
            and text.strip() == "UsageError: No project 'shop' (projects: none yet)."
        )

        shop_zip = tmp_path / "shop.zip"
        shop_zip.write_bytes(zip_dir(SAMPLE))
        text, rich = ok(f"%reactbox upload {shop_zip} --name shop")
        assert "shop is running." in text
        widgets = [d for d in rich if "application/vnd.jupyter.widget-view+json" in d]
        assert len(widgets) == 2  # the progress bar, then the preview
        info = server.project("shop")
        assert info["status"] == "running"
        with urllib.request.urlopen(server.url + info["preview_url"], timeout=30) as r:
            assert b'<div id="root">' in r.read()

        text, rich = ok("%reactbox list")
        assert rich[0]["text/plain"].split() == ["shop", "vite", "running"]
        # open: a panel where the JupyterLab extension renders it, an iframe elsewhere.
        _, rich = ok("%reactbox open shop")
        assert rich[0]["application/vnd.jupyter.reactbox.open+json"]["id"] == "shop"
        assert f'<iframe src="{info["preview_url"]}"' in rich[0]["text/html"]
        _, rich = ok("%reactbox open shop --inline")
        assert "application/vnd.jupyter.widget-view+json" in rich[0]

        # Upload from a variable holding the ZIP's bytes; a folder; bad sources.
        ok(f"data = open({str(shop_zip)!r}, 'rb').read()")
        text, _ = ok("%reactbox upload data --name from-bytes --no-wait")
        assert "Uploaded from-bytes" in text
        (tmp_path / "notes.txt").write_text("not a zip")
        for line, message in {
            "%reactbox upload /nowhere/app.zip": "UsageError: No such file: /nowhere/app.zip",
            f"%reactbox upload {tmp_path / 'notes.txt'}": "is not a ZIP file.",
            f"%reactbox upload {tmp_path}": "has no package.json (nor a subfolder with one); it is not an app folder.",
            "%reactbox upload data": "Name the project",
            f"%reactbox upload {shop_zip} --name shop": "exists already",
            "%reactbox undo nope": "No project 'nope'",
        }.items():
            status, text, _ = kernel.run(line)
            assert status == "error" and message in text, (line, text)
            assert len(text.strip().splitlines()) == 1 and "Traceback" not in text, text

        # By hand: checked, committed, undoable.
        app = app_of(tmp_path / "root" / "projects", "shop")
        original = (app / "src" / "App.jsx").read_text()
        hand = original.replace(">Sign up<", ">Join Now<")
        text, _ = ok(f"%%reactbox write shop src/App.jsx\n{hand}")
        assert text.strip() == "Wrote src/App.jsx."
        assert (app / "src" / "App.jsx").read_text().rstrip() == hand.rstrip()
        status, text, _ = kernel.run("%%reactbox write shop src/App.jsx\nexport default (")
        assert status == "error" and "adds a syntax error" in text
        assert (app / "src" / "App.jsx").read_text().rstrip() == hand.rstrip()

        # In plain words, through the scripted model; the diff is shown.
        scripted_llm.answer(STICKY)
        text, rich = ok(
            "%%reactbox edit shop src/App.jsx\nMake the header sticky, brand colour #0b5fff."
        )
        assert "Changed src/App.jsx" in text and "%reactbox undo shop" in text
        assert "; 120 tokens; undo:" in text  # what the scripted model says it used
        assert "position: 'sticky'" in rich[-1]["text/plain"]
        assert scripted_llm.user_messages(0)[0].endswith(
            "Make the header sticky, brand colour #0b5fff."
        )
        assert "sticky" in (app / "src" / "App.jsx").read_text()
        text, _ = ok("%reactbox undo shop")
        assert "Undone. The project is now at: Edit src/App.jsx by hand" in text
        assert "sticky" not in (app / "src" / "App.jsx").read_text()
        text, _ = ok("%reactbox undo shop")
        assert (app / "src" / "App.jsx").read_text() == original
        # About one place: the model is told the line and the component around it.
        line = original.splitlines().index('      <header className="header">') + 1
        scripted_llm.answer(STICKY)
        text, _ = ok(f'%reactbox edit shop --at src/App.jsx:{line} "Make this sticky"')
        assert "Changed src/App.jsx" in text
        prompt = scripted_llm.user_messages(1)[0]
        assert f"pointed at the code at src/App.jsx:{line}, in the component App." in prompt
        ok("%reactbox undo shop")
        # Images for a model that takes none (this server's): not sent, and said so.
        from test_vision import png

        sketch = tmp_path / "sketch.png"
        sketch.write_bytes(png(8, 8, (0, 0, 255)))
        scripted_llm.answer(STICKY)
        text, _ = ok(f'%reactbox edit shop --image {sketch} --screenshot "Like my sketch"')
        assert "Not sent: 1 attached image and the screenshot." in text, text
        assert isinstance(scripted_llm.requests[2]["body"]["messages"][1]["content"], str)
        ok("%reactbox undo shop")
        # Review first: the diff, nothing written until accepted.
        scripted_llm.answer(STICKY)
        text, rich = ok('%reactbox edit shop --review "Make the header sticky"')
        assert "nothing is written until you accept" in text and "%reactbox accept shop" in text
        assert "position: 'sticky'" in rich[-1]["text/plain"]
        assert (app / "src" / "App.jsx").read_text() == original
        text, _ = ok("%reactbox accept shop")
        assert "Changed src/App.jsx." in text and "sticky" in (app / "src/App.jsx").read_text()
        status, text, _ = kernel.run("%reactbox discard shop")
        assert status == "error" and "No change of shop waits for review" in text
        ok("%reactbox undo shop")
        # No page has reported an error: nothing for `fix` to do, said in one line.
        status, text, _ = kernel.run("%reactbox fix shop")
        assert status == "error" and "has reported no error to fix" in text

        # Notebook data: JSON where the app imports it, out of the project's history.
        ok('rows = [{"month": "Jan", "units": 120}]\n%reactbox data shop rows --as sales')
        assert json.loads((app / "src/reactbox-data/sales.json").read_text()) == [
            {"month": "Jan", "units": 120}
        ]
        assert history.diff(app, "HEAD") == ""  # data is not a change to commit
        # A DataFrame: rows as objects, NaN as null, dates as ISO strings.
        ok(
            "import pandas as pd\n"
            "df = pd.DataFrame({'month': pd.to_datetime(['2026-01-01', '2026-02-01']),"
            " 'units': [120, float('nan')]})\n"
            "%reactbox data shop df --as monthly"
        )
        monthly = json.loads((app / "src/reactbox-data/monthly.json").read_text())
        assert [r["units"] for r in monthly] == [120.0, None]
        assert monthly[0]["month"].startswith("2026-01-01T00:00:00")
        status, text, _ = kernel.run("%reactbox data shop df --as ../../evil")
        assert status == "error" and "cannot name data" in text
        status, text, _ = kernel.run("%reactbox data shop nothing_here")
        assert status == "error" and "No variable 'nothing_here'" in text
        status, text, _ = kernel.run("f = open\n%reactbox data shop f")
        assert status == "error" and "cannot be sent as JSON" in text

        text, _ = ok("%reactbox logs shop --tail 20")
        assert "VITE" in text and "ready in" in text
        text, _ = ok("%reactbox stop shop")
        assert server.project("shop")["status"] == "stopped"
        text, _ = ok("%reactbox delete from-bytes")
        assert text.strip() == "Deleted from-bytes."
    finally:
        kernel.close()


def _ok(result: tuple[str, str, list[dict]]) -> tuple[str, list[dict]]:
    status, text, rich = result
    assert status == "ok", text
    return text, rich


# -- the widget's Python side against a live server ------------------------------------------


def _until(predicate, timeout: float = 120, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def uploaded(name: str, data: bytes) -> dict:
    """A file as ipywidgets' FileUpload holds it after the browser sent it."""
    return {
        "name": name,
        "type": "application/zip",
        "size": len(data),
        "content": memoryview(data),
        "last_modified": datetime.now(timezone.utc),
    }


@pytest.mark.docker
def test_widget_drives_everything_against_a_live_server(server, scripted_llm):
    from jupyter_reactbox import ReactBox

    client = client_of(server)
    box = ReactBox(client=client)
    assert "No projects yet" in box.message.value
    box.upload.value = (uploaded("shop.zip", zip_dir(SAMPLE)),)
    view = _until(
        lambda: box.view if box.view and box.view.project.id == "shop" else None,
        what="the upload to be picked and shown",
    )
    _until(lambda: "running" in view.status.value, what="the preview to run")
    # The progress bar (fed by the server while it installs) is full, then hidden.
    assert view.bar.layout.display == "none" and view.bar.bar.value == 100
    preview_url = server.project("shop")["preview_url"]
    assert f'src="{preview_url}"' in view.frame.value
    assert preview_url in view.new_tab.value
    export = server.project("shop")["export_url"]  # a download by the page's own login
    assert f'href="{export}" download="shop.zip"' in view.new_tab.value

    # Reload makes a new iframe element; height changes it too.
    before = view.frame.value
    view.reload()
    assert view.frame.value != before and f'src="{preview_url}"' in view.frame.value
    view.height.value = 800
    assert "height:800px" in view.frame.value

    # Stop and start from the buttons; the view follows the server's events.
    box.buttons["stop"].click()
    _until(lambda: "stopped" in view.status.value, what="stopped")
    assert "iframe" not in view.frame.value and preview_url not in view.new_tab.value
    assert "Export ZIP" in view.new_tab.value  # the source, running or not
    box.buttons["start"].click()
    _until(lambda: "running" in view.status.value and "iframe" in view.frame.value)

    # Apply an instruction, see the diff, undo.
    scripted_llm.answer(STICKY)
    box.instruction.value = "Make the header sticky"
    box.apply_button.click()
    _until(lambda: "sticky" in box.diff.value, what="the diff")
    assert "applied" in box.edit_status.value and box.instruction.value == ""
    assert re.search(r"\([\d,]+ tokens\)", box.edit_status.value), box.edit_status.value
    box.undo_button.click()
    _until(lambda: "Undone" in box.edit_status.value, what="undo")
    # Review first: the diff, Accept and Discard in place of Apply, nothing written yet.
    app = app_of(server.root / "projects", "shop") / "src" / "App.jsx"
    original = app.read_text()
    scripted_llm.answer(STICKY)
    box.review_first.value = True
    box.instruction.value = "Make the header sticky"
    box.apply_button.click()
    _until(lambda: "proposed" in box.edit_status.value, what="the proposal")
    assert "sticky" in box.diff.value and app.read_text() == original
    assert box.accept_button.layout.display is None and box.apply_button.layout.display == "none"
    box.accept_button.click()
    _until(lambda: "applied" in box.edit_status.value, what="the accepted change")
    assert "sticky" in app.read_text() and box.accept_button.layout.display == "none"
    box.undo_button.click()
    _until(lambda: "Undone" in box.edit_status.value, what="undo")
    box.review_first.value = False
    # Fix, when the page has reported no error: the server says so, in place.
    box.fix_button.click()
    _until(lambda: "has reported no error to fix" in box.message.value, what="fix refused")

    box.logs_button.click()
    _until(lambda: "VITE" in box.logs.value, what="logs")

    # A bad upload shows the server's message in place; nothing else changes.
    box.upload.value = (uploaded("broken.zip", b"not a zip"),)
    _until(lambda: "ZIP" in box.message.value, what="the error")
    assert "⚠" in box.message.value and box.picker.options == ("shop",)

    # State lives on the server: a new widget (after a kernel restart) shows the same.
    again = ReactBox(client=client_of(server), project="shop")
    _until(lambda: "running" in again.view.status.value)
    box.close()
    again.close()


# -- page errors back to the notebook, and data updating the running page --------------------


@pytest.mark.docker
@pytest.mark.browser
async def test_page_errors_reach_the_notebook_and_data_hot_reloads(server, capsys, ip, tmp_path):
    import asyncio

    from conftest import chromium

    client = client_of(server)
    project = await asyncio.to_thread(client.upload, SAMPLE, "shop")
    await asyncio.to_thread(project.wait)
    app = app_of(tmp_path / "root" / "projects", "shop")
    good = (app / "src" / "App.jsx").read_text()
    boom = good.replace("  const [count", "  throw new Error('boom from the app')\n  const [count")
    await asyncio.to_thread(project.write, "src/App.jsx", boom)

    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(server.url + project.preview_url, wait_until="commit")
        errors = await _async_until(
            lambda: [
                e for e in project.refresh().page_errors if "boom from the app" in e["message"]
            ]
        )
        assert errors[0]["kind"] == "error" and "App.jsx" in (
            errors[0]["stack"] + errors[0]["source"]
        )

        # What the magic shows.
        ip.register_magics(ReactBoxMagics(ip, client=client))
        ip.run_line_magic("reactbox", "errors shop")
        assert "error: Uncaught Error: boom from the app" in capsys.readouterr().out

        # A module that cannot load: reported too; a reload forgets the old errors.
        main = (app / "src" / "main.jsx").read_text()
        # Off the page first: Vite's HMR would reload it on these writes, racing our load.
        await page.goto("about:blank")
        await asyncio.to_thread(project.write, "src/App.jsx", good)
        await asyncio.to_thread(
            project.write, "src/main.jsx", main.replace("./App.jsx", "./Missing.jsx")
        )
        await page.goto(server.url + project.preview_url, wait_until="commit")
        missing = await _async_until(
            lambda: [
                e
                for e in project.refresh().page_errors
                if "main.jsx" in json.dumps(e) or "Missing" in json.dumps(e)
            ]
        )
        assert missing and not any("boom" in e["message"] for e in project.page_errors)
        await page.goto("about:blank")
        await asyncio.to_thread(project.write, "src/main.jsx", main)
        # Vite tells open pages to reload in its own time after the write: a page
        # loaded before it has would be reloaded under the checks below.
        await asyncio.sleep(1)
        await page.goto(server.url + project.preview_url, wait_until="commit")
        await page.get_by_text("Corner Shop").wait_for(timeout=30_000)

        # Data: published, imported, and re-published into the running page by HMR.
        await asyncio.to_thread(project.publish, "sales", [{"month": "Jan", "units": 120}])
        with_data = good.replace(
            "import { useState } from 'react'",
            "import { useState } from 'react'\nimport sales from './reactbox-data/sales.json'",
        ).replace(
            "      </section>",
            "        <ul>{sales.map((r) => <li key={r.month}>{r.month}: {r.units}</li>)}</ul>\n"
            "      </section>",
        )
        await page.evaluate("window.__notReloaded = true")
        await asyncio.to_thread(project.write, "src/App.jsx", with_data)
        await page.get_by_text("Jan: 120").wait_for(timeout=30_000)
        await asyncio.to_thread(
            project.publish,
            "sales",
            [{"month": "Jan", "units": 120}, {"month": "Feb", "units": 135}],
        )
        await page.get_by_text("Feb: 135").wait_for(timeout=30_000)
        assert await page.evaluate("window.__notReloaded") is True
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "notebook-data-hmr.png"))

    # The page is untrusted: reports are checked and cut to size.
    base = server.url + project.refresh().preview_url + "__reactbox/error"
    for body, code in (
        (b"not json", 400),
        (json.dumps({"kind": "nonsense", "message": "x"}).encode(), 400),
        (json.dumps({"kind": "error", "message": "x" * 20000}).encode(), 400),
    ):
        assert _post(base, body) == code
    assert _post(base, json.dumps({"kind": "error", "message": "y" * 5000}).encode()) == 204
    assert len(project.refresh().page_errors[-1]["message"]) == 2000
    wrong = base.replace(project.preview_url.split("/")[-2], "not-the-token")
    assert _post(wrong, b'{"kind": "error", "message": "x"}') == 403


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def _async_until(predicate, timeout: float = 60):
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await asyncio.to_thread(predicate):
            return value
        await asyncio.sleep(0.25)
    raise AssertionError("timed out")


# -- the getting-started notebook, end to end -------------------------------------------------


@pytest.mark.docker
async def test_getting_started_notebook_runs_top_to_bottom(server, scripted_llm, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    for name in DISCOVERY_VARS:
        monkeypatch.delenv(name, raising=False)
    # The kernel is nbclient's, not the server's: it finds the server through the
    # runtime dir, as a kernel started outside Jupyter would.
    work = server.root / "notebooks"
    shutil.copytree(NOTEBOOKS, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    nb = nbformat.read(work / "getting-started.ipynb", as_version=4)
    scripted_llm.answer(STICKY)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(server.runtime_dir))  # the kernel inherits it
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(work)}},
    )
    await client.async_execute()  # a failing cell raises CellExecutionError
    ARTIFACTS.mkdir(exist_ok=True)
    nbformat.write(nb, ARTIFACTS / "getting-started.out.ipynb")

    def text_of(cell) -> str:
        return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")

    by_source = {c.source.splitlines()[0]: c for c in nb.cells if c.cell_type == "code"}
    assert "shop is running." in text_of(
        by_source["%reactbox upload sample-app --name shop --replace"]
    )
    edited = text_of(by_source["%%reactbox edit shop src/App.jsx"])
    assert "Changed src/App.jsx" in edited
    assert re.search(r"; [\d,]+ tokens; undo: %reactbox undo shop", edited), edited
    assert "Undone" in text_of(by_source["%reactbox undo shop"])
    assert scripted_llm.requests, "the edit cell did not reach the model"
    app = app_of(server.root / "projects", "shop")
    assert "import sales from './reactbox-data/sales.json'" in (app / "src/App.jsx").read_text()
    rows = json.loads((app / "src/reactbox-data/sales.json").read_text())
    assert [r["month"] for r in rows] == ["Jan", "Feb", "Mar", "Apr"]
    # The bridge section: the app imports the module, the notebook exposed and sent.
    assert "import { call, useNotebook } from 'reactbox'" in (app / "src/App.jsx").read_text()
    assert by_source["import jupyter_reactbox"].outputs == []
    assert server.project("shop")["status"] == "stopped"


# -- JupyterLab in chromium: the notebook's first cells show the app ---------------------------


@pytest.mark.docker
@pytest.mark.browser
async def test_lab_runs_the_notebook_and_shows_the_app_in_the_output(
    tmp_path, owner, package_cache, sandbox_image
):
    from conftest import CHROMIUM, _require_chromium
    from playwright.async_api import async_playwright

    root = tmp_path / "lab"
    shutil.copytree(NOTEBOOKS, root)
    lab = start_lab(root, owner, package_cache, sandbox_image)
    _require_chromium()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            console_errors: list[str] = []
            page.on("console", lambda m: m.type == "error" and console_errors.append(m.text))
            ARTIFACTS.mkdir(exist_ok=True)
            try:
                await page.goto(f"{lab.url}/lab/tree/getting-started.ipynb?token={lab.token}")
                await page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=90_000)
                await page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)
                await page.locator(".jp-Notebook .jp-Cell").first.click()
                for _ in range(4):  # title, load_ext, text, upload
                    await page.keyboard.press("Shift+Enter")
                frame = page.frame_locator(".jp-OutputArea iframe[title='React preview']")
                await frame.get_by_text("Corner Shop").wait_for(timeout=240_000)
                await frame.get_by_role("button", name="Sign up").click()
                await frame.get_by_text("Sign-ups this week: 1").wait_for(timeout=10_000)

                # Alt-click picks an element for the next instruction: the app does not
                # see the click, the server keeps the pick, the widget shows it.
                await frame.get_by_role("button", name="Sign up").click(modifiers=["Alt"])
                output = page.locator(".jp-OutputArea-output").filter(
                    has=page.locator("iframe[title='React preview']")
                )
                await output.get_by_text("Editing <button> “Sign up” (src/App.jsx:13)").wait_for(
                    timeout=20_000
                )
                assert await frame.get_by_text("Sign-ups this week: 1").is_visible()
                picked = lab.project("shop")["selection"]
                assert picked == {"file": "src/App.jsx", "line": 13, "column": 9, "tag": "button",
                                  "text": "Sign up", "classes": ""}, picked  # fmt: skip
                await page.get_by_role("button", name="Whole app").click()
                await output.get_by_text("Alt-click an element of the page").wait_for(
                    timeout=20_000
                )
                assert lab.project("shop")["selection"] is None
            finally:
                await page.screenshot(path=str(ARTIFACTS / "lab-notebook-preview.png"))
            assert not [e for e in console_errors if "reactbox" in e.lower()], console_errors
            await browser.close()
    finally:
        lab.stop()
