"""The JupyterLab extension, installed from the wheel, in a live JupyterLab driven
by Debian's chromium: sidebar, drag-and-drop and button uploads, the preview
panel, device widths, the instruction bar, stop and delete, the launcher card
and palette entries, and ``%reactbox open`` opening a panel from a kernel."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    FIXTURES,
    _require_chromium,
    app_of,
    start_lab,
    zip_dir,
)

pytestmark = [pytest.mark.docker, pytest.mark.browser]


LABEXTENSION = Path(__file__).parent.parent / "labextension"


def test_typescript_unit_tests():
    """The extension's API client and state (vitest), run from here so `pytest` runs all."""
    jlpm = [
        shutil.which(
            "jlpm", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
        )
    ]
    assert jlpm[0], "jlpm (JupyterLab's yarn) is not installed"
    subprocess.run([*jlpm, "install", "--immutable"], cwd=LABEXTENSION, check=True)
    out = subprocess.run(
        [*jlpm, "test"], cwd=LABEXTENSION, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"Tests\s+\d+ passed", re.sub(r"\x1b\[[0-9;]*m", "", out.stdout)), out.stdout


def test_labextension_is_installed_enabled_and_ok():
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    line = next((line for line in text.splitlines() if "jupyter-reactbox" in line), "")
    assert re.search(r"jupyter-reactbox v\S+ enabled OK", line), text


DROP_ZIP = """([selector, name, b64]) => {
    const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
    const data = new DataTransfer();
    data.items.add(new File([bytes], name, { type: 'application/zip' }));
    document.querySelector(selector).dispatchEvent(
        new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
}"""


