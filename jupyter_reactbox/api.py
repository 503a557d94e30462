"""REST API under ``{base_url}reactbox/api/``: thin handlers that parse, call and serialise.

POST   projects?name=NAME          body: application/zip, or multipart field ``file``
GET    projects                    list
GET    projects/<id>               one
DELETE projects/<id>               container, network and files gone
POST   projects/<id>/start|stop|restart   202 (restart: new container, new link)
POST   projects/<id>/heartbeat     204; someone uses the preview (resets its idle clock)
GET    projects/<id>/export        the app's source as a ZIP (?data=1: with its data folder)
GET    projects/<id>/builds        its production builds; POST {"base"}: start one (202)
GET    projects/<id>/builds/<b>    one build; /log its output, /zip its files; DELETE it
GET    projects/<id>/shares        its published snapshots; POST {"days", "users", "groups",
                                   "public"}: build and publish one at a link of its own that
                                   expires (shares.py; users, groups, public: JupyterHub)
GET    shares                      all of the user's, with expiry and last access
GET    shares/<s>                  one; DELETE: revoke it (its link is 404 at once)
GET    projects/<id>/events        server-sent events: the project's state on each change
GET    projects/<id>/logs          text; ?follow=1 streams the dev server's output
POST   projects/<id>/check         {"paths"}: the dev server's error compiling them, one load
                                   of the page in the server's headless browser, and what
                                   the open pages reported (an agent's look)
GET    projects/<id>/screenshot    a PNG of the running page (the server's headless browser)
GET    projects/<id>/files         the project's own files (paths)
GET    projects/<id>/files/<path>  one file's text
PUT    projects/<id>/files/<path>  write it by hand (checked, committed: Undo steps back);
                                   If-Match: its ETag (409 if it changed), ?from=editor,
                                   ?type=directory; DELETE: remove it; PATCH {"path"}: rename
PUT    projects/<id>/data/<name>   JSON from a notebook -> src/reactbox-data/<name>.json
DELETE projects/<id>/data/<name>
POST   projects/<id>/edits         an AI edit: {"instruction", "paths", "at", "images",
                                   "screenshot", "review", "fix", "agent"}; GET: past edits
GET    projects/<id>/edits/events  server-sent events: the running edit's steps
GET    projects/<id>/proposal      a reviewed edit's proposed change; POST: accept it
                                   ({"id"}); DELETE: discard it (?id=)
PUT    projects/<id>/selection     the element picked in the preview, for the next edit
                                   (its "at"); DELETE: none
GET    projects/<id>/history       the timeline (what made each change, its files) and points
POST   projects/<id>/restore       {"to": sha | HEAD~N | a point}: as it was, as a new change
PUT    projects/<id>/points/<name> name a change ({"at"}); DELETE: forget the name
GET    projects/<id>/bridge        websocket: the notebook's end of the app's bridge
                                   (bridge.py)
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import PurePath
from typing import IO

from jupyter_server.base.handlers import APIHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.utils import url_path_join
from tornado import web, websocket
from tornado.iostream import StreamClosedError

from . import bridge, export, files, history
from .ai.context import read_text
from .ai.editor import AIEditor
from .ai.place import Place
from .ai.vision import parse_images
from .answers import JsonAnswers
from .builds import Builds
from .errors import (
    AIUnavailable,
    ArchiveError,
    ArchiveTooLarge,
    BadRequest,
    EditBusy,
    NotAText,
    NothingToFix,
    TooLarge,
    WrongContentType,
)
from .runtime import Runtime
from .shares import Shares
from .spaces import Space
from .store import Project

ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream")
ID = r"(?P<project_id>[a-z0-9][a-z0-9-]*)"
BUILD = r"(?P<build_id>[a-z0-9-]+)"
SHARE = r"(?P<share_id>[A-Za-z0-9_-]+)"
BASE_RE = re.compile(r"^/(?:[A-Za-z0-9._~%@+-]+/)*$")
"""A base a build may be made for: a path from the root, ending in /."""


DELETED = {"status": "deleted"}


class BaseHandler(JsonAnswers, APIHandler):
    """A call on the caller's own space (``spaces.py``): under JupyterHub's service,
    the space of the hub user whose token authenticated the call."""

    space: Space | None = None

    async def prepare(self):
        await super().prepare()
        user = self.current_user
        if user is None:
            return  # @web.authenticated answers 403
        self.space = await self.settings["reactbox_spaces"].for_user(user.username)
        await self.runtime.recovered()

    @property
    def runtime(self) -> Runtime:
        assert self.space is not None
        return self.space.runtime

    @property
    def editor(self) -> AIEditor | None:
        assert self.space is not None
        return self.space.editor

    def check_not_editing(self, project_id: str) -> None:
        if self.editor is not None and self.editor.busy(project_id):
            raise EditBusy(f"An edit of {project_id} is running; wait for it to finish.")

    async def project(self, project_id: str) -> Project:
        """The caller's project ``project_id`` (404 if there is none)."""
        return await asyncio.to_thread(self.runtime.store.get, project_id)

    def disk_root(self):
        return self.runtime.store.root if self.space is not None else None

    def project_json(self, project) -> dict:
        return self.runtime.info(project)

    async def send_zip(
        self,
        write: Callable[[IO[bytes]], object],
        filename: str,
        said: Callable[[object], None] = lambda written: None,
    ) -> None:
        """Answer with the ZIP ``write`` makes (on a thread, into a spooled temporary
        file) as the download ``filename``; ``said`` sets headers from what ``write``
        returned."""
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as out:
            said(await asyncio.to_thread(write, out))
            self.set_header("Content-Type", "application/zip")
            self.set_header("Content-Disposition", f'attachment; filename="{filename}"')
            out.seek(0)
            while chunk := await asyncio.to_thread(out.read, 1 << 20):
                self.write(chunk)
                await self.flush()
        self.finish()

    def write_json(self, data, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))


