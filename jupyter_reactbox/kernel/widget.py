"""ipywidgets views of projects: the inline preview, install progress, and ``ReactBox()``.

Everything here reads its state from the server (a thread follows the
project's events), so a widget made after a kernel restart shows the same
projects, and a widget left open keeps showing the truth.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable

import ipywidgets as w

from ..schema import EDIT_STAGES
from .client import Project, ReactBoxClient, ReactBoxClientError, connect

STATUS_COLOURS = {
    "running": "#1a7f37",
    "installing": "#9a6700",
    "starting": "#9a6700",
    "stopped": "#57606a",
    "failed": "#cf222e",
    "deleted": "#57606a",
}


def status_html(project: Project) -> str:
    colour = STATUS_COLOURS.get(project.status, "#57606a")
    status = "queued" if project.queue else project.status
    parts = [
        f'<b style="color:{colour}">● {html.escape(status)}</b>',
        f"<code>{html.escape(project.id)}</code>",
    ]
    if project.framework:
        parts.append(f"({html.escape(project.framework)})")
    why = project.error if project.status == "failed" else project.detail
    if why:
        parts.append(f"— {html.escape(why)}")
    line = " ".join(parts)
    if not project.sandboxed:
        line += f'<div style="color:#cf222e">⚠ {html.escape(project.isolation)}</div>'
    return line


def errors_html(project: Project) -> str:
    """What the preview page reported: why it may be blank."""
    items = []
    for e in project.page_errors[-5:]:
        where = f" <small>{html.escape(e.get('source') or '')}</small>" if e.get("source") else ""
        times = f" (x{e['count']})" if e.get("count", 1) > 1 else ""
        items.append(
            f"<li><b>{html.escape(e.get('kind', 'error'))}</b>: "
            f"{html.escape(e.get('message', ''))}{where}{times}</li>"
        )
    if not items:
        return ""
    return (
        '<div style="color:#cf222e"><b>The page reported errors:</b>'
        f'<ul style="margin:2px 0">{"".join(items)}</ul></div>'
    )


def selection_html(picked: dict | None) -> str:
    """What the next instruction is about: the app, or the element picked in it."""
    if not picked:
        return (
            '<span style="color:#57606a">Alt-click an element of the page to make the '
            "next instruction about it.</span>"
        )
    classes = "".join(f".{c}" for c in (picked.get("classes") or "").split())
    text = f" “{picked['text'][:40]}”" if picked.get("text") else ""
    where = f"{picked['file']}:{picked['line']}"
    return (
        f'Editing <code style="color:#e8710a">&lt;{html.escape(picked.get("tag") or "?")}'
        f"{html.escape(classes)}&gt;{html.escape(text)} ({html.escape(where)})</code>"
    )


class _Follower:
    """Calls ``on_change`` from a thread after every change of a project's state."""

    def __init__(self, project: Project, on_change: Callable[[Project], None]):
        self.project = project
        self.on_change = on_change
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="reactbox-follow")
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                for _ in self.project.events(timeout=60):
                    if self.stopped.is_set():
                        return
                    self.on_change(self.project)
                    if self.project.status == "deleted":
                        return
            except ReactBoxClientError:
                pass  # the server restarts, say: look again shortly
            self.stopped.wait(2)

    def stop(self) -> None:
        self.stopped.set()


class ProgressView(w.HBox):
    """A progress bar fed by the server: installing (package counts) → starting → running."""

    def __init__(self, project: Project, *, with_status: bool = True):
        self.bar = w.IntProgress(value=0, min=0, max=100, layout=w.Layout(width="240px"))
        self.label = w.HTML()
        super().__init__([self.bar, self.label] if with_status else [self.bar])
        self.update(project)

    def update(self, project: Project) -> None:
        steps = {"installing": 10, "starting": 85, "running": 100}
        value = steps.get(project.status, self.bar.value)
        if project.status == "installing" and project.progress:
            done, total = project.progress
            value = 10 + int(70 * done / max(total, 1))
        self.bar.value = value
        self.bar.bar_style = {"running": "success", "failed": "danger"}.get(project.status, "")
        self.label.value = status_html(project)


