"""``%reactbox`` and ``%%reactbox``: the notebook's commands.

A user's mistake (unknown project, missing file, bad arguments, no server) is
one line, ``UsageError: ...``, never a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
import time

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import (
    MagicArgumentParser,
    argument,
    magic_arguments,
)
from IPython.display import HTML, display
from IPython.utils.process import arg_split

from .client import Project, ReactBoxClient, ReactBoxClientError, connect

COMMANDS = {
    "upload": "upload SOURCE [--name NAME] [--path FOLDER] [--upgrade-vite] [--replace] "
    "[--no-wait]: a ZIP path, an app folder, or a variable holding the ZIP's bytes; shows "
    "progress, then the preview",
    "list": "list: your projects and their status",
    "open": "open NAME [--inline]: the preview in a panel beside the notebook (JupyterLab), "
    "else inline",
    "status": "status NAME: one line of state",
    "start": "start NAME",
    "stop": "stop NAME: the container is kept; the preview link too",
    "restart": "restart NAME: a new container (and a new link)",
    "delete": "delete NAME: container and files gone",
    "edit": "edit NAME [PATH ...] [--at FILE:LINE] [--screenshot] [--image PATH] [--agent] "
    "[INSTRUCTION]: ask the AI to change the app, about the element at FILE:LINE if given, "
    "showing it the page and images; --agent: in steps, with tools, where the server allows "
    "it (%%reactbox edit NAME [PATH ...] takes the instruction from the cell)",
    "fix": "fix NAME [INSTRUCTION]: ask the AI to fix the error the preview's page reports",
    "write": "%%reactbox write NAME PATH: the cell becomes that file (checked, committed)",
    "accept": "accept NAME: write the change an edit with --review proposed",
    "discard": "discard NAME: drop the change an edit with --review proposed",
    "undo": "undo NAME: step back one change",
    "redo": "redo NAME",
    "diff": "diff NAME [--from REV]: what the last change did",
    "history": "history NAME [--all]: the timeline, newest first: what made each change, "
    "its files, named points",
    "restore": "restore NAME POINT: the app as it was at POINT (a name, a sha, HEAD~N), as "
    "one new change (undo takes it back)",
    "point": "point NAME LABEL [--at REV]: name the current change (or REV), to restore it",
    "export": "export NAME [FILE] [--data]: the app's source as a ZIP (no node_modules, no "
    "history; --data: with its data folder), to upload again or take away",
    "share": "share NAME [--days N] [--user USER ...] [--group GROUP ...] [--public]: build "
    "the app and publish it at a link of its own that expires (default 7 days); nothing "
    "runs while it is viewed (under JupyterHub: for the hub users and groups named)",
    "shares": "shares [NAME]: your share links, with expiry and last access",
    "revoke": "revoke SHARE_ID: the share link stops working at once",
    "logs": "logs NAME [--follow] [--tail N]: install and dev-server output",
    "data": "data NAME VAR [--as ALIAS]: publish a DataFrame/list/dict to "
    "src/reactbox-data/ALIAS.json (again: the preview updates)",
    "errors": "errors NAME: what the preview page reported (why it is blank)",
    "expose": "expose NAME FUNCTION [FUNCTION ...] [--concurrent]: the running app may call "
    "these functions of the notebook (call('FUNCTION', ...args) from 'reactbox')",
    "unexpose": "unexpose NAME [FUNCTION ...]: no longer (none named: none at all)",
    "send": "send NAME VAR [--as ALIAS]: push a value to the running app now "
    "(useNotebook('ALIAS') from 'reactbox'); nothing is written, nothing reloads",
}


def _parser(name: str, description: str) -> MagicArgumentParser:
    # The help formatter writes the "%" itself.
    return MagicArgumentParser(prog=f"reactbox {name}", description=description, add_help=True)


def _with_project(name: str) -> MagicArgumentParser:
    p = _parser(name, COMMANDS[name])
    p.add_argument("project", help="the project's name")
    return p


def _parsers() -> dict[str, MagicArgumentParser]:
    parsers = {}
    p = _parser("upload", COMMANDS["upload"])
    p.add_argument("source", help="path to a .zip, an app folder, or a variable with ZIP bytes")
    p.add_argument("--name", help="project name (default: the file or folder name)")
    p.add_argument("--path", help="the app's folder inside the ZIP, when it holds several")
    p.add_argument(
        "--upgrade-vite",
        action="store_true",
        help="raise a Vite with no patched release (4 and older) to a maintained one, "
        "as one change you can undo",
    )
    p.add_argument("--replace", action="store_true", help="delete a project of that name first")
    p.add_argument("--no-wait", action="store_true", help="return at once; do not show progress")
    parsers["upload"] = p
    parsers["list"] = _parser("list", COMMANDS["list"])
    for name in (
        *("open", "status", "start", "stop", "restart", "delete"),
        *("accept", "discard", "undo", "redo", "errors"),
    ):
        parsers[name] = _with_project(name)
    parsers["open"].add_argument(
        "--inline",
        action="store_true",
        help="in the output, even where JupyterLab can open a panel",
    )
    p = _with_project("edit")
    p.add_argument("words", nargs="*", help="paths to focus on, then the instruction")
    p.add_argument(
        "--at",
        metavar="FILE:LINE",
        help="the element the instruction is about (src/App.jsx:42; 'selected': the one "
        "Alt-clicked in the preview)",
    )
    p.add_argument("--screenshot", action="store_true", help="show the model the page as it is now")
    p.add_argument(
        "--review",
        action="store_true",
        help="show the proposed change and write nothing (then: accept NAME, discard NAME)",
    )
    p.add_argument(
        "--agent",
        action="store_true",
        help="the model works in steps with tools (read, write, check), as one change",
    )
    p.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH",
        help="an image to show the model (a sketch, a mock-up); may be given again",
    )
    parsers["edit"] = p
    p = _with_project("fix")
    p.add_argument("words", nargs="*", help="anything to add to the instruction")
    parsers["fix"] = p
    p = _with_project("write")
    p.add_argument("path", help="the file, e.g. src/App.jsx")
    parsers["write"] = p
    p = _with_project("diff")
    p.add_argument("--from", dest="start", default="HEAD~1", help="revision (default HEAD~1)")
    parsers["diff"] = p
    p = _with_project("history")
    p.add_argument("--all", action="store_true", help="every change (default: the last 20)")
    parsers["history"] = p
    p = _with_project("restore")
    p.add_argument("point", nargs="+", help="a named point, a commit sha, or HEAD~N")
    parsers["restore"] = p
    p = _with_project("point")
    p.add_argument("label", nargs="+", help="the name, e.g. before the redesign")
    p.add_argument("--at", default="HEAD", help="the change to name (default: the current one)")
    parsers["point"] = p
    p = _with_project("export")
    p.add_argument("file", nargs="?", help="where to write it (default: NAME.zip here)")
    p.add_argument("--data", action="store_true", help="with src/reactbox-data/")
    parsers["export"] = p
    p = _with_project("share")
    p.add_argument("--days", type=float, help="how long the link lives (default 7)")
    p.add_argument("--user", action="append", default=[], help="JupyterHub: a hub user")
    p.add_argument("--group", action="append", default=[], help="JupyterHub: a hub group")
    p.add_argument("--public", action="store_true", help="JupyterHub: anyone with the link")
    parsers["share"] = p
    p = _parser("shares", COMMANDS["shares"])
    p.add_argument("project", nargs="?", help="only this project's")
    parsers["shares"] = p
    p = _parser("revoke", COMMANDS["revoke"])
    p.add_argument("share", help="the share's id (from %%reactbox shares)")
    parsers["revoke"] = p
    p = _with_project("logs")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing (stop: interrupt)")
    p.add_argument("--tail", type=int, default=0, help="only the last N lines")
    parsers["logs"] = p
    p = _with_project("expose")
    p.add_argument("functions", nargs="+", help="functions of the notebook, by name")
    p.add_argument(
        "--concurrent", action="store_true", help="let calls run at once (thread-safe functions)"
    )
    parsers["expose"] = p
    p = _with_project("unexpose")
    p.add_argument("functions", nargs="*", help="functions by name (none: all of them)")
    parsers["unexpose"] = p
    p = _with_project("send")
    p.add_argument("variable", help="a notebook variable: DataFrame, list, dict, number...")
    p.add_argument("--as", dest="alias", help="the name the app reads (default: VAR)")
    parsers["send"] = p
    p = _with_project("data")
    p.add_argument("variable", help="a notebook variable: DataFrame, list, dict, array...")
    p.add_argument("--as", dest="alias", help="the name the app imports (default: VAR)")
    parsers["data"] = p
    return parsers


def _documented(func):
    """Put the list of commands into the magic's help (``%reactbox?``)."""
    lines = [f"  {text}" for text in COMMANDS.values()]
    func.__doc__ = "\n".join([inspect.cleandoc(func.__doc__ or ""), "", *lines, ""])
    return func