async def test_lab_sidebar_panel_and_magic(tmp_path, owner, package_cache, sandbox_image):
    from playwright.async_api import async_playwright

    root = tmp_path / "lab"
    root.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext jupyter_reactbox\n%reactbox open shop")]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, root / "open.ipynb")
    lab = start_lab(
        root,
        owner,
        package_cache,
        sandbox_image,
        env={"JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")},
    )
    _require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    app_zip = zip_dir(FIXTURES / "vite-react")
    monorepo = zip_dir(FIXTURES / "workspace", wrap="acme-main")
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("dialog", lambda d: d.accept())
            # JupyterLab asks once whether to fetch its news, in a toast over the page.
            news = page.get_by_text("Would you like to get notified about official Jupyter news?")
            await page.add_locator_handler(
                news, lambda _: page.get_by_role("button", name="No", exact=True).click()
            )
            # Console errors of JupyterLab and of our extension; not those of the
            # app inside a preview frame (the user's code, in an opaque origin),
            # nor the failed requests this test provokes on purpose.
            errors: list[str] = []
            # (the monorepo's first upload is refused with the list of its apps)
            provoked = (
                "/projects/shop/edits?",
                "/projects/second-app?",
                "/reactbox/api/projects?",
                "/projects/acme?",
            )

            def on_console(m) -> None:
                where = m.location.get("url", "")
                if m.type != "error" or "/reactbox/preview/" in where:
                    return
                if not any(p in where for p in provoked):
                    errors.append(f"{m.text} @ {where}")

            page.on("console", on_console)
            page.on(
                "pageerror",
                lambda e: "origin 'null'" not in str(e) and errors.append(str(e)),
            )
            try:
                await page.goto(f"{lab.url}/lab?reset&token={lab.token}")

                # The launcher card and the palette entries.
                await page.get_by_text("ReactBox app", exact=True).wait_for(timeout=90_000)
                await page.keyboard.press("Control+Shift+C")
                await page.keyboard.type("ReactBox")
                palette = page.locator(".lm-CommandPalette-item")
                for label in ("ReactBox: Upload app", "ReactBox: Open preview"):
                    await palette.filter(has_text=label).first.wait_for(timeout=10_000)
                await page.keyboard.press("Escape")

                # Drop a ZIP on the sidebar: it uploads, then its panel opens beside.
                await page.locator("li[data-id='reactbox-sidebar']").click()
                sidebar = page.locator("#reactbox-sidebar")
                await sidebar.get_by_text("No projects yet.").wait_for()
                await page.evaluate(
                    DROP_ZIP,
                    ["#reactbox-sidebar", "shop.zip", base64.b64encode(app_zip).decode()],
                )
                panel = page.locator("#reactbox-preview-shop")
                frame = panel.frame_locator(".jp-ReactBox-frame")
                await frame.locator("h1").wait_for(timeout=120_000)
                assert await frame.locator("h1").inner_text() == "Get started"
                await (
                    panel.locator(".jp-ReactBox-statusline").get_by_text("shop: running").wait_for()
                )
                new_tab = await panel.locator(".jp-ReactBox-newtab").get_attribute("href")
                assert re.fullmatch(r"/a%40b/reactbox/preview/shop/[\w-]+/", new_tab or "")
                exported = await panel.locator(".jp-ReactBox-export").get_attribute("href")
                assert exported == "/a%40b/reactbox/api/projects/shop/export"

                # Share: a snapshot at a link of its own, which opens; Revoke kills it.
                await panel.get_by_role("button", name="Share").click()
                link = panel.locator(".jp-ReactBox-sharelink")
                await link.wait_for(timeout=120_000)
                shared = await link.get_attribute("href") or ""
                assert re.fullmatch(r"/a%40b/reactbox/shared/[\w-]{24}/", shared), shared
                viewer = await browser.new_page()
                await viewer.goto(lab.url.removesuffix("/a%40b") + shared)
                await viewer.locator("h1").wait_for(timeout=30_000)
                assert await viewer.locator("h1").inner_text() == "Get started"
                await panel.get_by_role("button", name="Revoke").click()
                await panel.get_by_text("Revoked: the link no longer opens.").wait_for()
                assert (await viewer.reload()).status == 404
                await viewer.close()

                # Device widths.
                await panel.locator(".jp-ReactBox-device").select_option(label="Phone (375px)")
                box = await panel.locator(".jp-ReactBox-frame").bounding_box()
                assert box is not None and round(box["width"]) == 375
                await page.screenshot(path=str(ARTIFACTS / "lab-sidebar-and-panel.png"))

                # The instruction bar says when no AI endpoint is configured.
                await panel.locator("textarea").fill("Make the header sticky")
                await panel.get_by_role("button", name="Apply").click()
                await (
                    panel.locator(".jp-ReactBox-editstatus")
                    .get_by_text("AI edits are not configured", exact=False)
                    .wait_for()
                )

                # A second upload through the button, then deleted from the sidebar.
                await page.set_input_files(
                    "#reactbox-sidebar input[type=file]",
                    files=[
                        {"name": "Second App.zip", "mimeType": "application/zip", "buffer": app_zip}
                    ],
                )
                second = sidebar.locator("li[data-project='second-app']")
                await second.wait_for(timeout=60_000)
                await second.get_by_role("button", name="Delete").click()
                await second.wait_for(state="detached", timeout=60_000)
                # ... and its panel, which opened on upload, closes with it.
                await page.locator("#reactbox-preview-second-app").wait_for(state="detached")
                status, _ = lab.call("GET", "reactbox/api/projects/second-app")
                assert status == 404

                # Stop from the sidebar: the panel follows.
                row = sidebar.locator("li[data-project='shop']")
                await row.get_by_role("button", name="Stop").click()
                await (
                    row.locator(".jp-ReactBox-status")
                    .get_by_text("stopped")
                    .wait_for(timeout=30_000)
                )
                await (
                    panel.locator(".jp-ReactBox-statusline")
                    .get_by_text("shop: stopped", exact=False)
                    .wait_for(timeout=10_000)
                )
                assert lab.project("shop")["status"] == "stopped"

                # Close the panel; `%reactbox open shop` in a notebook starts the
                # preview and opens the panel again.
                await (
                    page.locator(".lm-TabBar-tab", has_text="Preview: shop")
                    .locator(".lm-TabBar-tabCloseIcon")
                    .click()
                )
                await panel.wait_for(state="detached")
                await page.goto(f"{lab.url}/lab/tree/open.ipynb?reset&token={lab.token}")
                await page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)
                await page.locator(".jp-Notebook .jp-Cell").first.click()
                await page.keyboard.press("Shift+Enter")
                await frame.locator("h1").wait_for(timeout=120_000)
                assert lab.project("shop")["status"] == "running"
                output = page.locator(".jp-ReactBox-openOutput")
                await output.get_by_text("Opened shop beside the notebook.").wait_for()
                await page.screenshot(path=str(ARTIFACTS / "lab-magic-opens-panel.png"))

                # A monorepo of two apps: the sidebar asks which one, and runs it.
                await page.locator("li[data-id='reactbox-sidebar']").click()
                await page.set_input_files(
                    "#reactbox-sidebar input[type=file]",
                    files=[{"name": "acme.zip", "mimeType": "application/zip", "buffer": monorepo}],
                )
                dialog = page.locator(".jp-Dialog")
                await dialog.get_by_text("acme.zip holds several apps: which one?").wait_for()
                await dialog.locator("select").select_option("apps/web")
                await dialog.get_by_role("button", name="Run it").click()
                acme = page.locator("#reactbox-preview-acme")
                await (
                    acme.frame_locator(".jp-ReactBox-frame")
                    .get_by_text("Acme storefront")
                    .wait_for(timeout=120_000)
                )
                assert (await acme.locator(".jp-ReactBox-mode").inner_text()).startswith(
                    "apps/web · "
                )
                row = sidebar.locator("li[data-project='acme']")
                await row.get_by_role("button", name="Delete").click()
                await row.wait_for(state="detached", timeout=60_000)
                await acme.wait_for(state="detached", timeout=30_000)
            finally:
                await page.screenshot(path=str(ARTIFACTS / "lab-extension-last.png"))
                await browser.close()
            assert not errors, json.dumps(errors, indent=1)
    finally:
        lab.stop()