class PreviewView(w.VBox):
    """The live preview of one project: status, reload, open in a new tab, height,
    the page in an iframe, and the errors the page reported."""

    def __init__(self, project: Project, *, height: int = 480, follow: bool = True):
        self.project = project
        self.status = w.HTML()
        self.bar = ProgressView(project, with_status=False)  # the status line says it
        self.reload_button = w.Button(description="Reload", icon="refresh", tooltip="Reload")
        self.reload_button.on_click(lambda _: self.reload())
        self.new_tab = w.HTML()
        self.height = w.IntSlider(
            value=height, min=200, max=1600, step=40, description="Height", readout=True
        )
        self.height.observe(lambda _: self._render_frame(), names="value")
        self.frame = w.HTML(layout=w.Layout(width="100%"))
        self.errors = w.HTML()
        # The element picked in the page (Alt-click): the next instruction is about it.
        self.selection = w.HTML()
        self.clear_selection = w.Button(
            description="Whole app", icon="times", tooltip="The next instruction is about the app"
        )
        self.clear_selection.on_click(lambda _: self.project.clear_selection())
        self._loads = 0
        self._src: str | None = None
        super().__init__(
            [
                w.HBox([self.status], layout=w.Layout(align_items="center")),
                self.bar,
                w.HBox([self.reload_button, self.new_tab, self.height]),
                self.frame,
                w.HBox([self.selection, self.clear_selection]),
                self.errors,
            ]
        )
        self.update(project)
        self._follower = _Follower(project, self.update) if follow else None

    def update(self, project: Project) -> None:
        self.project = project
        self.status.value = status_html(project)
        self.bar.update(project)
        self.bar.layout.display = "" if project.status in ("installing", "starting") else "none"
        self.errors.value = errors_html(project)
        picked = project.selection
        self.selection.value = selection_html(picked)
        self.clear_selection.layout.display = "" if picked else "none"
        url = project.preview_url if project.status == "running" else None
        links = []
        if url:
            link = html.escape(url)
            links.append(f'<a href="{link}" target="_blank" rel="noopener">Open in a new tab ↗</a>')
        if project.info.get("export_url"):  # the user's own login fetches it
            links.append(
                f'<a href="{html.escape(project.info["export_url"])}" '
                f'download="{html.escape(project.id)}.zip">Export ZIP ⤓</a>'
            )
        self.new_tab.value = " · ".join(links)
        if url != self._src:
            self._src = url
            self._render_frame()

    def reload(self) -> None:
        self._loads += 1
        self._render_frame()

    def _render_frame(self) -> None:
        if not self._src:
            why = {"installing": "installing…", "starting": "starting…"}.get(
                self.project.status, f"{self.project.status}: start it to see the page"
            )
            self.frame.value = f"<div style='padding:1em;color:#57606a'>Preview {why}</div>"
            return
        # A changed attribute makes a new iframe element: that is the reload.
        self.frame.value = (
            f'<iframe src="{html.escape(self._src)}" data-load="{self._loads}" '
            f'data-reactbox-project="{html.escape(self.project.id)}" '
            f'style="width:100%;height:{self.height.value}px;border:1px solid #d0d7de" '
            'title="React preview"></iframe>'
        )

    def close(self) -> None:
        if self._follower is not None:
            self._follower.stop()
        super().close()


