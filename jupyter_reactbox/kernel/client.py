"""The notebook's client of the jupyter-reactbox REST API.

``connect()`` finds the Jupyter server this kernel belongs to and its
credentials, with nothing for the user to paste:

1. ``JUPYTER_REACTBOX_URL``: the extension puts it (with
   ``JUPYTER_REACTBOX_SERVER_INFO``, the server's info file that holds its
   token) into the environment of the kernels its server starts.  A user may
   set it, with ``JUPYTER_REACTBOX_TOKEN``, to reach another server.
2. Under JupyterHub: ``JUPYTERHUB_SERVICE_URL`` (or ``JUPYTERHUB_SERVICE_PREFIX``
   on this host) with ``JUPYTERHUB_API_TOKEN``, which the hub grants access to
   the user's own server.
3. The servers listed in Jupyter's runtime dir whose root holds the kernel's
   working directory, newest first.

The typed API (``ReactBoxClient``, ``Project``, ``EditResult``) is what the
magics and the widget share; every failure is a ``ReactBoxClientError`` with a
one-line message.
"""

from __future__ import annotations

import base64
import io
import json
import mimetypes
import os
import posixpath
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from ..errors import ReactBoxClientError

API = "reactbox/api"
BUSY_WAIT = 600.0
"""Seconds the client waits out a busy server (429 with a Retry-After) in all, per call."""
SKIPPED_IN_FOLDERS = {"node_modules", ".git", "dist", "build", ".vite", "__pycache__"}
ENABLE_HINT = (
    "enable it with `jupyter server extension enable jupyter_reactbox` and restart the server"
)


@dataclass
class EditResult:
    id: str
    status: str
    """applied | failed | no_change"""
    message: str
    files: list[str]
    diff: str
    attempts: int
    commit: str | None
    usage: dict = field(default_factory=dict)
    """prompt_tokens, completion_tokens, total_tokens; spent_today, daily_limit"""

    @classmethod
    def from_json(cls, data: dict) -> EditResult:
        return cls(
            id=data.get("id", ""),
            status=data.get("status", ""),
            message=data.get("message", ""),
            files=list(data.get("files") or []),
            diff=data.get("diff", ""),
            attempts=int(data.get("attempts") or 0),
            commit=data.get("commit"),
            usage=dict(data.get("usage") or {}),
        )

    @property
    def cost(self) -> str:
        """What the edit used, as people read it: "1,240 tokens (today 3,100 of 50,000)"."""
        text = f"{self.usage.get('total_tokens', 0):,} tokens"
        limit, today = self.usage.get("daily_limit"), self.usage.get("spent_today")
        if limit and today is not None:
            text += f" (today {today:,} of {limit:,})"
        return text


