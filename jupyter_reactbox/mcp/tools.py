"""The user's projects as Model Context Protocol tools, with the official ``mcp`` SDK.

One set of tools, two transports: ``web.py`` serves them from the Jupyter server
(and from the JupyterHub service) at ``{base_url}reactbox/mcp``, and
``jupyter reactbox mcp`` speaks them over stdio to a local agent.

Every tool is a call of the REST API with the caller's own credentials (the
kernel's client, ``kernel/client.py``): what an agent may do is what that user
may do through the API, with the same checks, and nothing more.  So a name that
is not one of the caller's projects is the API's 404, the same for a project of
another user as for one that never was; every write is a commit that ``undo``
takes back; and nothing a project's files say is ever read as an instruction
to this server (file contents are data, returned as text).
"""

from __future__ import annotations

import functools
import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from mcp.types import ToolAnnotations

from .._version import __version__
from ..errors import ReactBoxClientError
from ..kernel.client import Project, ReactBoxClient

INSTRUCTIONS = """\
jupyter-reactbox runs the user's React apps with a live, hot-reloading preview.
Work on one project at a time: read its files, write them (each write is one
change on its timeline, and `undo` takes it back), then `check_page` to see
whether the page compiles and renders without errors, and `screenshot` to see it.
"""

MOST_UPLOADED_FILES = 2000
MOST_UPLOADED_BYTES = 32 << 20
START_WAIT = 600.0
"""Seconds ``upload`` and ``start`` wait for the preview to run, at most."""
SOURCE = (".js", ".jsx", ".ts", ".tsx", ".mjs", ".cjs", ".css", ".scss", ".vue", ".svelte", ".html")
"""The files a compile check can name (a dev server compiles nothing else)."""

READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=False)
WRITES = ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=False)
UNDOABLE = ToolAnnotations(readOnlyHint=False, destructiveHint=True, openWorldHint=False)

ClientFor = Callable[[Context], ReactBoxClient]
"""The caller's client of the API: from the HTTP request, or the one of a stdio server."""


class Folders:
    """Where ``upload`` may read an app folder from, or why it may not.

    ``root``: folders are resolved under it and may not leave it (the Jupyter
    server's root, as its file browser); None: any folder the process can read
    (stdio, the user's own process).  ``refused``: no folders at all (the hub
    service runs as root: it must not read a user's files for them)."""

    def __init__(self, root: Path | None = None, refused: str = ""):
        self.root = root.resolve() if root is not None else None
        self.refused = refused

    def resolve(self, folder: str) -> Path:
        if self.refused:
            raise ToolError(self.refused)
        path = Path(os.path.expanduser(folder)) if self.root is None else Path(folder)
        if self.root is not None:
            if path.is_absolute():
                raise ToolError(
                    f"Name the folder relative to the Jupyter server's root ({self.root})."
                )
            path = (self.root / path).resolve()
            if not path.is_relative_to(self.root):
                raise ToolError("That folder is outside the Jupyter server's root.")
        if not path.is_dir():
            raise ToolError(f"No such folder: {folder}")
        return path


def zip_files(files: dict[str, str]) -> bytes:
    """A ZIP of an app given as {path: text}, each path checked as the tools check
    one (``in_project``; the upload checks them again)."""
    if not files:
        raise ToolError("Give the app's files: {path: text}, with a package.json.")
    if len(files) > MOST_UPLOADED_FILES:
        raise ToolError(f"At most {MOST_UPLOADED_FILES} files at once.")
    if sum(len(text) for text in files.values()) > MOST_UPLOADED_BYTES:
        raise ToolError(f"At most {MOST_UPLOADED_BYTES >> 20} MB of files at once.")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in sorted(files.items()):
            zf.writestr(PurePosixPath(in_project(name)).as_posix(), text)
    return buf.getvalue()


def in_project(path: str) -> str:
    """A file's path as a tool takes it: relative, with no '..' (the API checks it
    again; this keeps it one path of the files API, never another of its URLs)."""
    parts = PurePosixPath(path).parts
    if not path.strip() or path.startswith("/") or ".." in parts or "\\" in path:
        raise ToolError(f"{path!r} is not a path in the project: relative, with no '..'.")
    return path


