"""Select to edit, from the dev server's side: in development the app's elements
carry their source location (file, line, column), without a file added to the
project, a line added to its config, or a trace in its production build."""

from __future__ import annotations

import pytest
from conftest import FIXTURES, preview_page
from test_edits import HEADING

pytestmark = [pytest.mark.docker, pytest.mark.browser]


def own_files(root) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "node_modules" not in p.relative_to(root).parts
    }


async def test_elements_say_where_they_are_written_in_development_only(
    api, runtime, server_url, docker_client, owner
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
    container = docker_client.containers.get(f"reactbox-{owner}-shop")
    build = container.exec_run(
        ["sh", "-c", "cd /project && node node_modules/vite/bin/vite.js build --outDir /tmp/dist"]
    )
    assert build.exit_code == 0, build.output.decode(errors="replace")[-2000:]
    listing = container.exec_run(["sh", "-c", "ls /tmp/dist/assets && cat /tmp/dist/assets/*.js"])
    built = listing.output.decode(errors="replace")
    assert ".js" in built and "Get started" in built
    assert "reactbox" not in built.lower()