@dataclass
class Project:
    """One project, as last seen on the server (``refresh()`` looks again)."""

    client: ReactBoxClient = field(repr=False)
    info: dict = field(repr=False)

    @property
    def id(self) -> str:
        return self.info["id"]

    @property
    def name(self) -> str:
        return self.info.get("name") or self.id

    @property
    def status(self) -> str:
        return self.info.get("status", "unknown")

    @property
    def framework(self) -> str | None:
        return self.info.get("framework")

    @property
    def preview_url(self) -> str | None:
        """The preview's absolute path on the Jupyter server (None when not running)."""
        return self.info.get("preview_url")

    @property
    def error(self) -> str | None:
        return self.info.get("error")

    @property
    def detail(self) -> str | None:
        return self.info.get("detail")

    @property
    def queue(self) -> dict | None:
        """Its place in the server's line while its install or start waits:
        ``{"kind", "position", "waiting"}`` (``detail`` says it in words)."""
        return self.info.get("queue")

    @property
    def progress(self) -> tuple[int, int] | None:
        p = self.info.get("progress")
        return (p["done"], p["total"]) if p else None

    @property
    def selection(self) -> dict | None:
        """The element picked in the preview (Alt-click; the Lab panel's Select), which
        ``edit(at=...)`` can be about: file, line, column, tag, text, classes."""
        return self.info.get("selection")

    def select(self, at: str | dict) -> dict:
        """Keep ``at`` (``"src/App.jsx:42"`` or a selection) for the next edit."""
        selection = self.client.request("PUT", self._path("selection"), json=at).json()
        self.info["selection"] = selection
        return selection

    def clear_selection(self) -> None:
        self.client.request("DELETE", self._path("selection"))
        self.info["selection"] = None

    @property
    def page_errors(self) -> list[dict]:
        """Errors the preview page reported since it was last loaded."""
        return list(self.info.get("errors") or [])

    @property
    def notes(self) -> list[str]:
        """What the server changed to run it (a patched Vite release, ...)."""
        return list(self.info.get("notes") or [])

    @property
    def sandboxed(self) -> bool:
        """False when the dev server runs with no sandbox (see ``isolation``)."""
        return bool(self.info.get("sandboxed", True))

    @property
    def isolation(self) -> str:
        """In a line: what isolates the dev server, or why nothing does."""
        return self.info.get("isolation") or ""

    def __repr__(self) -> str:
        return f"<Project {self.id} {self.status}>"

    def _path(self, *parts: str) -> str:
        return "/".join(["projects", quote(self.id, safe=""), *parts])

    def _set(self, info: dict) -> Project:
        self.info = info
        return self

    # -- state -----------------------------------------------------------------

    def refresh(self) -> Project:
        return self._set(self.client.request("GET", self._path()).json())

    def start(self) -> Project:
        return self._set(self.client.request("POST", self._path("start")).json())

    def stop(self) -> Project:
        return self._set(self.client.request("POST", self._path("stop")).json())

    def restart(self) -> Project:
        return self._set(self.client.request("POST", self._path("restart")).json())

    def delete(self) -> None:
        self.client.request("DELETE", self._path())
        self.info = {**self.info, "status": "deleted", "preview_url": None}

    def events(self, timeout: float | None = None) -> Iterator[dict]:
        """The project's state now and after every change (server-sent events)."""
        for data in self.client.stream_events(self._path("events"), timeout):
            self.info = data if data.get("status") != "deleted" else {**self.info, **data}
            yield data

    def wait(
        self,
        status: str = "running",
        timeout: float = 300,
        on_change: Callable[[Project], None] | None = None,
    ) -> Project:
        """Until the project is ``status``; a ReactBoxClientError if it fails first."""
        deadline = time.monotonic() + timeout
        for _ in self.events(timeout):
            if on_change is not None:
                on_change(self)
            if self.status == status:
                return self
            if self.status in ("failed", "deleted") and status != self.status:
                why = self.error or self.detail or "see its logs"
                raise ReactBoxClientError(f"{self.id} is {self.status}: {why}")
            if time.monotonic() > deadline:
                break
        raise ReactBoxClientError(
            f"{self.id} did not become {status} within {timeout:.0f} s (it is {self.status})."
        )

    # -- logs, files, history ----------------------------------------------------

    def logs(self) -> str:
        return self.client.request("GET", self._path("logs")).text

    def follow_logs(self) -> Iterator[str]:
        """The logs so far, then the dev server's output as it comes (until interrupted)."""
        with self.client.request(
            "GET", self._path("logs"), params={"follow": "1"}, stream=True, timeout=None
        ) as r:
            yield from r.iter_content(chunk_size=None, decode_unicode=True)

    def check(self, paths: list[str] | None = None) -> dict:
        """A look at the page: ``compile_error`` (the dev server's, for ``paths``),
        ``page`` (one load in the server's headless browser: ``errors``, ``blank``;
        None where it has none) and ``page_errors`` (what open pages reported)."""
        return self.client.request(
            "POST", self._path("check"), json={"paths": paths or []}, timeout=120
        ).json()

    def screenshot(self) -> bytes:
        """A PNG of the running page, taken by the server's headless browser."""
        return self.client.request("GET", self._path("screenshot"), timeout=120).content

    def files(self) -> list[str]:
        return self.client.request("GET", self._path("files")).json()["files"]

    def delete_file(self, path: str) -> str | None:
        """Remove a file by hand (committed); the commit."""
        return self.client.request("DELETE", self._path("files", quote(path))).json()["commit"]

    def read(self, path: str) -> str:
        return self.client.request("GET", self._path("files", quote(path))).text

    def write(self, path: str, content: str) -> str | None:
        """Change one file by hand (checked, committed); the commit, or None if unchanged."""
        r = self.client.request(
            "PUT",
            self._path("files", quote(path)),
            data=content.encode("utf-8"),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        return r.json()["commit"]

    def export(self, path: str | os.PathLike | None = None, *, data: bool = False) -> Path:
        """Download the app's source as a ZIP (no node_modules, no history; its data
        folder too with ``data=True``) to ``path`` (default ``<id>.zip`` here); the
        path written.  Uploading it again gives the same app."""
        target = Path(path if path is not None else f"{self.id}.zip").expanduser()
        if target.is_dir():
            target = target / f"{self.id}.zip"
        params = {"data": "1"} if data else {}
        with self.client.request(
            "GET", self._path("export"), params=params, stream=True, timeout=300
        ) as r:
            partial = target.with_name(f".{target.name}.part")
            with open(partial, "wb") as f:
                for chunk in r.iter_content(chunk_size=1 << 20):
                    f.write(chunk)
            os.replace(partial, target)
        return target

    def build(self, base: str = "/", *, wait: float | None = 600) -> dict:
        """Run the app's production build for ``base`` (the path it will be served
        under) in the sandbox; its record, once over (``wait=None``: at once).
        ``download_build(id)`` then gives its files as a ZIP."""
        made = self.client.request("POST", self._path("builds"), json={"base": base}).json()
        return self._until_built(("builds", made["id"]), "building", wait)

    def download_build(self, build_id: str, path: str | os.PathLike | None = None) -> Path:
        """A ready build's files as a ZIP at ``path`` (default ``<id>-<build>.zip``)."""
        target = Path(path if path is not None else f"{self.id}-{build_id}.zip").expanduser()
        r = self.client.request("GET", self._path("builds", build_id, "zip"), timeout=300)
        target.write_bytes(r.content)
        return target

    def share(
        self,
        days: float | None = None,
        *,
        users: list[str] | None = None,
        groups: list[str] | None = None,
        public: bool = False,
        wait: float | None = 600,
    ) -> dict:
        """Build the app for a link of its own and publish it there, for ``days``
        (the server's default if None); the share, once live or failed (``wait=None``:
        at once).  On a single-user server anyone with its ``url`` opens it until it
        expires or is revoked; under JupyterHub, the hub ``users`` and members of
        ``groups`` named here, once logged in (anyone: ``public``, if the admin
        allows it)."""
        body: dict = {"days": days} if days is not None else {}
        if users:
            body["users"] = list(users)
        if groups:
            body["groups"] = list(groups)
        if public:
            body["public"] = True
        made = self.client.request("POST", self._path("shares"), json=body).json()
        return self._until_built(("..", "..", "shares", made["id"]), "building", wait)

    def shares(self) -> list[dict]:
        """This project's share links, newest first, with expiry and last access."""
        return self.client.request("GET", self._path("shares")).json()["shares"]

    def _until_built(self, parts: tuple[str, ...], busy: str, wait: float | None) -> dict:
        path = posixpath.normpath(self._path(*parts))
        deadline = time.monotonic() + (wait or 0)
        while True:
            info = self.client.request("GET", path).json()
            if info["status"] != busy or wait is None or time.monotonic() > deadline:
                return info
            time.sleep(0.5)

    def fix(self, on_event: Callable[[dict], None] | None = None) -> EditResult:
        """Ask the AI to fix the error the preview's page reported last."""
        return self.edit("", None, on_event, fix=True)

    def edit(
        self,
        instruction: str,
        paths: list[str] | None = None,
        on_event: Callable[[dict], None] | None = None,
        *,
        fix: bool = False,
        at: str | dict | None = None,
        screenshot: bool = False,
        images: list[str | bytes] | None = None,
        review: bool = False,
        agent: bool = False,
    ) -> EditResult:
        """Ask the AI to change the app; ``on_event`` sees its progress (asking, applying...).
        ``fix``: to fix the error the preview's page reported (``instruction`` adds to it).
        ``at``: the element the instruction is about, ``"src/App.jsx:42"`` or a selection
        of the preview (``{"file", "line", "column", "tag", "text", "classes"}``).
        ``screenshot``: show the model the page as it is now; ``images``: files (paths)
        or bytes of images to show it (a sketch, a mock-up).  Both need a model that
        takes images; without one the result says they were not sent.  ``review``:
        the result is ``proposed`` with its diff, and nothing is written until
        ``accept`` (``discard`` drops it).  ``agent``: the model works in steps with
        tools (read, search, write, check the compile and the page), within the
        server's budgets, and its steps are one change (where the server allows it)."""
        if not instruction.strip() and not fix:
            raise ReactBoxClientError("Say what to change: the instruction is empty.")
        body: dict = {"instruction": instruction, "paths": paths or None}
        if fix:
            body["fix"] = True
        if at:
            body["at"] = at
        if screenshot:
            body["screenshot"] = True
        if images:
            body["images"] = [_data_url(image) for image in images]
        if review:
            body["review"] = True
        if agent:
            body["agent"] = True
        if on_event is None:
            r = self.client.request("POST", self._path("edits"), json=body, timeout=None)
            return EditResult.from_json(r.json())
        import threading

        result: dict = {}

        def post() -> None:
            try:
                result["r"] = self.client.request(
                    "POST", self._path("edits"), json=body, timeout=None
                )
            except ReactBoxClientError as exc:
                result["e"] = exc

        worker = threading.Thread(target=post, daemon=True)
        started = time.time()
        worker.start()
        done = False
        while worker.is_alive() and not done:
            fresh = False
            try:  # the stream is the server's current edit; an older one is skipped
                for event in self.client.stream_events(self._path("edits", "events"), None):
                    if event.get("time", started) < started - 2:
                        continue
                    fresh = True
                    on_event(event)
                    done = done or event.get("stage") == "done"
            except ReactBoxClientError:
                pass
            if not fresh:
                time.sleep(0.1)
        worker.join()
        if "e" in result:
            raise result["e"]
        return EditResult.from_json(result["r"].json())

    def accept(self, edit_id: str | None = None) -> EditResult:
        """Write the change a reviewed edit proposed (``edit_id``: it must be that one)."""
        body = {"id": edit_id} if edit_id else {}
        r = self.client.request("POST", self._path("proposal"), json=body, timeout=None)
        return EditResult.from_json(r.json())

    def discard(self, edit_id: str | None = None) -> EditResult:
        """Drop the change a reviewed edit proposed; nothing is written."""
        params = {"id": edit_id} if edit_id else {}
        return EditResult.from_json(
            self.client.request("DELETE", self._path("proposal"), params=params).json()
        )

    def undo(self) -> str:
        """Step back one change; the message of the change now current."""
        return self.client.request("POST", self._path("undo")).json()["head"]["message"]

    def redo(self) -> str:
        return self.client.request("POST", self._path("redo")).json()["head"]["message"]

    def diff(self, start: str = "HEAD~1", end: str | None = None) -> str:
        params = {"from": start, **({"to": end} if end else {})}
        return self.client.request("GET", self._path("diff"), params=params).json()["diff"]

    def history(self) -> list[dict]:
        """Every change, newest first: sha, message, time, what made it (``kind``:
        upload, ai-edit, editor-save, hand-edit, restore, outside, upgrade; ``detail``:
        an AI edit's instruction, a file), the ``files`` it changed, its ``points``."""
        return self.client.request("GET", self._path("history")).json()["commits"]

    def restore(self, to: str) -> str:
        """The app as it was at ``to`` (a point's name, a sha, ``HEAD~N``), as one new
        change: ``undo()`` takes the restore back.  The new change's message."""
        r = self.client.request("POST", self._path("restore"), json={"to": to})
        return r.json()["head"]["message"]

    def name_point(self, name: str, at: str = "HEAD") -> dict:
        """Name the change ``at`` ("before the redesign"), to restore it by name."""
        return self.client.request(
            "PUT", self._path("points", quote(name, safe="")), json={"at": at}
        ).json()

    def points(self) -> list[dict]:
        """The named points, newest first: name, sha, time."""
        return self.client.request("GET", self._path("history")).json()["points"]

    def remove_point(self, name: str) -> None:
        self.client.request("DELETE", self._path("points", quote(name, safe="")))

    # -- the bridge: the app calls the notebook, the notebook pushes to the app -----------

    @property
    def bridge(self):
        """This project's bridge from this kernel (``kernel/bridge.py``)."""
        from .bridge import bridge_of

        return bridge_of(self.client, self.id)

    def expose(self, fn=None, *, name: str | None = None, concurrent: bool = False):
        """Let the running app call ``fn`` (``await call("fn", ...args)`` in the app,
        with JSON arguments; its result as JSON).  A decorator too.  One call runs
        at a time unless ``concurrent``; what it prints, and the traceback of what
        it raises, show under this cell."""
        return self.bridge.expose(fn, name=name, concurrent=concurrent)

    def unexpose(self, fn=None) -> None:
        """The app can no longer call ``fn`` (a function or its name; None: any)."""
        self.bridge.unexpose(fn)

    def on(self, event: str, fn=None):
        """Call ``fn(value)`` when the app does ``emit(event, value)``.  A decorator too."""
        return self.bridge.on(event, fn)

    def off(self, event: str, fn=None) -> None:
        self.bridge.off(event, fn)

    def send(self, name: str, value) -> None:
        """Push ``value`` to the running app at once (``useNotebook(name)``); no file is
        written and the page does not reload.  ``publish`` is for data to keep."""
        self.bridge.send(name, value)

    @property
    def state(self):
        """Values shared with the app (``useNotebookState(key)``): set one here and the
        app renders it; the app's changes show here."""
        return self.bridge.state

    # -- notebook data -------------------------------------------------------------

    def publish(self, name: str, value) -> str:
        """Put ``value`` (a DataFrame, list, dict...) where the app can ``import`` it:
        ``src/reactbox-data/<name>.json``.  Publishing again updates the preview."""
        body = to_json(value)
        r = self.client.request(
            "PUT",
            self._path("data", quote(name, safe="")),
            data=body,
            headers={"Content-Type": "application/json"},
        )
        return r.json()["path"]


def to_json(value) -> bytes:
    """JSON of notebook data: DataFrames as a list of row objects (NaN -> null,
    dates as ISO strings), Series as objects, arrays as lists."""
    if hasattr(value, "to_json") and hasattr(value, "columns"):  # a DataFrame
        return value.to_json(orient="records", date_format="iso").encode()
    if hasattr(value, "to_json") and hasattr(value, "index"):  # a Series
        return value.to_json(orient="index", date_format="iso").encode()
    if hasattr(value, "tolist"):  # numpy
        value = value.tolist()
    try:
        return json.dumps(value, allow_nan=False, default=_json_default).encode()
    except (TypeError, ValueError) as exc:
        raise ReactBoxClientError(f"This value cannot be sent as JSON: {exc}") from None


def _json_default(obj):
    if hasattr(obj, "to_json") and hasattr(obj, "index"):  # a DataFrame or Series inside
        return json.loads(to_json(obj))
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON")


def _retry_after(r: requests.Response) -> float | None:
    """Seconds a 429 asks to wait before the same request again (None: not that)."""
    if r.status_code != 429:
        return None
    try:
        return min(max(float(r.headers["Retry-After"]), 0.5), 60.0)
    except (KeyError, ValueError):
        return None


def zip_folder(folder: Path) -> bytes:
    """A ZIP of an app folder, without its dependencies, build output or history."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for dirpath, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_IN_FOLDERS)
            for name in sorted(names):
                path = Path(dirpath, name)
                zf.write(path, path.relative_to(folder).as_posix())
    return buf.getvalue()


class ReactBoxClient:
    """The REST API of one Jupyter server's jupyter-reactbox."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60):
        self.url = url.rstrip("/") + "/"
        self.token = token or None
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # a proxy from the environment must not see the token
        if self.token:
            self.session.headers["Authorization"] = f"token {self.token}"

    def __repr__(self) -> str:
        return f"<ReactBoxClient {self.url}>"

    def request(self, method: str, path: str, *, timeout: float | str | None = "default", **kw):
        """One API call; the response if it is 2xx, else a ReactBoxClientError.  A 429
        with a Retry-After (the server's line of installs, starts or edits is full)
        is waited out and sent again, for ``BUSY_WAIT`` seconds at most."""
        url = f"{self.url}{API}/{path}"
        deadline = time.monotonic() + BUSY_WAIT
        while True:
            try:
                r = self.session.request(
                    method, url, timeout=self.timeout if timeout == "default" else timeout, **kw
                )
            except requests.ConnectionError:
                raise ReactBoxClientError(
                    f"The Jupyter server at {self.url} is not answering; is it still running?"
                ) from None
            except requests.Timeout:
                raise ReactBoxClientError(
                    f"The Jupyter server at {self.url} took too long."
                ) from None
            if r.status_code < 400:
                return r
            wait = _retry_after(r)
            if wait is None or time.monotonic() + wait > deadline:
                raise ReactBoxClientError(_message(r), r.status_code)
            r.close()
            time.sleep(wait)

    def stream_events(self, path: str, timeout: float | None) -> Iterator[dict]:
        """The ``data:`` payloads of a server-sent-events stream, parsed."""
        with self.request("GET", path, stream=True, timeout=(10, timeout)) as r:
            try:
                for line in r.iter_lines(decode_unicode=True):
                    if line and line.startswith("data: "):
                        yield json.loads(line[6:])
            except requests.RequestException:
                return

    def check(self) -> ReactBoxClient:
        """Raise a clear error unless this server has the extension and accepts us."""
        try:
            self.request("GET", "projects")
        except ReactBoxClientError as exc:
            if exc.status == 404:
                raise ReactBoxClientError(
                    f"The Jupyter server at {self.url} does not have jupyter-reactbox: "
                    f"{ENABLE_HINT}."
                ) from None
            if exc.status in (401, 403):
                raise ReactBoxClientError(
                    f"The Jupyter server at {self.url} refused this kernel's credentials; set "
                    "JUPYTER_REACTBOX_TOKEN to a token of that server."
                ) from None
            raise
        return self

    # -- projects --------------------------------------------------------------------

    def projects(self) -> list[Project]:
        return [Project(self, p) for p in self.request("GET", "projects").json()["projects"]]

    def project(self, name: str) -> Project:
        """The project called ``name`` (its id, or the name it was uploaded with)."""
        if not name:
            raise ReactBoxClientError("Name a project.")
        try:
            return Project(self, self.request("GET", f"projects/{quote(name, safe='')}").json())
        except ReactBoxClientError as exc:
            if exc.status not in (404,):
                raise
        projects = self.projects()
        for project in projects:
            if name in (project.id, project.name):
                return project
        known = ", ".join(p.id for p in projects) or "none yet"
        raise ReactBoxClientError(f"No project {name!r} (projects: {known}).", 404)

    def shares(self) -> list[dict]:
        """All your share links, newest first, with their expiry and last access."""
        return self.request("GET", "shares").json()["shares"]

    def revoke(self, share_id: str) -> None:
        """Revoke a share link: it is a 404 at once."""
        self.request("DELETE", f"shares/{quote(share_id, safe='')}")

    def upload(
        self,
        source,
        name: str | None = None,
        *,
        path: str | None = None,
        replace: bool = False,
        upgrade_vite: bool = False,
    ) -> Project:
        """Upload an app: a ZIP's path, a folder (zipped here), or the ZIP's bytes.
        ``path`` picks the app's folder in a ZIP that holds several apps;
        ``upgrade_vite`` raises a Vite with no patched release (4 and older) to a
        maintained one, as one change after the upload's (``undo()`` takes it back).
        The project installs and starts in the background; ``wait()`` follows it."""
        data, default_name = _read_source(source)
        name = name or default_name
        if not name:
            raise ReactBoxClientError("Name the project: upload(data, name='shop').")
        if replace:
            try:
                self.project(name).delete()
            except ReactBoxClientError as exc:
                if exc.status != 404:
                    raise
        r = self.request(
            "POST",
            "projects",
            params={
                "name": name,
                **({"path": path} if path else {}),
                **({"upgrade": "vite"} if upgrade_vite else {}),
            },
            data=data,
            headers={"Content-Type": "application/zip"},
            timeout=300,
        )
        return Project(self, r.json())


def _read_source(source) -> tuple[bytes, str | None]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), None
    if isinstance(source, dict) and "content" in source:  # an ipywidgets FileUpload value
        return bytes(source["content"]), Path(source.get("name") or "").stem or None
    if not isinstance(source, (str, os.PathLike)):
        raise ReactBoxClientError(
            f"Upload a ZIP file's path, an app folder, or bytes (got {type(source).__name__})."
        )
    path = Path(source).expanduser()
    if path.is_dir():
        folders = [path, *(sub for sub in path.iterdir() if sub.is_dir())]
        if not any((folder / "package.json").is_file() for folder in folders):
            raise ReactBoxClientError(
                f"{path} has no package.json (nor a subfolder with one); it is not an app folder."
            )
        return zip_folder(path), path.resolve().name
    if not path.is_file():
        raise ReactBoxClientError(f"No such file: {path}")
    if not zipfile.is_zipfile(path):
        raise ReactBoxClientError(f"{path} is not a ZIP file.")
    return path.read_bytes(), path.stem


