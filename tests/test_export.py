"""Export: a project's source as a ZIP, through a real Jupyter server (base URL
``/a%40b/``) on the fake backend; the kernel's client and magic; and, on the
default backend in Chromium, an export uploaded again renders the same page."""

from __future__ import annotations

import asyncio
import io
import json
import os
import zipfile

import pytest
from conftest import FIXTURES, app_of, preview_page, zip_dir
from tornado.httpclient import HTTPClientError

from jupyter_reactbox import history
from jupyter_reactbox.kernel.client import ReactBoxClient


async def export(jp_fetch, project_id: str, **params) -> tuple[zipfile.ZipFile, dict]:
    r = await jp_fetch("reactbox", "api", "projects", project_id, "export", params=params)
    assert r.headers["Content-Type"] == "application/zip"
    assert r.headers["Content-Disposition"] == f'attachment; filename="{project_id}.zip"'
    return zipfile.ZipFile(io.BytesIO(r.body)), dict(r.headers)


def tracked(app_dir) -> dict[str, bytes]:
    """The files of the project's last commit, with their bytes."""
    listing = history.git(app_dir, "ls-tree", "-r", "--name-only", "HEAD").split("\n")
    return {p: (app_dir / p).read_bytes() for p in listing if p}


async def test_the_export_is_the_apps_source_as_it_is_now(api, jp_fetch, projects_dir):
    r = await api.upload(zip_dir(FIXTURES / "vite-react"), "shop")
    assert r.code == 201
    app = app_of(projects_dir, "shop")
    # As it is now: a change by hand, committed.
    await jp_fetch(
        "reactbox", "api", "projects", "shop", "files", "src", "App.jsx",
        method="PUT", body=b"export default () => <h1>Exported</h1>\n",
    )  # fmt: skip
    # What is not the user's work: dependencies, build output, the history.
    for folder in ("node_modules/left-pad", "dist/assets", "src/nested/.next"):
        (app / folder).mkdir(parents=True, exist_ok=True)
    (app / "node_modules/left-pad/index.js").write_text("module.exports = 1\n")
    (app / "dist/assets/index.js").write_text("built\n")
    (app / "src/nested/.next/cache.json").write_text("{}")
    # Notebook data, and what a dev server could have planted.
    (app / history.DATA_DIR).mkdir(parents=True)
    (app / history.DATA_DIR / "sales.json").write_text("[1, 2]")
    os.symlink("/etc/passwd", app / "src/passwd.txt")
    os.mkfifo(app / "src/pipe")
    (app / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (app / "run.sh").chmod(0o755)

    zf, headers = await export(jp_fetch, "shop")
    names = sorted(zf.namelist())
    assert all(n.startswith("shop/") for n in names)
    files = {n.removeprefix("shop/"): zf.read(n) for n in names}
    assert files["src/App.jsx"] == b"export default () => <h1>Exported</h1>\n"
    assert files["package.json"] == (FIXTURES / "vite-react/package.json").read_bytes()
    assert not [p for p in files if p.split("/")[0] in ("node_modules", "dist")]
    assert not [p for p in files if ".next" in p or ".git" in p.split("/")]
    assert "src/passwd.txt" not in files and "src/pipe" not in files  # never followed
    assert not [p for p in files if p.startswith(history.DATA_DIR)]
    assert (zf.getinfo("shop/run.sh").external_attr >> 16) & 0o111
    assert headers["X-Reactbox-Files"] == str(len(files))
    # Everything the history tracks, and nothing else besides the new script.
    assert set(files) == set(tracked(app)) | {"run.sh"}

    with_data, _ = await export(jp_fetch, "shop", data="1")
    assert with_data.read(f"shop/{history.DATA_DIR}/sales.json") == b"[1, 2]"


async def test_an_export_uploaded_again_is_the_same_app(api, jp_fetch, projects_dir):
    r = await api.upload(zip_dir(FIXTURES / "vite-react", wrap="repo-main"), "shop")
    assert r.code == 201
    r = await jp_fetch("reactbox", "api", "projects", "shop", "export")
    r = await api.upload(r.body, "copy")
    assert r.code == 201
    assert json.loads(r.body)["framework"] == "vite"
    original, copy = app_of(projects_dir, "shop"), app_of(projects_dir, "copy")
    assert tracked(copy) == tracked(original)


async def test_the_export_of_a_project_that_is_not_there_is_404(jp_fetch):
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("reactbox", "api", "projects", "nope", "export")
    assert err.value.code == 404


async def test_the_kernel_client_and_magic_export(
    api, jp_serverapp, jp_http_port, jp_base_url, tmp_path
):
    r = await api.upload(zip_dir(FIXTURES / "vite-react"), "shop")
    assert r.code == 201
    client = ReactBoxClient(
        f"http://127.0.0.1:{jp_http_port}{jp_base_url}", jp_serverapp.identity_provider.token
    )
    project = await asyncio.to_thread(client.project, "shop")
    assert project.info["export_url"] == f"{jp_base_url}reactbox/api/projects/shop/export"
    path = await asyncio.to_thread(project.export, tmp_path)
    assert path == tmp_path / "shop.zip"
    assert "shop/src/App.jsx" in zipfile.ZipFile(path).namelist()
    assert not list(tmp_path.glob(".*.part"))

    from IPython.testing.globalipapp import get_ipython

    from jupyter_reactbox.kernel.magics import ReactBoxMagics

    ip = get_ipython()
    ip.register_magics(ReactBoxMagics(ip, client=client))
    target = tmp_path / "named.zip"
    await asyncio.to_thread(ip.run_line_magic, "reactbox", f"export shop {target} --data")
    assert zipfile.ZipFile(target).read("shop/package.json")


@pytest.mark.docker
@pytest.mark.browser
async def test_an_export_uploaded_again_renders_the_same_page(api, jp_fetch, server_url):
    """On the default backend: change the app, export it, upload the export as a new
    project; both pages say the same in Chromium."""
    await api.upload_running("vite-react", "shop")
    await jp_fetch(
        "reactbox", "api", "projects", "shop", "files", "src", "App.jsx",
        method="PUT",
        body=b"export default function App() { return <h1>Made in a notebook</h1> }\n",
    )  # fmt: skip
    r = await jp_fetch("reactbox", "api", "projects", "shop", "export")
    r = await api.upload(r.body, "copy")
    assert r.code == 201
    copy = await api.wait("copy")
    shop = await api.get("shop")
    seen = []
    for info in (shop, copy):
        async with preview_page(server_url + info["preview_url"]) as (page, errors):
            await page.wait_for_selector("h1", timeout=60_000)
            seen.append(await page.inner_text("h1"))
            assert not errors
    assert seen == ["Made in a notebook", "Made in a notebook"]
