"""The projects as MCP tools, driven by the ``mcp`` SDK's own client over both
transports: streamable HTTP at ``{base_url}reactbox/mcp`` of a real Jupyter server
(base URL ``/a%40b/``), and ``jupyter reactbox mcp`` over stdio in a process of
its own.  The first tests need no engine (the fake backend); the session on the
default engine is watched in Chromium at each step.  Attacks: no login, another
path, a folder outside the server's root, a project's name that is not one."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import sys

import httpx2
import pytest
from conftest import FIXTURES, app_of, preview_page
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from jupyter_reactbox import history

PACKAGE = {
    "name": "tiny",
    "private": True,
    "scripts": {"dev": "vite"},
    "dependencies": {"react": "^19.0.0", "react-dom": "^19.0.0"},
    "devDependencies": {"vite": "^7.0.0", "@vitejs/plugin-react": "^5.0.0"},
}
SMALL_APP = {
    "package.json": json.dumps(PACKAGE),
    "index.html": '<div id="root"></div><script type="module" src="/src/main.jsx"></script>\n',
    "src/main.jsx": "import { createRoot } from 'react-dom/client'\n"
    "import App from './App.jsx'\ncreateRoot(document.getElementById('root')).render(<App />)\n",
    "src/App.jsx": "export default function App() {\n  return <h1>Tiny</h1>\n}\n",
}


@contextlib.asynccontextmanager
async def over_http(url: str, token: str | None):
    """An MCP client session with the server at ``url``, with Jupyter's ``token``."""
    headers = {"Authorization": f"token {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(600)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@contextlib.asynccontextmanager
async def over_stdio(url: str, token: str, cwd=None):
    """``jupyter reactbox mcp`` in a process of its own, as an agent starts it."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "jupyter_reactbox.cli", "mcp", "--url", url, "--token", token],
        cwd=str(cwd) if cwd else None,
        env=dict(os.environ),
    )
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, **arguments):
    """A tool's answer: its structured content (or text); a failed call fails here."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, (tool, result.content)
    if result.structured_content is not None:
        content = result.structured_content
        return content.get("result", content) if set(content) == {"result"} else content
    text = result.content[0].text if result.content else None
    with contextlib.suppress(TypeError, ValueError):
        return json.loads(text)
    return text


async def refused(session: ClientSession, tool: str, **arguments) -> str:
    """The error a refused call says (it must be refused)."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, (tool, result.content)
    return result.content[0].text


@pytest.fixture
def mcp_url(jp_serverapp, http_server_client, jp_http_port, jp_base_url):
    """The server's MCP endpoint (the server listening: ``http_server_client``)."""
    return f"http://127.0.0.1:{jp_http_port}{jp_base_url}reactbox/mcp"


@pytest.fixture
def token(jp_serverapp):
    return jp_serverapp.identity_provider.token


async def test_the_tools_work_on_files_as_the_api_does(mcp_url, token, projects_dir):
    async with over_http(mcp_url, token) as session:
        tools = {t.name for t in (await session.list_tools()).tools}
        assert {
            "list_projects", "status", "upload", "list_files", "read_file", "write_file",
            "check_page", "logs", "screenshot", "history", "diff", "undo", "redo",
            "restore", "edit",
        } <= tools  # fmt: skip
        info = await call(session, "upload", name="tiny", files=SMALL_APP, wait=False)
        assert info["id"] == "tiny"
        assert [p["id"] for p in await call(session, "list_projects")] == ["tiny"]
        assert "src/App.jsx" in await call(session, "list_files", project="tiny")
        assert "<h1>Tiny</h1>" in await call(
            session, "read_file", project="tiny", path="src/App.jsx"
        )

        # Each write is a commit on the timeline, and undo takes it back.
        app = app_of(projects_dir, "tiny")
        before = history.head(app)
        wrote = await call(
            session, "write_file", project="tiny", path="src/App.jsx",
            content="export default function App() {\n  return <h1>Agent</h1>\n}\n",
        )  # fmt: skip
        assert wrote["changed"] and history.head(app) == wrote["commit"] != before
        timeline = await call(session, "history", project="tiny")
        assert timeline[0]["kind"] == "hand-edit" and timeline[0]["files"] == ["src/App.jsx"]
        assert "+  return <h1>Agent</h1>" in await call(session, "diff", project="tiny")
        await call(session, "undo", project="tiny")
        assert history.head(app) == before
        assert "<h1>Tiny</h1>" in (app / "src/App.jsx").read_text()
        await call(session, "redo", project="tiny")
        assert "<h1>Agent</h1>" in (app / "src/App.jsx").read_text()
        await call(session, "restore", project="tiny", to=before)
        assert "<h1>Tiny</h1>" in (app / "src/App.jsx").read_text()

        # The resources: the file tree.
        tree = await session.read_resource("reactbox://projects/tiny/files")
        assert "src/App.jsx" in json.loads(tree.contents[0].text)

        # A syntax error is refused as the files API refuses it: nothing written.
        said = await refused(
            session, "write_file", project="tiny", path="src/App.jsx", content="export default (",
        )  # fmt: skip
        assert "syntax error" in said
        assert "<h1>Tiny</h1>" in (app / "src/App.jsx").read_text()


async def test_stdio_serves_the_same_tools(mcp_url, jp_http_port, jp_base_url, token, tmp_path):
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}"
    folder = tmp_path / "tiny-app"
    for path, text in SMALL_APP.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    async with over_stdio(url, token, cwd=tmp_path) as session:
        # stdio is the user's own process: a folder anywhere they can read.
        info = await call(session, "upload", name="mine", folder=str(folder), wait=False)
        assert info["id"] == "mine"
        assert "src/main.jsx" in await call(session, "list_files", project="mine")
        said = await refused(session, "read_file", project="nothing-here", path="x")
        assert "No project 'nothing-here'" in said