async def near(outline, element) -> bool:
    """The outline covers the element (within a few pixels)."""
    a, b = await outline.bounding_box(), await element.bounding_box()
    return all(abs(a[k] - b[k]) <= 3 for k in ("x", "y", "width", "height"))


async def test_a_lab_edit_streams_its_steps_and_says_what_it_used(
    tmp_path, owner, package_cache, sandbox_image
):
    """The instruction bar with a (scripted) model: the status line follows the
    edit's steps while it runs, then says what it did and the tokens it used; the
    preview beside it shows the change. Fix hands a page error to the model; select
    mode points the next instruction at one element."""
    from llm import ThreadedLLM
    from playwright.async_api import async_playwright
    from test_edits import BUTTON, HEADING, JOIN_NOW, block, crash
    from test_vision import png

    llm = ThreadedLLM()
    llm.start()
    llm.answer(block("src/App.jsx", BUTTON, JOIN_NOW), delay=3.0)  # slow: its steps show
    root = tmp_path / "lab"
    root.mkdir()
    env = {"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "test-key"}
    lab = start_lab(root, owner, package_cache, sandbox_image, env=env)
    _require_chromium()
    try:
        lab.upload(zip_dir(FIXTURES / "vite-react"), "shop")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            try:
                await page.goto(f"{lab.url}/lab?reset&token={lab.token}")
                await page.locator("li[data-id='reactbox-sidebar']").click(timeout=90_000)
                row = page.locator("#reactbox-sidebar li[data-project='shop']")
                await row.locator(".jp-ReactBox-name").click(timeout=120_000)
                panel = page.locator("#reactbox-preview-shop")
                frame = panel.frame_locator(".jp-ReactBox-frame")
                await frame.get_by_text("Count is 0").wait_for(timeout=120_000)

                await panel.locator("textarea").fill("Change the button to say Join Now")
                await panel.get_by_role("button", name="Apply").click()
                status = panel.locator(".jp-ReactBox-editstatus")
                await status.get_by_text("Asking the model…").wait_for(timeout=10_000)
                await status.get_by_text(
                    "applied: Changed src/App.jsx. (120 tokens)", exact=True
                ).wait_for(timeout=60_000)
                await frame.get_by_text("Join Now").wait_for(timeout=30_000)  # hot-reloaded
                await page.screenshot(path=str(ARTIFACTS / "lab-edit-applied.png"))

                # Broken by hand: the page reports its error, and Fix hands it to the model.
                fix = panel.get_by_role("button", name="Fix")
                assert not await fix.is_visible()
                app = (app_of(lab.root / "projects", "shop") / "src" / "App.jsx").read_text()
                broken = app.replace(JOIN_NOW, crash("by_hand")).encode()
                path = "reactbox/api/projects/shop/files/src/App.jsx"
                assert lab.call("PUT", path, broken, "text/plain")[0] == 200
                await fix.wait_for(timeout=30_000)
                llm.answer(block("src/App.jsx", crash("by_hand"), JOIN_NOW))
                await fix.click()
                await status.get_by_text("applied: Changed src/App.jsx.", exact=False).wait_for(
                    timeout=60_000
                )
                await frame.get_by_text("Join Now").wait_for(timeout=30_000)
                assert "by_hand is not defined" in llm.user_messages(1)[0]

                # Select to edit: the element under the pointer is outlined, a click
                # picks it (the app does not see the click), and the next edit is
                # about it: the model is told where it is written and in which component.
                app = (app_of(lab.root / "projects", "shop") / "src" / "App.jsx").read_text()
                line = app.splitlines().index(HEADING) + 1
                button_line = app.splitlines().index("        <button") + 1
                await panel.get_by_role("button", name="Select").click()
                heading = frame.get_by_role("heading", name="Get started")
                await heading.hover()
                outline = frame.locator("[data-reactbox-outline='hover']")
                await outline.wait_for(state="visible", timeout=10_000)
                assert await near(outline, heading)
                await page.screenshot(path=str(ARTIFACTS / "lab-select-hover.png"))
                await frame.get_by_role("button", name="Join Now").click()  # picked, not pressed
                selection = panel.locator(".jp-ReactBox-selection")
                await selection.get_by_text(
                    f"<button.counter> “Join Now” (src/App.jsx:{button_line})"
                ).wait_for(timeout=10_000)
                await panel.locator(".jp-ReactBox-clearselection").click()
                assert await selection.is_hidden()
                await panel.get_by_role("button", name="Select").click()
                await heading.click()
                await selection.get_by_text(f"<h1> “Get started” (src/App.jsx:{line})").wait_for(
                    timeout=10_000
                )
                assert await near(frame.locator("[data-reactbox-outline='selected']"), heading)
                llm.answer(block("src/App.jsx", HEADING, HEADING.replace("Get started", "Hi")))
                await panel.locator("textarea").fill("Say Hi here")
                # A screenshot and an image, for a model that takes none (this Lab's):
                # the edit goes on without them and says so.
                await panel.get_by_label("Show the page").check()
                sketch = tmp_path / "sketch.png"
                sketch.write_bytes(png(8, 8, (0, 0, 255)))
                await panel.locator("input[type=file]").set_input_files(str(sketch))
                await panel.locator(".jp-ReactBox-attached").get_by_text("sketch.png").wait_for()
                await panel.get_by_role("button", name="Apply").click()
                await status.get_by_text("applied: Changed src/App.jsx.", exact=False).wait_for(
                    timeout=60_000
                )
                assert "Not sent: 1 attached image and the screenshot." in await status.inner_text()
                assert await panel.locator(".jp-ReactBox-attached").inner_text() == ""
                await frame.get_by_role("heading", name="Hi", exact=True).wait_for(timeout=30_000)
                assert await selection.is_hidden()  # the next instruction is about the app
                prompt = llm.user_messages(2)[0]
                assert (
                    f'The user selected <h1> "Get started" in the preview, written at '
                    f"src/App.jsx:{line}:11, in the component App." in prompt
                ), prompt[-800:]
                await page.screenshot(path=str(ARTIFACTS / "lab-select-applied.png"))

                # Review first: the diff is shown, the page stays as it is until Accept.
                hi = HEADING.replace("Get started", "Hi")
                llm.answer(block("src/App.jsx", hi, HEADING.replace("Get started", "Hello")))
                await panel.get_by_label("Review first").check()
                await panel.get_by_label("Show the page").uncheck()
                await panel.locator("textarea").fill("Say Hello")
                await panel.get_by_role("button", name="Apply").click()
                await status.get_by_text(
                    "proposed: Proposed changes to src/App.jsx", exact=False
                ).wait_for(timeout=60_000)
                assert (
                    "+          <h1>Hello</h1>"
                    in await panel.locator(".jp-ReactBox-diff").inner_text()
                )
                assert await frame.get_by_role("heading", name="Hi", exact=True).is_visible()
                await page.screenshot(path=str(ARTIFACTS / "lab-review-proposed.png"))
                await panel.get_by_role("button", name="Accept").click()
                await status.get_by_text("applied: Changed src/App.jsx.", exact=False).wait_for(
                    timeout=60_000
                )
                await frame.get_by_role("heading", name="Hello", exact=True).wait_for(
                    timeout=30_000
                )
                assert await panel.get_by_role("button", name="Apply").is_visible()
            finally:
                await browser.close()
        assert llm.user_messages(0)[0].endswith("Change the button to say Join Now")
    finally:
        lab.stop()
        llm.stop()


async def test_the_drive_the_editor_and_the_timeline(tmp_path, owner, package_cache, sandbox_image):
    """The app's files in JupyterLab's own file browser and editor: a save updates
    the preview by HMR (state kept) and is on the timeline; an AI edit, then a save
    from the stale editor: Lab's "file changed" choice, nothing lost; a new file
    renamed and deleted; a point named; an older point restored and the restore
    undone; "Open source" from a picked element lands on its line."""
    from llm import ThreadedLLM
    from playwright.async_api import async_playwright
    from test_edits import block

    llm = ThreadedLLM()
    llm.start()
    root = tmp_path / "lab"
    root.mkdir()
    env = {"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "test-key"}
    lab = start_lab(root, owner, package_cache, sandbox_image, env=env)
    _require_chromium()
    app_jsx = lambda: (app_of(lab.root / "projects", "shop") / "src" / "App.jsx").read_text()  # noqa: E731
    try:
        lab.upload(zip_dir(FIXTURES / "vite-react"), "shop")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1500, "height": 950})
            try:
                await page.goto(f"{lab.url}/lab?reset&token={lab.token}")

                # The drive: the project is a folder; App.jsx opens in Lab's editor.
                await page.locator("li[data-id='reactbox-files']").click(timeout=90_000)
                files = page.locator("#reactbox-files")
                for name in ("shop", "src"):
                    await files.locator(".jp-DirListing-item", has_text=name).first.dblclick()
                await files.locator(".jp-DirListing-item", has_text="App.jsx").dblclick()
                editor = page.locator(".jp-FileEditor .cm-content")
                await editor.get_by_text("Get started").wait_for(timeout=30_000)
                assert not await files.get_by_text("node_modules").count()

                # The preview, beside the editor.
                await page.locator("li[data-id='reactbox-sidebar']").click()
                row = page.locator("#reactbox-sidebar li[data-project='shop']")
                await row.locator(".jp-ReactBox-name").click(timeout=120_000)
                panel = page.locator("#reactbox-preview-shop")
                frame = panel.frame_locator(".jp-ReactBox-frame")
                await frame.get_by_role("button", name="Count is 0").click(timeout=120_000)
                await frame.get_by_role("button", name="Count is 1").wait_for()

                # A save: checked, committed, hot-reloaded with the count kept.
                await editor.get_by_text("Get started").click()
                for key in ("End", *["ArrowLeft"] * 5, "Control+Shift+ArrowLeft"):
                    await page.keyboard.press(key)  # "started" selected
                await page.keyboard.type("edited")
                await page.keyboard.press("Control+s")
                await frame.get_by_role("heading", name="Get edited").wait_for(timeout=30_000)
                assert await frame.get_by_role("button", name="Count is 1").is_visible()
                await panel.get_by_role("button", name="Timeline").click()
                changes = panel.locator(".jp-ReactBox-change")
                await changes.first.get_by_text("Saved in the editor: src/App.jsx").wait_for()

                # An AI edit of the same file; then a save from the editor, which still
                # shows the old text: Lab offers overwrite or revert; revert shows the AI's.
                llm.answer(block("src/App.jsx", "<h1>Get edited</h1>", "<h1>From the AI</h1>"))
                await panel.locator("textarea").fill("Say it is from the AI")
                await panel.get_by_role("button", name="Apply").click()
                await frame.get_by_role("heading", name="From the AI").wait_for(timeout=60_000)
                await (
                    panel.locator(".jp-ReactBox-editstatus")
                    .get_by_text("applied:", exact=False)
                    .wait_for(timeout=60_000)
                )
                await editor.get_by_text("Count is").first.click()
                for key in ("End", "Home", "Control+Shift+ArrowRight"):
                    await page.keyboard.press(key)  # "Count" selected
                await page.keyboard.type("Clicks")
                await page.keyboard.press("Control+s")
                # Lab's own check offers overwrite or revert; where it does not see the
                # change in time, the drive's save (over the version it loaded) is refused.
                dialog = page.locator(".jp-Dialog").filter(
                    has_text=re.compile("has changed on disk|changed since you opened it")
                )
                await dialog.wait_for()
                assert "From the AI" in app_jsx() and "Clicks" not in app_jsx()
                if await dialog.get_by_role("button", name="Revert").count():
                    await dialog.get_by_role("button", name="Revert").click()
                    await editor.get_by_text("From the AI").wait_for(timeout=10_000)
                else:
                    await dialog.get_by_role("button").last.click()
                    await page.keyboard.press("Escape")
                assert "From the AI" in app_jsx() and "Clicks" not in app_jsx()

                # A new file in the project, renamed, then deleted, each through the drive.
                await page.locator("li[data-id='reactbox-files']").click()
                await files.locator(".jp-DirListing-content").click(button="right")
                await page.locator(".lm-Menu-item", has_text="New File").first.click()
                listed = lambda: json.loads(lab.call("GET", "reactbox/api/projects/shop/files")[1])  # noqa: E731
                for _ in range(100):
                    if "src/untitled.txt" in listed()["files"]:
                        break
                    await asyncio.sleep(0.1)
                assert "src/untitled.txt" in listed()["files"]
                name = files.locator("input.jp-DirListing-editor")  # Lab asks for a name
                await name.fill("notes.md", timeout=30_000)
                await name.press("Enter")
                await files.locator(".jp-DirListing-item", has_text="notes.md").wait_for()
                assert "src/notes.md" in listed()["files"]
                await files.locator(".jp-DirListing-item", has_text="notes.md").click(
                    button="right"
                )
                removal = re.compile("Delete|Move to Trash")  # as this Lab names it
                await page.locator(".lm-Menu-item", has_text=removal).first.click()
                await page.locator(".jp-Dialog").get_by_role("button", name=removal).click()
                await files.locator(".jp-DirListing-item", has_text="notes.md").wait_for(
                    state="detached"
                )
                assert "src/notes.md" not in listed()["files"]

                # Name the AI edit's point; restore the upload, then undo the restore.
                await panel.get_by_role("button", name="Timeline").click()  # hide
                await panel.get_by_role("button", name="Timeline").click()  # read again
                ai = changes.filter(has_text="AI edit: Say it is from the AI")
                await ai.get_by_role("button", name="Name…").click()
                await page.locator(".jp-Dialog input").fill("from the AI")
                await page.locator(".jp-Dialog").get_by_role("button", name="Ok").click()
                await panel.locator(".jp-ReactBox-points").get_by_text("from the AI").wait_for()
                await changes.last.get_by_text("Uploaded").wait_for()
                await (
                    changes.nth(await changes.count() - 2)
                    .get_by_role("button", name="Restore")
                    .click()
                )  # the change after the upload: the first save, "Get edited"
                await frame.get_by_role("heading", name="Get edited").wait_for(timeout=30_000)
                await changes.first.get_by_text("Restored to", exact=False).wait_for()
                await panel.get_by_role("button", name="Undo").click()
                await frame.get_by_role("heading", name="From the AI").wait_for(timeout=30_000)
                await (
                    panel.locator(".jp-ReactBox-points")
                    .get_by_role("button", name="from the AI")
                    .click()
                )  # restoring a named point: the same app, so nothing to do
                await (
                    panel.locator(".jp-ReactBox-editstatus")
                    .get_by_text("already as it was", exact=False)
                    .wait_for()
                )

                # Open source: a picked element opens its file at its line.
                line = app_jsx().splitlines().index("          <h1>From the AI</h1>") + 1
                await panel.get_by_role("button", name="Select").click()
                await frame.get_by_role("heading", name="From the AI").click()
                await panel.get_by_role("button", name="Open source").click()
                await page.locator(".jp-StatusBar-Widget", has_text=f"Ln {line}, Col 11").wait_for(
                    timeout=10_000
                )
                await page.screenshot(path=str(ARTIFACTS / "lab-drive-and-timeline.png"))
            finally:
                await page.screenshot(path=str(ARTIFACTS / "lab-drive-last.png"))
                await browser.close()
    finally:
        lab.stop()
        llm.stop()