class ProjectsHandler(BaseHandler):
    @web.authenticated
    async def get(self):
        projects = await asyncio.to_thread(self.runtime.store.list)
        self.write_json({"projects": [self.project_json(p) for p in projects]})

    @web.authenticated
    async def post(self):
        data, filename = self._upload()
        limit = self.settings["reactbox_max_upload_bytes"]
        if len(data) > limit:
            raise ArchiveTooLarge(
                f"The upload is {len(data)} bytes; the limit is {limit}. Leave out node_modules "
                "and build output, or ask your admin to raise c.ReactBoxApp.max_upload_bytes."
            )
        name = self.get_query_argument("name", None) or self.get_body_argument("name", None)
        if not name and filename:
            name = PurePath(filename).stem
        if not name:
            raise ArchiveError("Name the project: POST .../reactbox/api/projects?name=my-app")
        path = self.get_query_argument("path", None)
        upgrade = self.get_query_argument("upgrade", None)
        if upgrade not in (None, "vite"):
            raise ArchiveError(
                f"?upgrade= takes 'vite' (the only upgrade offered), not {upgrade!r}."
            )
        await self.space.check_room(len(data))
        project = await self.runtime.create(data, name, path, upgrade_vite=upgrade == "vite")
        self.log.info("Imported project %s (%s)", project.id, project.framework)
        # The user's server's own path, also when the hub service answers.
        location = url_path_join(self.runtime.base_url, "reactbox", "api", "projects", project.id)
        self.set_header("Location", location)
        self.write_json(self.project_json(project), status=201)

    def _upload(self) -> tuple[bytes, str | None]:
        files = self.request.files.get("file")
        if files:
            return files[0].body, files[0].filename
        content_type = self.request.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type.startswith("multipart/"):
            raise ArchiveError("The multipart upload has no field named 'file'.")
        if content_type not in ZIP_TYPES:
            raise WrongContentType(
                f"Send the ZIP as the body with Content-Type: application/zip (got "
                f"{content_type or 'none'}), or as multipart field 'file'.",
            )
        return self.request.body, None