def _looks_like_path(word: str) -> bool:
    return ("/" in word and " " not in word) or word.endswith(
        (".js", ".jsx", ".ts", ".tsx", ".css")
    )


@magics_class
class ReactBoxMagics(Magics):
    def __init__(self, shell, client: ReactBoxClient | None = None):
        super().__init__(shell)
        self._client = client
        self.parsers = _parsers()

    @property
    def client(self) -> ReactBoxClient:
        if self._client is None:
            self._client = connect()
        return self._client

    @magic_arguments()
    @argument("command", nargs="?", help=" | ".join(COMMANDS))
    @argument("args", nargs=argparse.REMAINDER, help="the command's arguments")
    @line_cell_magic
    @_documented
    def reactbox(self, line: str, cell: str | None = None):
        """Run React apps in a sandbox beside this notebook and change them in plain words.

        Commands (each takes --help):
        """
        words = line.split(None, 1)
        if not words or words[0] in ("-h", "--help", "help"):
            return print(self._help())
        command = words[0]
        parser = self.parsers.get(command)
        if parser is None:
            raise UsageError(f"Unknown command {command!r}; try one of: {', '.join(COMMANDS)}.")
        try:
            # Options may come between words: edit shop --at src/App.jsx:42 "Make it bold"
            opts = parser.parse_intermixed_args(arg_split(words[1] if len(words) > 1 else ""))
        except SystemExit:  # --help printed the command's help
            return None
        if command == "write" and cell is None:
            raise UsageError("write is a cell magic: %%reactbox write NAME PATH, then the code.")
        try:
            return getattr(self, f"_{command}")(opts, cell)
        except ReactBoxClientError as exc:
            raise UsageError(str(exc)) from None
        except KeyboardInterrupt:
            print("Interrupted; the server carries on.", file=sys.stderr)
            return None

    def _help(self) -> str:
        lines = ["%reactbox COMMAND ...   (COMMAND --help for details)", ""]
        lines += [f"  {text}" for text in COMMANDS.values()]
        return "\n".join(lines)

    # -- commands ---------------------------------------------------------------------

    def _upload(self, opts, cell):
        source = opts.source
        value = self.shell.user_ns.get(source) if source.isidentifier() else None
        if isinstance(value, (bytes, bytearray, memoryview, dict)):
            source = value
            if not opts.name:
                raise UsageError("Name the project: %reactbox upload VAR --name NAME.")
        project = self.client.upload(
            source,
            opts.name,
            path=opts.path,
            replace=opts.replace,
            upgrade_vite=opts.upgrade_vite,
        )
        if opts.no_wait:
            print(f"Uploaded {project.id}; it installs and starts in the background.")
            return None
        return self._wait_and_show(project)

    def _wait(self, project: Project) -> bool:
        """Show install progress until the project runs; False if interrupted."""
        from .widget import ProgressView

        bar = ProgressView(project)
        display(bar)
        try:
            project.wait("running", on_change=bar.update)
        except KeyboardInterrupt:
            print(
                f"{project.id} goes on in the background; %reactbox open {project.id} shows it.",
                file=sys.stderr,
            )
            return False
        finally:
            bar.close()
        print(f"{project.id} is running.")
        return True

    def _wait_and_show(self, project: Project):
        from .widget import PreviewView

        if self._wait(project):
            display(PreviewView(project))
        return None

    def _list(self, opts, cell):
        projects = self.client.projects()
        if not projects:
            print("No projects yet: %reactbox upload app.zip --name NAME")
            return None
        rows = [(p.id, p.framework or "", p.status, p.detail or p.error or "") for p in projects]
        width = max(len(r[0]) for r in rows)
        text = "\n".join(f"{a:<{width}}  {b:<6}  {c:<10}  {d}".rstrip() for a, b, c, d in rows)
        html_rows = "".join(
            "<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>" for row in rows
        )
        display(
            {
                "text/plain": text,
                "text/html": "<table><tr><th>project</th><th>framework</th><th>status</th>"
                f"<th></th></tr>{html_rows}</table>",
            },
            raw=True,
        )
        return None

    def _open(self, opts, cell):
        project = self.client.project(opts.project)
        if project.status == "stopped":
            project.start()
        if project.status in ("installing", "starting"):
            if opts.inline:
                return self._wait_and_show(project)
            self._wait(project)
        if opts.inline:
            from .widget import PreviewView

            display(PreviewView(project))
        else:
            display(open_bundle(project), raw=True)
        return None

    def _status(self, opts, cell):
        p = self.client.project(opts.project)
        why = p.error if p.status == "failed" else p.detail
        print(f"{p.id}: {p.status}" + (f" ({why})" if why else ""))

    def _start(self, opts, cell):
        project = self.client.project(opts.project).start()
        return self._wait_and_show(project)

    def _restart(self, opts, cell):
        project = self.client.project(opts.project).restart()
        return self._wait_and_show(project)

    def _stop(self, opts, cell):
        project = self.client.project(opts.project).stop()
        print(f"{project.id} is stopped; %reactbox start {project.id} resumes it.")

    def _delete(self, opts, cell):
        project = self.client.project(opts.project)
        project.delete()
        print(f"Deleted {project.id}.")

    def _edit(self, opts, cell):
        words = list(opts.words)
        if cell is not None:
            paths, instruction = words, cell.strip()
        else:
            paths = []
            while len(words) > 1 and _looks_like_path(words[0]):
                paths.append(words.pop(0))
            instruction = " ".join(words)
        if not instruction:
            raise UsageError(
                'Say what to change: %reactbox edit NAME [PATH] "instruction", or put the '
                "instruction in the cell under %%reactbox edit NAME."
            )
        at = opts.at
        if at == "selected":  # what was Alt-clicked in the preview (or picked in the panel)
            at = self.client.project(opts.project).selection
            if not at:
                raise UsageError(
                    f"Nothing is selected in the preview of {opts.project}: Alt-click an "
                    "element of the page first."
                )
        elif at is not None and not re.fullmatch(r"[^:\s]+:\d+(:\d+)?", at):
            raise UsageError(
                f"--at takes FILE:LINE (--at src/App.jsx:42) or 'selected' (not {at!r})."
            )
        for image in opts.image:
            if not os.path.isfile(image):
                raise UsageError(f"--image {image}: no such file.")
        return self._show_edit(
            opts.project,
            instruction,
            paths or None,
            at=at,
            screenshot=opts.screenshot,
            images=opts.image,
            review=opts.review,
            agent=opts.agent,
        )

    def _fix(self, opts, cell):
        instruction = cell.strip() if cell is not None else " ".join(opts.words)
        return self._show_edit(opts.project, instruction, None, fix=True)

    def _show_edit(
        self,
        name: str,
        instruction: str,
        paths: list[str] | None,
        *,
        fix=False,
        at=None,
        screenshot=False,
        images=(),
        review=False,
        agent=False,
    ):
        project = self.client.project(name)
        from .widget import diff_html

        try:
            result = project.edit(
                instruction,
                paths,
                on_event=LineInPlace().show,
                fix=fix,
                at=at,
                screenshot=screenshot,
                images=list(images),
                review=review,
                agent=agent,
            )
        except ReactBoxClientError as exc:
            if exc.status == 503:  # AI not configured: a setting, not a mistake in this cell
                print(str(exc), file=sys.stderr)
                return None
            raise
        if result.status == "proposed":
            print(
                f"{result.message} ({result.cost}; %reactbox accept {project.id} writes it, "
                f"%reactbox discard {project.id} drops it)"
            )
            display({"text/plain": result.diff, "text/html": diff_html(result.diff)}, raw=True)
            return None
        if result.status != "applied":
            raise UsageError(f"Nothing changed: {result.message} ({result.cost})")
        print(
            f"{result.message} ({', '.join(result.files)}; {result.cost}; "
            f"undo: %reactbox undo {project.id})"
        )
        display({"text/plain": result.diff, "text/html": diff_html(result.diff)}, raw=True)
        return None

    def _write(self, opts, cell):
        project = self.client.project(opts.project)
        commit = project.write(opts.path, cell)
        print(f"Wrote {opts.path}." if commit else f"{opts.path} is unchanged.")

    def _accept(self, opts, cell):
        from .widget import diff_html

        result = self.client.project(opts.project).accept()
        if result.status != "applied":
            raise UsageError(f"Not written: {result.message}")
        print(f"{result.message} (undo: %reactbox undo {opts.project})")
        display({"text/plain": result.diff, "text/html": diff_html(result.diff)}, raw=True)

    def _discard(self, opts, cell):
        print(self.client.project(opts.project).discard().message)

    def _undo(self, opts, cell):
        message = self.client.project(opts.project).undo()
        print(f"Undone. The project is now at: {message}")

    def _redo(self, opts, cell):
        message = self.client.project(opts.project).redo()
        print(f"Redone: {message}")

    def _diff(self, opts, cell):
        from .widget import diff_html

        text = self.client.project(opts.project).diff(opts.start)
        display({"text/plain": text or "No change.", "text/html": diff_html(text)}, raw=True)

    def _export(self, opts, cell):
        path = self.client.project(opts.project).export(opts.file, data=opts.data)
        print(f"Exported {opts.project} to {path} ({path.stat().st_size:,} bytes).")

    def _share(self, opts, cell):
        print(f"Building {opts.project} for its link (in the sandbox, no network)...")
        shared = self.client.project(opts.project).share(
            opts.days, users=opts.user, groups=opts.group, public=opts.public
        )
        if shared["status"] != "live":
            print(f"The share is {shared['status']}: {shared.get('error') or 'see the build log'}")
            return
        until = time.strftime("%Y-%m-%d %H:%M", time.localtime(shared["expires"]))
        url = shared["url"]
        display(
            {
                "text/plain": f"{url} (until {until}; revoke: %reactbox revoke {shared['id']})",
                "text/html": f'<a href="{_esc(url)}" target="_blank" rel="noopener">'
                f"{_esc(url)}</a> until {until} · revoke: "
                f"<code>%reactbox revoke {_esc(shared['id'])}</code>",
            },
            raw=True,
        )

    def _shares(self, opts, cell):
        if opts.project:
            found = self.client.project(opts.project).shares()
        else:
            found = self.client.shares()
        if not found:
            print("No share links.")
        for s in found:
            until = time.strftime("%Y-%m-%d %H:%M", time.localtime(s["expires"]))
            seen = s["last_access"]
            last = time.strftime("%Y-%m-%d %H:%M", time.localtime(seen)) if seen else "never"
            print(f"{s['id']}  {s['project']}  {s['status']}  until {until}  opened {last}")
            print(f"    {s['url']}")

    def _revoke(self, opts, cell):
        self.client.revoke(opts.share)
        print(f"Revoked {opts.share}: its link is dead.")

    def _logs(self, opts, cell):
        project = self.client.project(opts.project)
        if not opts.follow:
            text = project.logs()
            if opts.tail:
                text = "\n".join(text.splitlines()[-opts.tail :])
            print(text)
            return None
        for chunk in project.follow_logs():
            print(chunk, end="", flush=True)
        return None

    def _data(self, opts, cell):
        alias = opts.alias or opts.variable
        path = self.client.project(opts.project).publish(alias, self._variable(opts.variable))
        print(
            f"Published {opts.variable} as {path}; in the app: "
            f"import {alias} from './reactbox-data/{alias}.json' (from a file in src/)."
        )

    def _history(self, opts, cell):
        entries = self.client.project(opts.project).history()
        rows = entries if opts.all else entries[:20]
        for e in rows:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e["time"]))
            named = f"  [{', '.join(e['points'])}]" if e.get("points") else ""
            what = e["kind"] + (f": {e['detail']}" if e.get("detail") else "")
            files = ", ".join(e.get("files", [])[:4]) + (
                " ..." if len(e.get("files", [])) > 4 else ""
            )
            print(f"{e['sha'][:7]}  {when}  {what}{named}\n         {files}")
        if len(entries) > len(rows):
            print(f"... {len(entries) - len(rows)} older (--all)")

    def _restore(self, opts, cell):
        message = self.client.project(opts.project).restore(" ".join(opts.point))
        print(f"{message}. Undo: %reactbox undo {opts.project}")

    def _point(self, opts, cell):
        point = self.client.project(opts.project).name_point(" ".join(opts.label), opts.at)
        print(
            f"Named {point['sha'][:7]} {point['name']!r}; "
            f"back to it: %reactbox restore {opts.project} '{point['name']}'"
        )

    def _variable(self, name: str):
        if name not in self.shell.user_ns:
            raise UsageError(f"No variable {name!r} in this notebook.")
        return self.shell.user_ns[name]

    def _expose(self, opts, cell):
        project = self.client.project(opts.project)
        for name in opts.functions:
            fn = self._variable(name)
            if not callable(fn):
                raise UsageError(f"{name} is a {type(fn).__name__}, not a function.")
            project.expose(fn, name=name, concurrent=opts.concurrent)
        names = ", ".join(sorted(project.bridge.functions))
        print(
            f"{project.id} may call: {names}. In the app: "
            f"import {{ call }} from 'reactbox'; await call('{opts.functions[0]}', ...)"
        )

    def _unexpose(self, opts, cell):
        project = self.client.project(opts.project)
        for name in opts.functions or [None]:
            project.unexpose(name)
        names = ", ".join(sorted(project.bridge.functions)) or "nothing"
        print(f"{project.id} may call: {names}.")

    def _send(self, opts, cell):
        alias = opts.alias or opts.variable
        self.client.project(opts.project).send(alias, self._variable(opts.variable))
        print(f"Sent {opts.variable} as {alias!r}; in the app: useNotebook('{alias}').")

    def _errors(self, opts, cell):
        project = self.client.project(opts.project)
        errors = project.page_errors
        if not errors:
            print(f"The {project.id} page reported no errors since it was last loaded.")
            return None
        for e in errors:
            where = f" at {e['source']}" if e.get("source") else ""
            times = f" (x{e['count']})" if e.get("count", 1) > 1 else ""
            print(f"{e['kind']}: {e['message']}{where}{times}")
        return None


class LineInPlace:
    """One line of output that changes in place (the edit's stages)."""

    def __init__(self):
        self.handle = None

    def show(self, event: dict) -> None:
        from .widget import _edit_stage

        text = _edit_stage(event)
        if self.handle is None:
            self.handle = display(HTML(text), display_id=True)
        else:
            self.handle.update(HTML(text))


OPEN_MIME = "application/vnd.jupyter.reactbox.open+json"
"""Rendered by the JupyterLab extension: it opens the preview panel beside the notebook."""


def open_bundle(project: Project) -> dict:
    """``%reactbox open``: a panel in JupyterLab, the page in an iframe elsewhere."""
    url = project.preview_url or ""
    return {
        OPEN_MIME: {"id": project.id, "requested": int(time.time() * 1000)},
        "text/html": (
            f'<iframe src="{_esc(url)}" title="React preview" '
            'style="width:100%;height:480px;border:1px solid #d0d7de"></iframe>'
        ),
        "text/plain": f"{project.id}: {project.status}",
    }


def _esc(value: str) -> str:
    import html

    return html.escape(str(value))
