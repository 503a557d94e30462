"""Select to edit, from the preview's side: in development the app's elements
carry their source location (file, line, column), without a file added to the
project, a line added to its config, or a trace in its production build; and
the page, framed as JupyterLab frames it, answers select mode and Alt-clicks to
its parent by postMessage, and says when its elements carry no location."""

from __future__ import annotations

import asyncio

import pytest
from conftest import FIXTURES, chromium, embed_preview, engine_name, preview_page
from test_edits import HEADING

pytestmark = [pytest.mark.docker, pytest.mark.browser]


def own_files(root) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "node_modules" not in p.relative_to(root).parts
    }


async def test_elements_say_where_they_are_written_in_development_only(
    api,
    runtime,
    server_url,
    docker_client,
    owner,
    projects_dir,
):
    info = await api.upload_running()
    app = runtime.store.get("shop").app_dir
    line = (app / "src" / "App.jsx").read_text().splitlines().index(HEADING) + 1
    async with preview_page(server_url + info["preview_url"]) as (page, errors):
        await page.get_by_text("Get started").wait_for()
        assert await page.get_attribute("h1", "data-reactbox-src") == f"src/App.jsx:{line}:11"
        tagged = await page.eval_on_selector_all(
            "[data-reactbox-src]", "els => els.map(e => e.getAttribute('data-reactbox-src'))"
        )
        assert len(tagged) > 20 and all(t.startswith("src/App.jsx:") for t in tagged), tagged
        assert errors == []

    # Nothing of it is in the project: its files are the upload's, byte for byte.
    assert own_files(app) == own_files(FIXTURES / "vite-react")

    # The app's own production build, in its container, knows nothing of it.
    container = docker_client.containers.get(engine_name(owner, projects_dir, "shop"))
    build = container.exec_run(
        ["sh", "-c", "cd /project && node node_modules/vite/bin/vite.js build --outDir /tmp/dist"]
    )
    assert build.exit_code == 0, build.output.decode(errors="replace")[-2000:]
    listing = container.exec_run(["sh", "-c", "ls /tmp/dist/assets && cat /tmp/dist/assets/*.js"])
    built = listing.output.decode(errors="replace")
    assert ".js" in built and "Get started" in built
    assert "reactbox" not in built.lower()


LISTEN = """() => { window.told = []; addEventListener('message', e => {
    if (e.source === document.querySelector('iframe').contentWindow) window.told.push(e.data);
}); }"""


async def told(page, n: int) -> list:
    for _ in range(100):
        messages = await page.evaluate("window.told")
        if len(messages) >= n:
            return messages
        await asyncio.sleep(0.05)
    raise AssertionError(f"the frame told {messages}, not {n} messages")


async def test_the_framed_page_tells_its_parent_what_was_picked(api, runtime, server_url):
    info = await api.upload_running()
    url = server_url + info["preview_url"]
    app = runtime.store.get("shop").app_dir
    line = (app / "src" / "App.jsx").read_text().splitlines().index(HEADING) + 1
    button_line = (app / "src" / "App.jsx").read_text().splitlines().index("        <button") + 1
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(server_url + "/not-a-page")  # a page of Jupyter's origin frames it
        await page.evaluate(LISTEN)
        frame = await embed_preview(page, url)
        await frame.get_by_text("Count is 0").wait_for()
        post = "m => document.querySelector('iframe').contentWindow.postMessage(m, '*')"

        # Select mode: hover outlines, a click picks and is not the app's.
        await page.evaluate(post, {"reactbox": "select", "on": True})
        await frame.get_by_role("heading", name="Get started").hover()
        await frame.locator("[data-reactbox-outline='hover']").wait_for(state="visible")
        await frame.get_by_role("button", name="Count is 0").click()
        picked = {"reactbox": "selected", "at": f"src/App.jsx:{button_line}:9", "tag": "button",
                  "text": "Count is 0", "classes": "counter"}  # fmt: skip
        assert (await told(page, 1))[0] == picked
        assert await frame.get_by_text("Count is 0").is_visible()  # not pressed
        await frame.get_by_role("button", name="Count is 0").click()  # mode over: pressed
        await frame.get_by_text("Count is 1").wait_for()

        # Alt-click picks at any time; Escape ends select mode and says so.
        await frame.get_by_role("heading", name="Get started").click(modifiers=["Alt"])
        assert (await told(page, 2))[1]["at"] == f"src/App.jsx:{line}:11"
        await page.evaluate(post, {"reactbox": "select", "on": True})
        await frame.locator("body").press("Escape")
        assert (await told(page, 3))[2] == {"reactbox": "select", "on": False}

        # A page whose elements say nothing of where they are written (what a
        # create-react-app or Next.js page is): select mode is not available.
        await frame.evaluate(
            "() => document.querySelectorAll('[data-reactbox-src]')"
            ".forEach(e => e.removeAttribute('data-reactbox-src'))"
        )
        await page.evaluate(post, {"reactbox": "select", "on": True})
        assert (await told(page, 4))[3] == {"reactbox": "unavailable"}