class ProjectHandler(BaseHandler):
    @web.authenticated
    async def get(self, project_id):
        project = await self.project(project_id)
        self.write_json(self.project_json(project))

    @web.authenticated
    async def delete(self, project_id):
        await self.project(project_id)
        self.check_not_editing(project_id)
        space = self.space
        assert space is not None
        if space.builds is not None:
            await space.builds.forget_project(project_id)
        await self.runtime.delete(project_id)
        if space.shares is not None:
            space.shares.forget_project(project_id)  # its links are dead too
        self.log.info("Deleted project %s", project_id)
        self.set_status(204)
        self.finish()


class ExportHandler(BaseHandler):
    """The app's source as a ZIP (``export.py``); ``?data=1`` with the notebook's
    data folder."""

    @web.authenticated
    async def get(self, project_id):
        project = await self.project(project_id)
        with_data = self.get_query_argument("data", "") not in ("", "0", "false")
        write = functools.partial(export.write_zip, project.app_dir, top=project.id, data=with_data)

        def said(written: tuple[int, list[str]]) -> None:
            count, too_large = written
            self.set_header("X-Reactbox-Files", str(count))
            if too_large:  # said, not hidden: they are the user's files
                self.set_header("X-Reactbox-Left-Out", json.dumps(too_large[:20]))

        await self.send_zip(write, f"{project.id}.zip", said)


def _body(handler) -> dict:
    """The request's JSON object (empty for no body); BadRequest otherwise."""
    raw = handler.request.body or b"{}"
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise BadRequest("Send a JSON object.")
    return data


class BuildBase(BaseHandler):
    @property
    def builds(self) -> Builds:
        assert self.space is not None and self.space.builds is not None
        return self.space.builds


class BuildsHandler(BuildBase):
    """The project's production builds (``builds.py``): list them, or start one for
    ``{"base"}`` (the path it will be served under; default ``/``)."""

    @web.authenticated
    async def get(self, project_id):
        project = await self.project(project_id)
        builds = await asyncio.to_thread(self.builds.list, project)
        self.write_json({"builds": [b.to_json() for b in builds]})

    @web.authenticated
    async def post(self, project_id):
        project = await self.project(project_id)
        base = _body(self).get("base", "/")
        if not isinstance(base, str) or not BASE_RE.match(base):
            raise BadRequest('"base" is a path from the root that ends in /, e.g. "/shop/".')
        plan = await asyncio.to_thread(project.plan)
        build = self.builds.start(project, plan, base)
        self.write_json(build.to_json(), status=202)


class BuildHandler(BuildBase):
    """One build: its record, its log (``/log``), its files as a ZIP (``/zip``)."""

    @web.authenticated
    async def get(self, project_id, build_id, part=None):
        project = await self.project(project_id)
        if part == "log":
            text = await asyncio.to_thread(self.builds.log_of, project, build_id)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            return self.finish(text)
        if part != "zip":
            build = await asyncio.to_thread(self.builds.get, project, build_id)
            return self.write_json(build.to_json())
        site = await asyncio.to_thread(self.builds.site, project, build_id)
        write = functools.partial(export.write_site_zip, site)
        await self.send_zip(write, f"{project.id}-{build_id}.zip")

    @web.authenticated
    async def delete(self, project_id, build_id, part=None):
        if part is not None:
            raise BadRequest("DELETE the build itself, not its log or ZIP.")
        project = await self.project(project_id)
        await self.builds.remove(project, build_id)
        self.set_status(204)
        self.finish()