class ReactBox(w.VBox):
    """All of jupyter-reactbox with the mouse: upload a ZIP, pick a project, start or
    stop it, see it, change it in plain words, see the diff, undo, read the logs."""

    def __init__(self, client: ReactBoxClient | None = None, project: str | None = None):
        self.message = w.HTML()
        self.upload = w.FileUpload(accept=".zip", multiple=False, description="Upload ZIP")
        self.upload.observe(self._on_upload, names="value")
        self.picker = w.Dropdown(description="Project", options=[], layout=w.Layout(width="300px"))
        self._refreshing = False
        self.picker.observe(lambda _: self._refreshing or self._show(), names="value")
        self.buttons = {
            name: w.Button(description=name.title(), layout=w.Layout(width="auto"))
            for name in ("refresh", "start", "stop", "restart", "delete")
        }
        for name, button in self.buttons.items():
            button.on_click(lambda _, name=name: self._action(name))
        self.preview_box = w.VBox()
        self.instruction = w.Textarea(
            placeholder="Say what to change, e.g. Make the header sticky",
            layout=w.Layout(width="100%", height="64px"),
        )
        self.apply_button = w.Button(description="Apply", button_style="primary", icon="magic")
        self.apply_button.on_click(lambda _: self._in_thread(self._apply))
        self.undo_button = w.Button(description="Undo", icon="undo")
        self.undo_button.on_click(lambda _: self._in_thread(self._undo))
        self.fix_button = w.Button(
            description="Fix", icon="wrench", tooltip="Ask the AI to fix the error the page reports"
        )
        self.fix_button.on_click(lambda _: self._in_thread(lambda: self._apply(fix=True)))
        # What the model is shown besides the words (a model that takes images only).
        self.show_page = w.Checkbox(
            description="Show the page", indent=False, layout=w.Layout(width="auto")
        )
        self.images = w.FileUpload(
            accept="image/png,image/jpeg,image/gif,image/webp",
            multiple=True,
            description="Attach image",
            tooltip="Images for the model: a sketch, a mock-up",
        )
        # Review first: the diff is shown, and nothing is written until Accept.
        self.review_first = w.Checkbox(
            description="Review first", indent=False, layout=w.Layout(width="auto")
        )
        self.accept_button = w.Button(description="Accept", button_style="success", icon="check")
        self.accept_button.on_click(lambda _: self._in_thread(lambda: self._decide(True)))
        self.discard_button = w.Button(description="Discard", icon="times")
        self.discard_button.on_click(lambda _: self._in_thread(lambda: self._decide(False)))
        self._proposed: str | None = None
        self._show_proposed(None)
        self.edit_status = w.HTML()
        self.diff = w.HTML()
        self.logs = w.Textarea(layout=w.Layout(width="100%", height="240px"), disabled=True)
        self.logs_button = w.Button(description="Load logs", icon="file-text")
        self.logs_button.on_click(lambda _: self._in_thread(self._load_logs))
        self.details = w.Accordion(
            [self.diff, w.VBox([self.logs_button, self.logs])], titles=("Last change", "Logs")
        )
        self.view: PreviewView | None = None
        super().__init__(
            [
                w.HBox([self.upload, self.picker, *self.buttons.values()]),
                self.message,
                self.preview_box,
                self.instruction,
                w.HBox(
                    [
                        self.apply_button,
                        self.accept_button,
                        self.discard_button,
                        self.undo_button,
                        self.fix_button,
                        self.show_page,
                        self.review_first,
                        self.images,
                        self.edit_status,
                    ]
                ),
                self.details,
            ]
        )
        try:
            self.client = client or connect()
        except ReactBoxClientError as exc:
            self.client = None
            self._error(exc)
            return
        self.refresh(select=project)

    # -- helpers -----------------------------------------------------------------

    def _error(self, exc: Exception) -> None:
        self.message.value = f'<span style="color:#cf222e">⚠ {html.escape(str(exc))}</span>'

    def _say(self, text: str) -> None:
        self.message.value = html.escape(text)

    def _in_thread(self, fn: Callable[[], None]) -> None:
        """Long calls run beside the kernel, so it stays free; errors show in place."""

        def run() -> None:
            try:
                fn()
            except ReactBoxClientError as exc:
                self._error(exc)

        threading.Thread(target=run, daemon=True).start()

    @property
    def project(self) -> Project | None:
        if self.client is None or not self.picker.value:
            return None
        return self.client.project(self.picker.value)

    # -- projects -------------------------------------------------------------------

    def refresh(self, select: str | None = None) -> None:
        if self.client is None:
            return
        try:
            ids = [p.id for p in self.client.projects()]
        except ReactBoxClientError as exc:
            return self._error(exc)
        current = select or self.picker.value
        self._refreshing = True  # options and value change: show the result once
        try:
            self.picker.options = ids
            self.picker.value = current if current in ids else (ids[0] if ids else None)
        finally:
            self._refreshing = False
        if not ids:
            self._say("No projects yet: upload a React app as a ZIP.")
        self._show()

    def _show(self) -> None:
        if self.view is not None:
            self.view.close()
            self.view = None
        try:
            project = self.project
        except ReactBoxClientError as exc:
            self.preview_box.children = ()
            return self._error(exc)
        if project is None:
            self.preview_box.children = ()
            return
        self.view = PreviewView(project)
        self.preview_box.children = (self.view,)

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        upload = files[0]

        def run() -> None:
            self._say(f"Uploading {upload['name']}…")
            project = self.client.upload(upload)
            self._say(f"Uploaded {project.id}; it installs and starts now.")
            self.refresh(select=project.id)

        self._in_thread(run)

    def _action(self, name: str) -> None:
        if name == "refresh":
            return self.refresh()
        project = self.project
        if project is None:
            return self._say("Pick a project first.")

        def run() -> None:
            getattr(project, name)()
            self._say(f"{name.title()}: {project.id}")
            if name == "delete":
                self.refresh()

        self._in_thread(run)

    # -- changes ----------------------------------------------------------------------

    def _apply(self, *, fix: bool = False) -> None:
        """The instruction, or with ``fix`` the error the page reported, to the AI."""
        project = self.project
        if project is None:
            return self._say("Pick a project first.")
        instruction = "" if fix else self.instruction.value
        self.apply_button.disabled = self.fix_button.disabled = True
        try:
            result = project.edit(
                instruction,
                on_event=lambda e: setattr(self.edit_status, "value", _edit_stage(e)),
                fix=fix,
                screenshot=self.show_page.value and not fix,
                images=[] if fix else [bytes(f["content"]) for f in self.images.value],
                review=self.review_first.value,
                at=None if fix or self.view is None else self.view.project.selection,
            )
        finally:
            self.apply_button.disabled = self.fix_button.disabled = False
        self.edit_status.value = html.escape(f"{result.status}: {result.message} ({result.cost})")
        self.diff.value = diff_html(result.diff)
        self._show_proposed(result.id if result.status == "proposed" else None)
        if result.status == "proposed":
            self.details.selected_index = 0
        if result.status == "applied" and not fix:  # a fix leaves what was typed
            self.instruction.value = ""
            self.images.value = ()
            self.details.selected_index = 0

    def _show_proposed(self, edit_id: str | None) -> None:
        """Accept and Discard while a proposed change waits; Apply otherwise."""
        self._proposed = edit_id
        hidden, shown = w.Layout(display="none"), w.Layout(display=None)
        self.accept_button.layout = self.discard_button.layout = shown if edit_id else hidden
        self.apply_button.layout = hidden if edit_id else shown

    def _decide(self, accept: bool) -> None:
        project, edit_id = self.project, self._proposed
        if project is None or edit_id is None:
            return
        try:
            result = project.accept(edit_id) if accept else project.discard(edit_id)
        finally:
            self._show_proposed(None)
        self.edit_status.value = html.escape(f"{result.status}: {result.message}")
        self.diff.value = diff_html(result.diff if result.status == "applied" else "")
        if result.status == "applied":
            self.instruction.value = ""
            self.images.value = ()

    def _undo(self) -> None:
        project = self.project
        if project is None:
            return self._say("Pick a project first.")
        message = project.undo()
        self.edit_status.value = html.escape(f"Undone; now at: {message}")
        self.diff.value = diff_html(project.diff())

    def _load_logs(self) -> None:
        project = self.project
        if project is not None:
            self.logs.value = project.logs()[-20000:]

    def close(self) -> None:
        if self.view is not None:
            self.view.close()
        super().close()