def summary(project: Project) -> dict:
    """What an agent needs to know of a project, in one small dict."""
    info = project.info
    keys = ("id", "name", "status", "detail", "error", "framework", "preview_url", "notes")
    out = {key: info.get(key) for key in keys if info.get(key) not in (None, [], "")}
    if info.get("errors"):
        out["page_errors"] = info["errors"][-5:]
    return out


def make_server(client_for: ClientFor, folders: Folders) -> MCPServer:
    """The MCP server of the caller's projects."""
    server = MCPServer(
        "jupyter-reactbox", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING"
    )

    async def call(ctx: Context, fn: Callable, *args):
        client = client_for(ctx)
        try:
            return await anyio.to_thread.run_sync(functools.partial(fn, client, *args))
        except ReactBoxClientError as exc:
            raise ToolError(str(exc)) from None

    def on(project: str, fn: Callable) -> Callable:
        """A call on the caller's project called ``project`` (its id or name)."""
        return lambda client, *args: fn(client.project(project), *args)

    tool = server.tool

    @tool(annotations=READ_ONLY)
    async def list_projects(ctx: Context) -> list[dict]:
        """Your projects: id, name, status (installing, starting, running, stopped,
        failed), framework, the preview's path on the Jupyter server."""
        return await call(ctx, lambda client: [summary(p) for p in client.projects()])

    @tool(annotations=READ_ONLY)
    async def status(project: str, ctx: Context) -> dict:
        """One project's state: status, what it is doing, its error, its page's errors."""
        return await call(ctx, on(project, summary))

    @tool(annotations=WRITES)
    async def upload(
        name: str,
        ctx: Context,
        folder: str | None = None,
        files: dict[str, str] | None = None,
        wait: bool = True,
    ) -> dict:
        """Upload a React app as a new project called ``name``: from ``folder`` (an
        app folder with its package.json; on a Jupyter server, relative to its root),
        or from ``files`` ({path: text}).  It installs and starts; with ``wait`` this
        returns once its preview runs (or says why it failed)."""
        if (folder is None) == (files is None):
            raise ToolError("Give either a folder or files.")
        source = folders.resolve(folder) if folder is not None else zip_files(files or {})

        def upload_and_wait(client: ReactBoxClient) -> dict:
            project = client.upload(source, name)
            if wait:
                project.wait("running", timeout=START_WAIT)
            return summary(project.refresh())

        return await call(ctx, upload_and_wait)

    @tool(annotations=WRITES)
    async def start(project: str, ctx: Context, wait: bool = True) -> dict:
        """Start (or wake) a project's preview; with ``wait``, until it runs."""

        def start_and_wait(p: Project) -> dict:
            p.start()
            if wait:
                p.wait("running", timeout=START_WAIT)
            return summary(p.refresh())

        return await call(ctx, on(project, start_and_wait))

    @tool(annotations=WRITES)
    async def stop(project: str, ctx: Context) -> dict:
        """Stop a project's preview (its files stay)."""
        return await call(ctx, on(project, lambda p: summary(p.stop())))

    @tool(annotations=READ_ONLY)
    async def list_files(project: str, ctx: Context) -> list[str]:
        """The project's own files (no node_modules, no build output)."""
        return await call(ctx, on(project, Project.files))

    @tool(annotations=READ_ONLY)
    async def read_file(project: str, path: str, ctx: Context) -> str:
        """One file's text."""
        return await call(ctx, on(project, Project.read), in_project(path))

    @tool(annotations=UNDOABLE)
    async def write_file(project: str, path: str, content: str, ctx: Context) -> dict:
        """Write one file (new or changed) as one change on the project's timeline; the
        preview hot-reloads.  ``undo`` takes it back."""
        commit = await call(ctx, on(project, Project.write), in_project(path), content)
        return {"path": path, "commit": commit, "changed": commit is not None}

    @tool(annotations=UNDOABLE)
    async def delete_file(project: str, path: str, ctx: Context) -> dict:
        """Remove one file, as one change (``undo`` brings it back)."""
        commit = await call(ctx, on(project, Project.delete_file), in_project(path))
        return {"path": path, "commit": commit}

    @tool(annotations=READ_ONLY)
    async def check_page(project: str, ctx: Context, paths: list[str] | None = None) -> dict:
        """Does the page work?  ``compile_error``: the dev server's error compiling
        ``paths`` (by default the files of the last change); ``page``: one load in the
        server's headless browser, what it threw and whether it is blank (None where
        the server has no browser); ``page_errors``: what the open previews reported."""

        def check(p: Project) -> dict:
            chosen = [in_project(path) for path in paths] if paths is not None else None
            if chosen is None:
                timeline = p.history()
                chosen = timeline[0].get("files", []) if timeline else []
            return p.check([f for f in chosen if f.endswith(SOURCE)][:50])

        return await call(ctx, on(project, check))

    @tool(annotations=READ_ONLY)
    async def logs(project: str, ctx: Context, tail: int = 100) -> str:
        """The last ``tail`` lines the project's dev server printed."""
        text = await call(ctx, on(project, Project.logs))
        return "\n".join(text.splitlines()[-max(1, min(tail, 2000)) :])

    @tool(annotations=READ_ONLY)
    async def screenshot(project: str, ctx: Context) -> Image:
        """A picture of the running page, as the server's headless browser renders it."""
        return Image(data=await call(ctx, on(project, Project.screenshot)), format="png")

    @tool(annotations=READ_ONLY)
    async def history(project: str, ctx: Context, limit: int = 20) -> list[dict]:
        """The timeline, newest first: each change's sha, message, kind (upload, ai-edit,
        hand-edit, restore...), time and files."""
        commits = await call(ctx, on(project, Project.history))
        return commits[: max(1, min(limit, 500))]

    @tool(annotations=READ_ONLY)
    async def diff(
        project: str, ctx: Context, start: str = "HEAD~1", end: str | None = None
    ) -> str:
        """The unified diff between two changes (a sha, HEAD~N or a named point); by
        default what the last change did."""
        return await call(ctx, on(project, Project.diff), start, end)

    @tool(annotations=UNDOABLE)
    async def undo(project: str, ctx: Context) -> str:
        """Step back one change; says which change is now current."""
        return await call(ctx, on(project, Project.undo))

    @tool(annotations=UNDOABLE)
    async def redo(project: str, ctx: Context) -> str:
        """Step forward again after an undo."""
        return await call(ctx, on(project, Project.redo))

    @tool(annotations=UNDOABLE)
    async def restore(project: str, to: str, ctx: Context) -> str:
        """The app as it was at ``to`` (a sha, HEAD~N or a named point), as one new
        change that ``undo`` takes back."""
        return await call(ctx, on(project, Project.restore), to)

    @tool(annotations=UNDOABLE)
    async def edit(
        project: str, instruction: str, ctx: Context, paths: list[str] | None = None
    ) -> dict:
        """Ask the server's own AI editor to change the app in plain words (where the
        server has a model): it writes one checked change, or nothing."""

        def ask(p: Project) -> dict:
            result = p.edit(instruction, paths)
            return {
                "status": result.status,
                "message": result.message,
                "files": result.files,
                "commit": result.commit,
            }

        return await call(ctx, on(project, ask))

    @server.resource(
        "reactbox://projects/{project}/files",
        name="files",
        description="The project's file tree (its own files, as paths).",
        mime_type="application/json",
    )
    async def file_tree(project: str, ctx: Context) -> list[str]:
        return await call(ctx, on(project, Project.files))

    @server.resource(
        "reactbox://projects/{project}/page-errors",
        name="page-errors",
        description="The last errors the project's open previews reported.",
        mime_type="application/json",
    )
    async def page_errors(project: str, ctx: Context) -> list[dict]:
        return await call(ctx, on(project, lambda p: p.refresh().page_errors))

    return server