class SharesHandler(BaseHandler):
    """Published snapshots (``shares.py``): ``projects/<id>/shares`` lists a project's
    and makes one (``{"days"}``); ``shares`` lists all of the user's; ``shares/<id>``
    is one, and DELETE revokes it at once."""

    @property
    def shares(self) -> Shares:
        assert self.space is not None and self.space.shares is not None
        return self.space.shares

    @web.authenticated
    async def get(self, project_id=None, share_id=None):
        if share_id is not None:
            return self.write_json(self.shares.get(share_id))
        if project_id is not None:
            await self.project(project_id)
        self.write_json({"shares": self.shares.list(project_id)})

    @web.authenticated
    async def post(self, project_id=None, share_id=None):
        if project_id is None or share_id is not None:
            raise BadRequest("Share a project: POST projects/<id>/shares.")
        project = await self.project(project_id)
        body = _body(self)
        days = body.get("days")
        if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float))):
            raise BadRequest('"days" is a number of days, e.g. {"days": 7}.')
        users, groups = body.get("users") or [], body.get("groups") or []
        if not isinstance(users, list) or not isinstance(groups, list):
            raise BadRequest('"users" and "groups" are lists of hub names.')
        public = body.get("public", False)
        if not isinstance(public, bool):
            raise BadRequest('"public" is true or false.')
        plan = await asyncio.to_thread(project.plan)
        shared = self.shares.create(project, plan, days, users=users, groups=groups, public=public)
        self.write_json(shared, status=202)

    @web.authenticated
    async def delete(self, project_id=None, share_id=None):
        if share_id is None:
            raise BadRequest("Revoke one share: DELETE shares/<id>.")
        self.shares.revoke(share_id)
        self.set_status(204)
        self.finish()


class ActionHandler(BaseHandler):
    @web.authenticated
    async def post(self, project_id, action):
        project = await self.project(project_id)
        if action == "heartbeat":
            await self.runtime.use(project_id)
            self.set_status(204)
            return self.finish()
        if action == "start":
            self.runtime.start(project)
        elif action == "restart":
            self.runtime.restart(project)
        else:
            await self.runtime.stop(project_id)
        self.write_json(self.project_json(project), status=202)


class EventsHandler(BaseHandler):
    """The project's state as server-sent events: now, then after every change."""

    keepalive = 15.0

    @web.authenticated
    async def get(self, project_id):
        project = await self.project(project_id)
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        st = self.runtime.state(project_id)
        while True:
            changed = st.changed
            deleted = st.status == "deleted"
            data = self.project_json(project) if not deleted else {"id": project_id, **DELETED}
            self.write(f"data: {json.dumps(data)}\n\n")
            if deleted:
                break
            try:
                await self.flush()
                while True:
                    try:
                        await asyncio.wait_for(changed.wait(), self.keepalive)
                        break
                    except asyncio.TimeoutError:
                        self.write(": keepalive\n\n")
                        await self.flush()
            except StreamClosedError:
                return
        self.finish()


class LogsHandler(BaseHandler):
    """The install's and the dev server's output; ``?follow=1`` streams it until the
    client leaves (then the follow ends at once, even if the dev server is quiet)."""

    _pumping: asyncio.Future | None = None

    def on_connection_close(self):
        if self._pumping is not None:
            self._pumping.cancel()

    @web.authenticated
    async def get(self, project_id):
        project = await self.project(project_id)
        follow = None
        if self.get_query_argument("follow", ""):
            follow = await self.runtime.follow_logs(project_id)  # 429 before output
        try:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.set_header("Cache-Control", "no-cache")
            try:
                install = project.install_log.read_text(errors="replace")
            except FileNotFoundError:
                install = ""
            self.write(install)
            self.write(await self.runtime.logs(project_id))
            if follow is None:
                return self.finish()
            await self.flush()
            self._pumping = asyncio.ensure_future(self._pump(follow))
            try:
                await self._pumping
            except (asyncio.CancelledError, StreamClosedError):
                return  # the client left
            self.finish()
        finally:
            if follow is not None:
                follow.close()

    async def _pump(self, follow) -> None:
        async for chunk in follow:
            self.write(chunk)
            await self.flush()


class CheckHandler(BaseHandler):
    """An agent's look at the page: does it compile, does it throw, is it blank."""

    @web.authenticated
    async def post(self, project_id):
        await self.project(project_id)
        try:
            paths = json.loads(self.request.body or b"{}").get("paths") or []
            assert isinstance(paths, list) and all(isinstance(p, str) for p in paths)
        except (ValueError, AttributeError, AssertionError):
            raise BadRequest('A check is {"paths": ["src/App.jsx", ...]} (or {}).') from None
        if len(paths) > 50:
            raise BadRequest("Check at most 50 files at once.")
        for path in paths:
            files.checked_path(path)
        await self.runtime.use(project_id)
        self.write_json(await self.runtime.views.check(project_id, paths))