async def test_mcp_attacks(jp_fetch, mcp_url, token, projects_dir, jp_root_dir, tmp_path):
    """No login, no tools; a tool acts only inside the caller's projects."""
    message = {
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "list_projects", "arguments": {}},
    }  # fmt: skip
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with httpx2.AsyncClient() as http:
        for auth in ({}, {"Authorization": "token wrong"}):
            r = await http.post(mcp_url, json=message, headers={**headers, **auth})
            assert r.status_code == 403, r.text
        r = await http.post(
            mcp_url, json=message, headers={**headers, "Authorization": f"token {token}"}
        )
        assert r.status_code == 200 and "result" in r.json()

    outside = tmp_path / "outside-root"
    shutil.copytree(FIXTURES / "vite-react", outside, ignore=shutil.ignore_patterns("node_modules"))
    async with over_http(mcp_url, token) as session:
        await call(session, "upload", name="shop", files=SMALL_APP, wait=False)
        app = app_of(projects_dir, "shop")
        # Paths: out of the project, absolute, through a link: refused, nothing written.
        for path in ("../escaped.txt", "/tmp/escaped.txt", "src/../../escaped.txt"):
            said = await refused(session, "write_file", project="shop", path=path, content="x")
            assert "path" in said.lower(), said
        assert not (app.parent / "escaped.txt").exists()
        assert not any(projects_dir.rglob("escaped.txt"))
        (app / "src" / "passwd.txt").symlink_to("/etc/passwd")
        said = await refused(session, "read_file", project="shop", path="src/passwd.txt")
        assert "root:" not in said
        # A project that is not one: the API's 404, with its words.
        for name in ("other", "../shop", "shop/../.."):
            said = await refused(session, "read_file", project=name, path="src/App.jsx")
            assert "No project" in said or "404" in said, said
        # Uploads read folders under the server's root only, never through a link.
        for folder in (str(outside), "../", "../../etc"):
            said = await refused(session, "upload", name="stolen", folder=folder)
            assert "root" in said, said
        (jp_root_dir / "link").symlink_to(outside)
        said = await refused(session, "upload", name="stolen", folder="link")
        assert "outside" in said, said
        bad_files = {"../evil.js": "x", "package.json": "{}"}
        said = await refused(session, "upload", name="evil", files=bad_files)
        assert "'..'" in said
        assert not (projects_dir.parent / "evil.js").exists()
        assert [p["id"] for p in await call(session, "list_projects")] == ["shop"]
        # A tool's arguments are typed: the SDK refuses the wrong ones.
        said = await refused(session, "logs", project="shop", tail="all")
        assert "tail" in said


@pytest.mark.docker
@pytest.mark.browser
async def test_an_agent_session_over_both_transports_shows_in_the_preview(
    mcp_url, token, jp_http_port, jp_base_url, jp_root_dir, tmp_path, server_url
):
    """Upload, screenshot, break the page, read its error, fix it, undo: each step
    seen in Chromium, through HTTP and then through stdio."""
    shutil.copytree(FIXTURES / "vite-react", jp_root_dir / "apps" / "shop")
    shutil.copytree(FIXTURES / "vite-react", tmp_path / "shop-two")
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}"
    async with over_http(mcp_url, token) as session:
        await drive(session, "shop", "apps/shop", server_url)
    async with over_stdio(url, token, cwd=tmp_path) as session:
        await drive(session, "shop-two", str(tmp_path / "shop-two"), server_url)


async def drive(session: ClientSession, name: str, folder: str, server_url: str) -> None:
    info = await call(session, "upload", name=name, folder=folder)
    assert info["status"] == "running", info
    async with preview_page(server_url + info["preview_url"]) as (page, _):
        frame = page.main_frame
        await frame.wait_for_selector("h1")
        assert await frame.inner_text("h1") == "Get started"

        shot = await session.call_tool("screenshot", {"project": name})
        assert not shot.is_error, shot.content
        png = base64.b64decode(shot.content[0].data)
        assert shot.content[0].mime_type == "image/png" and png.startswith(b"\x89PNG")

        original = await call(session, "read_file", project=name, path="src/App.jsx")
        broken = original.replace("<h1>Get started</h1>", "<h1>{brokenByTheAgent.title}</h1>")
        await call(session, "write_file", project=name, path="src/App.jsx", content=broken)
        await page.wait_for_function("() => !document.querySelector('h1')", timeout=30_000)
        looked = await call(session, "check_page", project=name)
        assert looked["compile_error"] is None, looked
        thrown = [e["message"] for e in looked["page"]["errors"]] + [
            e["message"] for e in looked["page_errors"]
        ]
        assert any("brokenByTheAgent" in m for m in thrown), looked

        fixed = original.replace("<h1>Get started</h1>", "<h1>Fixed by the agent</h1>")
        await call(session, "write_file", project=name, path="src/App.jsx", content=fixed)
        await page.reload()
        await frame.wait_for_selector("h1")
        assert await frame.inner_text("h1") == "Fixed by the agent"
        looked = await call(session, "check_page", project=name)
        assert looked["compile_error"] is None and not looked["page"]["errors"], looked

        # Undo, twice: the fix, then the break; the page is as it was uploaded.
        await call(session, "undo", project=name)
        await call(session, "undo", project=name)
        await page.reload()
        await frame.wait_for_selector("h1")
        assert await frame.inner_text("h1") == "Get started"
        assert await call(session, "read_file", project=name, path="src/App.jsx") == original