def _message(r: requests.Response) -> str:
    """The server's own message for an error response, on one line."""
    try:
        data = r.json()
        text = data.get("message") or data.get("reason") or ""
    except ValueError:
        text = r.text.strip()
    text = " ".join(str(text).split()) or r.reason
    return f"{text} (HTTP {r.status_code})"


# -- finding the server -----------------------------------------------------------------


def _loopback(url: str) -> str:
    """Talk to a server on this host over loopback (its Host check allows that)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host in ("", "0.0.0.0", "::", "localhost"):
        netloc = f"127.0.0.1:{parts.port}" if parts.port else "127.0.0.1"
        return urlunsplit((parts.scheme or "http", netloc, parts.path or "/", "", ""))
    return url


def _token_from_info(info_file: str | None) -> str | None:
    if not info_file:
        return None
    try:
        return json.loads(Path(info_file).read_text()).get("token") or None
    except (OSError, ValueError):
        return None


def _running_servers() -> list[dict]:
    from jupyter_core.paths import jupyter_runtime_dir

    servers = []
    for info_file in Path(jupyter_runtime_dir()).glob("jpserver-*.json"):
        try:
            info = json.loads(info_file.read_text())
            os.kill(int(info["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        servers.append(info)
    return sorted(servers, key=lambda s: s.get("pid", 0), reverse=True)


def candidates() -> list[tuple[str, str | None, str]]:
    """(url, token, where it came from) to try, best first."""
    env = os.environ
    found: list[tuple[str, str | None, str]] = []
    hub_token = env.get("JUPYTERHUB_API_TOKEN")
    if url := env.get("JUPYTER_REACTBOX_URL"):
        token = (
            env.get("JUPYTER_REACTBOX_TOKEN")
            or _token_from_info(env.get("JUPYTER_REACTBOX_SERVER_INFO"))
            or hub_token
        )
        found.append((_loopback(url), token, "JUPYTER_REACTBOX_URL"))
    if hub_token:
        url = env.get("JUPYTERHUB_SERVICE_URL")
        if not url and env.get("JUPYTERHUB_SERVICE_PREFIX") and env.get("JUPYTER_SERVER_PORT"):
            url = f"http://127.0.0.1:{env['JUPYTER_SERVER_PORT']}{env['JUPYTERHUB_SERVICE_PREFIX']}"
        if url:
            found.append((_loopback(url), hub_token, "JupyterHub"))
    cwd = Path.cwd().resolve()
    for info in _running_servers():
        root = Path(info.get("root_dir") or info.get("notebook_dir") or "/").resolve()
        if info.get("sock") or not cwd.is_relative_to(root):
            continue
        url = f"http://127.0.0.1:{info['port']}{info.get('base_url') or '/'}"
        found.append((url, info.get("token") or None, f"server {info['pid']}"))
    return found


def connect() -> ReactBoxClient:
    """The client of the Jupyter server this kernel belongs to."""
    tried = []
    for url, token, where in candidates():
        client = ReactBoxClient(url, token)
        try:
            return client.check()
        except ReactBoxClientError as exc:
            if where == "JUPYTER_REACTBOX_URL":
                raise  # the extension said where it is: its answer is the answer
            tried.append(str(exc))
    if tried:
        raise ReactBoxClientError(tried[0])
    raise ReactBoxClientError(
        "No Jupyter server with jupyter-reactbox was found for this kernel. Run the notebook "
        f"in Jupyter with the extension ({ENABLE_HINT}), or set JUPYTER_REACTBOX_URL and "
        "JUPYTER_REACTBOX_TOKEN."
    )


def _data_url(image: str | bytes | os.PathLike) -> str:
    """An image file (or its bytes) as a data URL; the server checks what it is."""
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    kind = mimetypes.guess_type(str(image))[0] if not isinstance(image, bytes) else None
    return f"data:{kind or 'image/png'};base64,{base64.b64encode(data).decode()}"