class ScreenshotHandler(BaseHandler):
    @web.authenticated
    async def get(self, project_id):
        await self.project(project_id)
        await self.runtime.use(project_id)
        image = await self.runtime.views.picture(project_id)
        self.set_header("Content-Type", image.mime)
        self.set_header("Cache-Control", "no-store")
        self.finish(image.data)


class FilesHandler(BaseHandler):
    """A project's files.  Each file's ``ETag`` is its version: a write or delete with
    ``If-Match`` (or ``If-None-Match: *``, for a new file) is refused with 409 when
    the file changed meanwhile."""

    @web.authenticated
    async def get(self, project_id, path=""):
        project = await self.project(project_id)
        if not path:
            names = await asyncio.to_thread(files.list_files, project.app_dir)
            if self.get_query_argument("detail", None):
                entries = await asyncio.to_thread(files.list_entries, project.app_dir)
                return self.write_json({"files": names, "entries": entries})
            return self.write_json({"files": names})
        if self.get_query_argument("stat", None):
            return self.write_json(await asyncio.to_thread(files.stat_path, project.app_dir, path))
        text, version = await asyncio.to_thread(files.read_versioned, project.app_dir, path)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("ETag", f'"{version}"')
        self.set_header("Cache-Control", "no-store")
        self.finish(text)

    def _expected(self) -> str | None:
        if self.request.headers.get("If-None-Match", "").strip() == "*":
            return "new"
        match = self.request.headers.get("If-Match", "").strip()
        return match.strip('"').removeprefix('W/"').strip('"') or None

    @web.authenticated
    async def put(self, project_id, path=""):
        project = await self.project(project_id)
        self.check_not_editing(project_id)
        if self.get_query_argument("type", None) == "directory":
            await asyncio.to_thread(files.make_folder, project.app_dir, path)
            return self.write_json({"path": path, "type": "directory"}, status=201)
        kind = self.request.headers.get("Content-Type", "").split(";")[0].strip()
        if kind == "application/octet-stream":  # an image, a font: as it is
            commit = await asyncio.to_thread(
                files.add_binary, project.app_dir, path, self.request.body,
                expected=self._expected(),
            )  # fmt: skip
            await self.runtime.changed(project_id)
            version = files.version(self.request.body)
            return self.write_json({"path": path, "commit": commit, "version": version})
        try:
            content = self.request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise NotAText(
                "Send the file as UTF-8 text (or as application/octet-stream)."
            ) from None
        await self.runtime.use(project_id)
        commit = await asyncio.to_thread(
            files.write_file,
            project.app_dir,
            path,
            content,
            expected=self._expected(),
            editor=self.get_query_argument("from", None) == "editor",
        )
        await self.runtime.changed(project_id)
        version = files.version(content.encode())
        self.set_header("ETag", f'"{version}"')
        self.write_json({"path": path, "commit": commit, "version": version})

    @web.authenticated
    async def delete(self, project_id, path=""):
        project = await self.project(project_id)
        self.check_not_editing(project_id)
        expected = self._expected()
        commit = await asyncio.to_thread(
            files.delete_path, project.app_dir, path, expected=expected
        )
        await self.runtime.changed(project_id)
        self.write_json({"path": path, "commit": commit})

    @web.authenticated
    async def patch(self, project_id, path=""):
        """Rename: ``{"path": "the/new/path"}``."""
        project = await self.project(project_id)
        self.check_not_editing(project_id)
        try:
            new = json.loads(self.request.body)["path"]
            assert isinstance(new, str)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise BadRequest('A rename is {"path": "the/new/path"}.') from None
        commit = await asyncio.to_thread(files.rename_path, project.app_dir, path, new)
        await self.runtime.changed(project_id)
        self.write_json({"path": new, "commit": commit})


MAX_DATA_BYTES = 32 << 20


