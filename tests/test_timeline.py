"""The app's files as a file browser and an editor need them, and the project's
timeline: versions that refuse a stale save (409), folders, rename and delete as
changes, what made each change, restore as one change Undo takes back, named
points; and attacks on these routes.  A real Jupyter server (base URL /a%40b/),
real git, the kernel's client and magics; no dev server is needed."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from conftest import FIXTURES, zip_dir
from IPython.core.error import UsageError
from tornado.httpclient import HTTPClientError

from jupyter_reactbox import history
from jupyter_reactbox.kernel.client import ReactBoxClient, ReactBoxClientError
from jupyter_reactbox.kernel.magics import ReactBoxMagics


@pytest.fixture
def ip_shell():
    from IPython.testing.globalipapp import get_ipython

    return get_ipython()


@pytest.fixture
def project(runtime):
    return runtime.store.import_zip(zip_dir(FIXTURES / "vite-react"), "shop")


@pytest.fixture
def call(jp_fetch):
    async def call(method, *path, body=None, headers=None, params=None):
        try:
            r = await jp_fetch(
                "reactbox", "api", "projects", "shop", *path, method=method, body=body,
                headers=headers or {}, params=params or {}, allow_nonstandard_methods=True,
            )  # fmt: skip
            data = json.loads(r.body) if r.body and r.body[:1] in b"{[" else r.body
            return r.code, data, r.headers
        except HTTPClientError as exc:
            return exc.code, json.loads(exc.response.body)["message"], exc.response.headers

    return call


async def test_a_stale_save_is_refused_and_every_change_is_on_the_timeline(project, call):
    app = project.app_dir
    code, text, headers = await call("GET", "files", "src", "App.jsx")
    opened = headers["ETag"]
    assert code == 200 and opened == f'"{history.worktree.blob_id(text)}"'
    saved = text.decode().replace("Get started", "Welcome")

    # A save in the editor with the version it opened: written, committed, labelled.
    code, body, headers = await call(
        "PUT", "files", "src", "App.jsx", body=saved.encode(),
        headers={"If-Match": opened}, params={"from": "editor"},
    )  # fmt: skip
    assert code == 200 and body["commit"] and headers["ETag"] == f'"{body["version"]}"'
    # The same editor saves again over what it opened: the file changed since (409),
    # and nothing is lost.
    code, message, _ = await call(
        "PUT", "files", "src", "App.jsx", body=b"export default 1\n", headers={"If-Match": opened}
    )
    assert code == 409 and "changed since you opened it" in message
    assert (app / "src" / "App.jsx").read_text() == saved
    # Without If-Match (as the notebook writes): written as before.
    code, _, _ = await call("PUT", "files", "src", "Note.md", body=b"# Notes\n")
    assert code == 200
    code, message, _ = await call(
        "PUT", "files", "src", "Note.md", body=b"x", headers={"If-None-Match": "*"}
    )
    assert code == 409 and "exists already" in message

    # Folders, rename and delete.
    code, _, _ = await call("PUT", "files", "src", "parts", params={"type": "directory"})
    assert code == 201 and (app / "src" / "parts").is_dir()
    code, listing, _ = await call("GET", "files", params={"detail": "1"})
    kinds = {e["path"]: e["type"] for e in listing["entries"]}
    assert kinds["src/parts"] == "directory" and kinds["src/App.jsx"] == "file"
    assert not [p for p in kinds if p.split("/")[0] in ("node_modules", ".git")]
    code, body, _ = await call(
        "PATCH", "files", "src", "Note.md", body=json.dumps({"path": "src/parts/Note.md"})
    )
    assert code == 200 and (app / "src/parts/Note.md").read_text() == "# Notes\n"
    assert not (app / "src/Note.md").exists()
    code, _, _ = await call("DELETE", "files", "src", "parts")
    assert code == 200 and not (app / "src" / "parts").exists()

    # The timeline says what made each change, and its files.
    code, timeline, _ = await call("GET", "history")
    made = [(c["kind"], c["detail"], c["files"]) for c in timeline["commits"]]
    assert made == [
        ("hand-edit", "src/parts", ["src/parts/Note.md"]),
        ("hand-edit", "src/Note.md to src/parts/Note.md", ["src/Note.md", "src/parts/Note.md"]),
        ("hand-edit", "src/Note.md", ["src/Note.md"]),
        ("editor-save", "src/App.jsx", ["src/App.jsx"]),
        ("upload", "", made[-1][2]),
    ]
    editor_save = timeline["commits"][3]["sha"]

    # Name a point, change on, restore it as one change, and undo the restore.
    code, point, _ = await call(
        "PUT", "points", "before the redesign", body=json.dumps({"at": editor_save})
    )
    assert code == 200 and point["sha"] == editor_save
    redesigned = saved.replace("Welcome", "Redesigned")
    await call("PUT", "files", "src", "App.jsx", body=redesigned.encode())
    code, body, _ = await call("POST", "restore", body=json.dumps({"to": "before the redesign"}))
    assert code == 200 and body["head"]["message"].startswith("Restore to before the redesign")
    assert (app / "src" / "App.jsx").read_text() == saved
    code, timeline, _ = await call("GET", "history")
    assert timeline["commits"][0]["kind"] == "restore"
    assert timeline["points"][0]["name"] == "before the redesign"
    assert [c["points"] for c in timeline["commits"] if c["sha"] == editor_save] == [
        ["before the redesign"]
    ]
    code, _, _ = await call("POST", "undo")
    assert code == 200 and (app / "src" / "App.jsx").read_text() == redesigned
    code, message, _ = await call("POST", "restore", body=json.dumps({"to": "no such point"}))
    assert code == 404 and "neither a named point" in message
    code, _, _ = await call("DELETE", "points", "before the redesign")
    assert code == 204


async def test_the_notebook_sees_the_timeline_restores_and_names_points(
    project, jp_serverapp, jp_fetch, server_url, jp_base_url, ip_shell
):
    # (jp_fetch: pytest-jupyter's server listens only for a test that asks for it.)
    client = ReactBoxClient(server_url + jp_base_url, jp_serverapp.identity_provider.token)
    shop = await asyncio.to_thread(client.project, "shop")
    await asyncio.to_thread(shop.write, "src/App.jsx", "export default function App() {}\n")
    magics = ReactBoxMagics(ip_shell, client)
    ip_shell.register_magics(magics)

    def run(line: str) -> str:
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            ip_shell.run_line_magic("reactbox", line)
        return out.getvalue()

    out = await asyncio.to_thread(run, "point shop first version --at HEAD~1")
    assert "Named" in out and "'first version'" in out
    out = await asyncio.to_thread(run, "history shop")
    assert "hand-edit: src/App.jsx" in out and "upload  [first version]" in out
    out = await asyncio.to_thread(run, "restore shop first version")
    assert out.startswith("Restore to first version") and "%reactbox undo shop" in out
    entries = await asyncio.to_thread(shop.history)
    assert [e["kind"] for e in entries] == ["restore", "hand-edit", "upload"]
    assert (await asyncio.to_thread(shop.points))[0]["name"] == "first version"
    with pytest.raises(UsageError, match="neither a named point"):
        await asyncio.to_thread(run, "restore shop nothing-of-that-name")
    with pytest.raises(ReactBoxClientError):
        await asyncio.to_thread(shop.name_point, "a\x07bell")


async def test_attacks_on_the_files_and_history_routes_write_nothing_outside(
    project, call, tmp_path
):
    """Paths that climb out, absolute paths, a link the app planted, dependencies and
    history, control characters: each a 4xx, and nothing is written anywhere."""
    app = project.app_dir
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, app / "src" / "out")  # what the app's own code could plant
    os.symlink(outside / "x.js", app / "src" / "x.js")
    head = history.head(app)

    def snapshot():
        return sorted(
            (p.relative_to(app.parent).as_posix(), p.is_symlink())
            for p in app.parent.rglob("*") if "history.git" not in p.parts
        )  # fmt: skip

    before = snapshot()
    body = b"export const x = 1\n"
    cases = [
        ("PUT", ["files", "..", "escape.js"]),
        ("PUT", ["files", "src", "..", "..", "escape.js"]),
        ("PUT", ["files", "src", "out", "escape.js"]),
        ("PUT", ["files", "src", "x.js"]),
        ("PUT", ["files", "node_modules", "react", "index.js"]),
        ("PUT", ["files", ".git", "config"]),
        ("PUT", ["files", "src", "a\x01b.js"]),
        ("PUT", ["files", "src", "a\nb.js"]),
        ("PUT", ["files", "src", "out"], {"type": "directory"}),
        ("DELETE", ["files", "src", "out"]),
        ("DELETE", ["files", "src", "x.js"]),
        ("DELETE", ["files", "node_modules"]),
        ("DELETE", ["files", "..", "history.git"]),
        ("GET", ["files", "src", "out", "anything"]),
        ("GET", ["files", "src", "x.js"]),
    ]
    for method, path, *params in cases:
        code, message, _ = await call(
            method, *path, body=body if method == "PUT" else None,
            params=params[0] if params else None,
        )  # fmt: skip
        assert 400 <= code < 500, (method, path, code, message)
    renames = ["../escape.js", "/tmp/escape.js", "src/out/escape.js", "node_modules/x.js",
               ".git/x", "src/a\x1bb.js", "src/x.js"]  # fmt: skip
    for target in renames:
        code, message, _ = await call(
            "PATCH", "files", "src", "App.jsx", body=json.dumps({"path": target})
        )
        assert 400 <= code < 500, (target, code, message)
    for rev in ("--output=/tmp/x", "HEAD^{tree}", "main@{0}", "../HEAD"):
        code, _, _ = await call("POST", "restore", body=json.dumps({"to": rev}))
        assert code == 404, rev
    code, _, _ = await call("PUT", "points", "a\x07b", body=b"{}")
    assert code == 400
    assert list(outside.iterdir()) == []
    assert snapshot() == before and history.head(app) == head
    assert not (app.parent.parent / "escape.js").exists()