def _edit_stage(event: dict) -> str:
    """One step of a running edit (``schema.EditEvent``) as people read it."""
    stage = event.get("stage", "")
    attempt = f" (attempt {event['attempt']})" if event.get("attempt", 1) > 1 else ""
    text = EDIT_STAGES.get(stage, stage)
    if stage == "queued" and event.get("position"):
        text = f"{text}: {event['position']} of {event.get('waiting')} in line"
    if stage == "step":  # an agent's step: which, and what it does
        text, attempt = f"Step {event.get('step')}: {event.get('message', '')}", ""
    if stage == "done":
        return html.escape(event.get("message") or text)
    spent = f" ({event['tokens']:,} tokens so far)" if event.get("tokens") else ""
    return html.escape(text + attempt + "…" + spent)


def diff_html(diff: str) -> str:
    if not diff.strip():
        return "<i>No change.</i>"
    lines = []
    for line in diff.splitlines():
        colour = (
            "#1a7f37"
            if line.startswith("+") and not line.startswith("+++")
            else "#cf222e"
            if line.startswith("-") and not line.startswith("---")
            else "inherit"
        )
        lines.append(f'<span style="color:{colour}">{html.escape(line)}</span>')
    body = "\n".join(lines)
    return f'<pre style="font-size:12px;max-height:360px;overflow:auto">{body}</pre>'