class DataHandler(BaseHandler):
    @web.authenticated
    async def put(self, project_id, name):
        project = await self.project(project_id)
        if len(self.request.body) > MAX_DATA_BYTES:
            raise TooLarge(
                f"The data is {len(self.request.body)} bytes; the limit is {MAX_DATA_BYTES}."
            )
        path = await asyncio.to_thread(files.publish_data, project.app_dir, name, self.request.body)
        await self.runtime.changed(project_id)
        self.write_json({"name": name, "path": path, "bytes": len(self.request.body)})

    @web.authenticated
    async def delete(self, project_id, name):
        project = await self.project(project_id)
        await asyncio.to_thread(files.remove_data, project.app_dir, name)
        await self.runtime.changed(project_id)
        self.set_status(204)
        self.finish()


NO_AI = (
    "AI edits are not configured. Set c.AIEditor.base_url (or $OPENAI_BASE_URL) to "
    "an OpenAI-compatible endpoint and c.AIEditor.api_key (or $OPENAI_API_KEY), "
    "then restart the server."
)


class EditBase(BaseHandler):
    def require_editor(self) -> AIEditor:
        if self.editor is None:
            raise AIUnavailable(NO_AI)
        return self.editor


class EditsHandler(EditBase):
    @web.authenticated
    async def get(self, project_id):
        project = await self.project(project_id)
        editor = self.require_editor()
        self.write_json({"edits": await asyncio.to_thread(editor.past_edits, project)})

    @web.authenticated
    async def post(self, project_id):
        project = await self.project(project_id)
        editor = self.require_editor()
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError as exc:
            raise BadRequest(f"The body is not JSON: {exc}") from exc
        instruction, paths = (
            body.get("instruction", "" if body.get("fix") else None),
            body.get("paths"),
        )
        if not isinstance(instruction, str) or (
            paths is not None
            and not (isinstance(paths, list) and all(isinstance(p, str) for p in paths))
        ):
            raise BadRequest(
                'Send {"instruction": "...", "paths": ["src/App.jsx"]} (paths optional; "at": '
                '"src/App.jsx:42" for the element the instruction is about), or {"fix": true} '
                "to fix the error the page reports.",
            )
        at = Place.parse(body["at"]) if body.get("at") is not None else None
        images = parse_images(body.get("images"))  # data URLs of images the user attached
        screenshot, review = body.get("screenshot", False), body.get("review", False)
        if not isinstance(screenshot, bool):
            raise BadRequest('"screenshot" is true or false: show the model the page.')
        if not isinstance(review, bool):
            raise BadRequest('"review" is true or false: propose, and write nothing yet.')
        default = editor.agent_by_default and editor.agent_steps > 0 and review is not True
        agent = body.get("agent", default)  # a reviewed edit is not an agent's
        if not isinstance(agent, bool):
            raise BadRequest('"agent" is true or false: the model works in steps, with tools.')
        fixing = None
        if body.get("fix"):
            errors = self.runtime.page_errors(project_id)
            if not errors:
                raise NothingToFix(
                    f"The page of {project_id} has reported no error to fix (open its "
                    "preview: errors are reported by the page).",
                )
            fixing = dict(errors[-1])
        await self.runtime.use(project_id)
        try:
            result = await editor.edit(
                project,
                instruction,
                paths,
                fixing=fixing,
                at=at,
                images=images,
                screenshot=screenshot,
                review=review,
                agent=agent,
            )
        finally:  # applied, or rolled back after tries a dev server elsewhere was sent
            await self.runtime.changed(project_id)
        st = self.runtime.state(project_id)
        if at is not None and result.status == "applied" and st.selection == at.to_json():
            st.update(selection=None)  # done with: the next instruction is about the app
        self.write_json(result.to_json())


class ProposalHandler(EditBase):
    """The change an edit with ``review`` proposed: GET it, POST ``accept`` (body
    ``{"id": ...}``, optional: the one reviewed) to write it, DELETE to drop it."""

    @web.authenticated
    async def get(self, project_id):
        await self.project(project_id)
        self.write_json(self.require_editor().proposal(project_id).result.to_json())

    @web.authenticated
    async def post(self, project_id):
        project = await self.project(project_id)
        editor = self.require_editor()
        try:
            edit_id = json.loads(self.request.body or b"{}").get("id")
        except (ValueError, AttributeError) as exc:
            raise BadRequest('Send {"id": "<the proposal reviewed>"} or nothing.') from exc
        await self.runtime.use(project_id)
        try:
            result = await editor.accept(project, edit_id)
        finally:
            await self.runtime.changed(project_id)
        self.write_json(result.to_json())

    @web.authenticated
    async def delete(self, project_id):
        project = await self.project(project_id)
        editor = self.require_editor()
        result = await editor.discard(project, self.get_argument("id", None))
        self.write_json(result.to_json())


class SelectionHandler(BaseHandler):
    """The element the user picked in the preview (a page posts it to JupyterLab,
    which puts it here), shown by every client and sent with the next edit."""

    @web.authenticated
    async def put(self, project_id):
        project = await self.project(project_id)
        try:
            place = Place.parse(json.loads(self.request.body or b"null"))
        except ValueError as exc:
            raise BadRequest(f"The body is not JSON: {exc}") from exc
        place.check(await asyncio.to_thread(read_text, project.app_dir, place.file))
        self.runtime.state(project_id).update(selection=place.to_json())
        self.write_json(place.to_json())

    @web.authenticated
    async def delete(self, project_id):
        await self.project(project_id)
        self.runtime.state(project_id).update(selection=None)
        self.set_status(204)


class EditEventsHandler(EditBase):
    @web.authenticated
    async def get(self, project_id):
        await self.project(project_id)
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        # Without an AI endpoint no edit runs, so the stream is empty: a client
        # may follow it beside an edit whose own answer says why it cannot run.
        progress = self.editor and self.editor.progress.get(project_id)
        sent = 0
        while progress is not None:
            changed = progress.changed
            for event in progress.events[sent:]:
                self.write(f"data: {json.dumps(event)}\n\n")
            sent = len(progress.events)
            try:
                await self.flush()
            except StreamClosedError:
                return
            if progress.done:
                break
            await changed.wait()
        self.finish(set_content_type="text/event-stream")


class HistoryHandler(EditBase):
    """The timeline: every change with what made it and its files, and the named points."""

    @web.authenticated
    async def get(self, project_id):
        project = await self.project(project_id)
        commits = await asyncio.to_thread(history.timeline, project.app_dir)
        points = await asyncio.to_thread(history.points, project.app_dir)
        self.write_json({"commits": commits, "points": points})


class RestoreHandler(EditBase):
    @web.authenticated
    async def post(self, project_id):
        """``{"to": "<sha, HEAD~N or a point's name>"}``: the app as it was then, as one
        new change (Undo takes it back)."""
        project = await self.project(project_id)
        self.check_not_editing(project_id)
        to = _json_field(self.request.body, "to")
        await self.runtime.use(project_id)
        commit = await asyncio.to_thread(history.restore, project.app_dir, to)
        await self.runtime.changed(project_id)
        self.write_json({"head": commit.to_json()})


class PointHandler(EditBase):
    @web.authenticated
    async def put(self, project_id, name):
        """Name a change (``{"at": rev}``; the current one without)."""
        project = await self.project(project_id)
        at = _json_field(self.request.body, "at", "HEAD") if self.request.body else "HEAD"
        point = await asyncio.to_thread(history.name_point, project.app_dir, name, at)
        self.write_json(point)

    @web.authenticated
    async def delete(self, project_id, name):
        project = await self.project(project_id)
        await asyncio.to_thread(history.remove_point, project.app_dir, name)
        self.set_status(204)
        self.finish()


def _json_field(body: bytes, name: str, default: str | None = None) -> str:
    try:
        value = json.loads(body or b"{}").get(name, default)
    except (ValueError, AttributeError):
        value = None
    if not isinstance(value, str) or not value:
        raise BadRequest(f'Send {{"{name}": "..."}} as JSON.')
    return value


class HistoryActionHandler(EditBase):
    @web.authenticated
    async def post(self, project_id, action):
        project = await self.project(project_id)
        self.check_not_editing(project_id)
        await self.runtime.use(project_id)
        step = history.undo if action == "undo" else history.redo
        commit = await asyncio.to_thread(step, project.app_dir)
        await self.runtime.changed(project_id)
        self.write_json({"head": commit.to_json()})


class DiffHandler(EditBase):
    @web.authenticated
    async def get(self, project_id):
        project = await self.project(project_id)
        start = self.get_query_argument("from", "HEAD~1")
        end = self.get_query_argument("to", None)
        text = await asyncio.to_thread(history.diff, project.app_dir, start, end)
        self.write_json({"from": start, "to": end, "diff": text})


class BridgeHandler(WebSocketMixin, websocket.WebSocketHandler, BaseHandler):
    """The notebook's end of a project's bridge (bridge.py): a websocket of the
    user's own kernel, authorised as the user's other API calls."""

    end: bridge.Socket | None = None

    def set_default_headers(self):
        """None of an API response's: this answer is a websocket's upgrade."""

    async def prepare(self):
        await BaseHandler.prepare(self)  # an API call's login (no redirect to a page)

    @property
    def max_message_size(self) -> int:
        return self.runtime.bridges.limits.kernel_max_bytes + bridge.MAX_HEADER + 1

    @web.authenticated
    async def get(self, project_id):
        await self.project(project_id)  # 404 if none
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            raise BadRequest("The bridge is a websocket.")
        await websocket.WebSocketHandler.get(self, project_id)

    def open(self, project_id):
        super().open(project_id)
        self.bridge = self.runtime.bridges(project_id)
        write = functools.partial(websocket.WebSocketHandler.write_message, self)
        self.end = bridge.Socket(write, self.close)
        self.bridge.kernel_opened(self.end)

    def on_message(self, message):
        if self.end is not None and isinstance(message, str):
            self.bridge.from_kernel(self.end, message)

    def on_close(self):
        if self.end is not None:
            self.end.closed = True
            self.bridge.kernel_closed(self.end)
            self.end = None


def handlers() -> list[tuple]:
    api = "/reactbox/api"
    return [
        (f"{api}/projects", ProjectsHandler),
        (f"{api}/projects/{ID}", ProjectHandler),
        (f"{api}/projects/{ID}/(?P<action>start|stop|restart|heartbeat)", ActionHandler),
        (f"{api}/projects/{ID}/export", ExportHandler),
        (f"{api}/projects/{ID}/builds", BuildsHandler),
        (f"{api}/projects/{ID}/builds/{BUILD}(?:/(?P<part>log|zip))?", BuildHandler),
        (f"{api}/projects/{ID}/shares", SharesHandler),
        (f"{api}/shares", SharesHandler),
        (f"{api}/shares/{SHARE}", SharesHandler),
        (f"{api}/projects/{ID}/events", EventsHandler),
        (f"{api}/projects/{ID}/logs", LogsHandler),
        (f"{api}/projects/{ID}/check", CheckHandler),
        (f"{api}/projects/{ID}/screenshot", ScreenshotHandler),
        (f"{api}/projects/{ID}/files(?:/(?P<path>.+))?", FilesHandler),
        (f"{api}/projects/{ID}/data/(?P<name>[^/]+)", DataHandler),
        (f"{api}/projects/{ID}/edits", EditsHandler),
        (f"{api}/projects/{ID}/edits/events", EditEventsHandler),
        (f"{api}/projects/{ID}/proposal", ProposalHandler),
        (f"{api}/projects/{ID}/selection", SelectionHandler),
        (f"{api}/projects/{ID}/history", HistoryHandler),
        (f"{api}/projects/{ID}/(?P<action>undo|redo)", HistoryActionHandler),
        (f"{api}/projects/{ID}/diff", DiffHandler),
        (f"{api}/projects/{ID}/restore", RestoreHandler),
        (f"{api}/projects/{ID}/points/(?P<name>[^/]+)", PointHandler),
        (f"{api}/projects/{ID}/bridge", BridgeHandler),
    ]
