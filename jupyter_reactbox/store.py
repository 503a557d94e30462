"""Projects on disk.

    <root>/
      <project-id>/
        project.json    metadata (name, framework, created)
        app/            the app's files: the only folder a sandbox can write to,
                        so nothing in it is trusted (see ``worktree``); where
                        projects have filesystems of their own, box/app, in
                        box.img (see ``boxes``)
        history.git/    its history, a bare git repository only the server
                        writes (see ``history``)
        install.log     output of the last dependency install
      .incoming-*/      uploads being checked; renamed into place when good

An import is atomic: it is extracted and committed in ``.incoming-*`` and then
renamed to ``<project-id>``, so a rejected upload leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from traitlets import TraitType

from . import archive, boxes, history, managers, supply, workspaces, worktree
from .errors import InvalidName, ProjectExists, ProjectNotFound
from .frameworks import AppPlan, detect, runnable

ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
STORE_ID = ".store-id"
"""In the projects folder: its name for the engine (see ``ProjectStore.id``)."""
_STORE_ID_RE = re.compile(r"^[a-z0-9]{6}$")


DEBRIS = (".install-", ".modules-", ".history-", ".page-storage-", ".reactbox-build-")
"""Beside a project's work tree: what an install, a history write, a page check or a
build was making when the server stopped."""


def slugify(name: str) -> str:
    """A project id from a free-form name: lowercase letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-")
    return slug


START_WANTED = "start-wanted"
"""In a project's folder while a start of it is asked for and not over."""


@dataclass
class Project:
    id: str
    name: str
    framework: str
    package_manager: str
    created: float
    path: Path
    member: str = ""
    """The app's folder in its work tree when that is a workspace ('' : the top)."""

    @functools.cached_property
    def app_dir(self) -> Path:
        return boxes.work_tree(self.path)

    @property
    def boxed(self) -> bool:
        """Its work tree is a filesystem of its own (``boxes``): the kernel keeps its
        quotas."""
        return self.app_dir.parent.name == boxes.BOX

    @property
    def install_log(self) -> Path:
        return self.path / "install.log"

    @property
    def start_wanted(self) -> Path:
        """There while a start asked for is not over (it may wait in line): a server
        that stops meanwhile starts it again when it comes back."""
        return self.path / START_WANTED

    def plan(self, *, own_origin: bool = False) -> AppPlan:
        """How to run it (``own_origin``: its preview is at ``/`` of its own origin)."""
        return detect(self.app_dir, self.member, own_origin=own_origin)

    def to_json(self) -> dict:
        data = asdict(self)
        del data["path"]
        return data


class ProjectStore:
    """Creates, finds and deletes projects under one root folder."""

    def __init__(
        self,
        root: Path,
        limits: archive.Limits | None = None,
        *,
        supply_policy: supply.Policy | None = None,
        box: tuple[int, int] | None = None,
    ):
        self.root = Path(root)
        self.limits = limits or archive.Limits()
        self.supply_policy = supply_policy or supply.Policy()
        self.box = box
        """(bytes, inodes) of each new project's filesystem (``boxes``); None: new
        projects are plain folders."""
        self.root.mkdir(parents=True, exist_ok=True)

    @functools.cached_property
    def id(self) -> str:
        """A short name of this projects folder, made once and kept in it: the
        containers a backend makes for its projects carry it, so two servers of one
        user with two folders never take each other's containers for their own."""
        path = self.root / STORE_ID
        for _ in range(2):
            try:
                found = path.read_text().strip()
            except FileNotFoundError:
                found = ""
            if _STORE_ID_RE.match(found):
                return found
            made = secrets.token_hex(3)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:  # another server made it meanwhile (or it is bad)
                if found:
                    path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(made + "\n")
            return made
        raise OSError(f"Cannot name the projects folder {self.root} ({path}).")

    def _dir(self, project_id: str) -> Path:
        if not ID_RE.match(project_id):
            raise ProjectNotFound(f"No project {project_id!r}.")
        return self.root / project_id

    def get(self, project_id: str) -> Project:
        path = self._dir(project_id)
        try:
            meta = json.loads((path / "project.json").read_text())
        except FileNotFoundError:
            raise ProjectNotFound(
                f"No project {project_id!r}. List your projects with GET reactbox/api/projects."
            ) from None
        return Project(path=path, **meta)

    def list(self) -> list[Project]:
        projects = []
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(".") or not (child / "project.json").is_file():
                continue
            projects.append(self.get(child.name))
        return projects

    def import_zip(
        self,
        data: bytes,
        name: str,
        path: str | None = None,
        *,
        upgrade_vite: bool = False,
        own_origin: bool = False,
    ) -> Project:
        """Check, extract and commit an uploaded ZIP as the new project ``name``;
        ``path`` names the app's folder in the ZIP when it holds several apps.
        ``upgrade_vite``: a Vite of a line with no patched release is raised to a
        maintained one, as a second commit the user can undo (``_upgrade_vite``)."""
        project_id = slugify(name)
        if not ID_RE.match(project_id):
            raise InvalidName(
                f"{name!r} is not a usable project name: use letters, digits and dashes "
                "(at most 40), e.g. ?name=my-shop."
            )
        final = self.root / project_id
        if final.exists():
            raise ProjectExists(
                f"A project named {project_id!r} exists already. Delete it first or pick "
                "another ?name=."
            )
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        try:
            app = staging / "app"
            if self.box is not None:
                app = boxes.make(staging, size=self.box[0], inodes=self.box[1])
            files = archive.extract(data, app, self.limits, path=path, runnable=runnable)
            plan = detect(app, files.member, own_origin=own_origin)
            upgrade = self._vite_upgrade(app, files.member) if upgrade_vite else None
            if upgrade is None:
                supply.check(app, self.supply_policy, member=files.member)
            project = Project(
                id=project_id,
                name=name,
                framework=plan.framework,
                package_manager=plan.package_manager,
                created=time.time(),
                path=final,
                member=files.member,
            )
            history.create(app)
            if upgrade is not None:
                self._upgrade_vite(app, files.member, upgrade)
                supply.check(app, self.supply_policy, member=files.member)
            (staging / "project.json").write_text(json.dumps(project.to_json(), indent=1))
            try:
                os.rename(staging, final)  # atomic; fails if a twin upload won the race
            except OSError as exc:
                raise ProjectExists(f"A project named {project_id!r} exists already.") from exc
        except BaseException:
            _remove(staging)
            raise
        return project

    @staticmethod
    def _vite_upgrade(app: Path, member: str) -> supply.ViteUpgrade | None:
        try:
            data = worktree.read_bytes(app, workspaces.manifest(member), 1 << 20)
        except worktree.NotAFile:
            return None
        return supply.vite_upgrade(data) if data else None

    @staticmethod
    def _upgrade_vite(app: Path, member: str, upgrade: supply.ViteUpgrade) -> None:
        """Write the upgraded ``package.json`` and drop the lockfiles that pin the old
        Vite (the install resolves from ``package.json`` then, and says so), as one
        commit after the upload's."""
        worktree.write_bytes(app, workspaces.manifest(member), upgrade.manifest)
        message = upgrade.message
        for name in managers.LOCKFILES:
            data = worktree.read_bytes(app, name, worktree.MAX_MANIFEST)
            version = data and supply.locked_vite({name: data})
            if version and supply.patched_release(version) is None and supply.vite_problem(version):
                worktree.remove(app, name)
                message += f"; {name} removed (it pinned Vite {version})"
        history.commit_all(app, message)

    def delete(self, project_id: str) -> None:
        path = self._dir(project_id)
        if not path.exists():
            raise ProjectNotFound(f"No project {project_id!r}.")
        boxes.unmount(path)  # its dev server is gone: nothing holds it
        # Rename first so a half-deleted folder never looks like a project.
        doomed = Path(tempfile.mkdtemp(prefix=".deleting-", dir=self.root))
        os.rename(path, doomed / project_id)
        shutil.rmtree(doomed, ignore_errors=True)

    PAGE_STORAGE = "page-storage.json"
    MAX_PAGE_STORAGE = 256 << 10
    """Bytes a project's pages may keep of their localStorage and cookies."""

    def page_storage(self, project_id: str) -> dict:
        """What the project's pages kept of their localStorage and cookies (the
        sandbox's are in memory only), beside its work tree: ``{}`` if nothing."""
        try:
            data = json.loads((self._dir(project_id) / self.PAGE_STORAGE).read_bytes())
        except (OSError, ValueError, ProjectNotFound):
            return {}
        return data if isinstance(data, dict) else {}

    def keep_page_storage(self, project_id: str, data: dict) -> None:
        """Keep ``data`` (checked: ``{"local": {...}, "cookies": {...}}`` of strings)."""
        folder = self._dir(project_id)
        if not (folder / "project.json").is_file():
            raise ProjectNotFound(f"No project {project_id!r}.")
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".page-storage-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, folder / self.PAGE_STORAGE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def mount_all(self) -> list[str]:
        """Mount the filesystem of every project that has one and is not mounted (after
        a reboot, or a server that unmounted them at its shutdown); the ids of those
        that could not be (they say so when started)."""
        failed = []
        for child in sorted(self.root.iterdir()):
            if not child.name.startswith(".") and boxes.boxed(child):
                try:
                    boxes.mount(child)
                except boxes.BoxError:
                    failed.append(child.name)
        return failed

    def unmount_all(self) -> None:
        """Unmount every project's filesystem (no dev server uses them any more); one
        still in use stays mounted."""
        for child in sorted(self.root.iterdir()):
            if not child.name.startswith(".") and boxes.mounted(child):
                with contextlib.suppress(boxes.BoxError):
                    boxes.unmount(child, lazily=False)

    def cleanup_staging(self) -> None:
        """Remove what an interrupted import, delete, install or migration left behind."""
        for child in self.root.iterdir():
            if child.name.startswith((".incoming-", ".deleting-")):
                for folder in (child, *child.iterdir()):  # an import's, a delete's project
                    with contextlib.suppress(boxes.BoxError, OSError):
                        boxes.unmount(folder)
                shutil.rmtree(child, ignore_errors=True)
            elif not child.name.startswith(".") and child.is_dir():
                for where in (child, child / boxes.BOX):
                    for debris in where.glob(".*-*"):
                        if debris.name.startswith(DEBRIS):
                            shutil.rmtree(debris, ignore_errors=True)


def _remove(staging: Path) -> None:
    """A staging folder, and the filesystem mounted in it if there is one."""
    with contextlib.suppress(boxes.BoxError):
        boxes.unmount(staging)
    shutil.rmtree(staging, ignore_errors=True)


class StoreLock:
    """Which server manages a projects folder: the one holding its lock.

    Two servers managing one folder would run two watchers, two starts of a
    project and two idle clocks over the same previews.  So the first Jupyter
    server (or hub service) to open a folder takes an exclusive lock on it for
    as long as it runs (``flock``: the kernel drops it when the process dies, so
    a killed server leaves none behind) and says where it can be reached in
    ``.manager.json`` (readable by its user only); a second server of the same
    folder relays to it, or says where it is (``hub/peer.py``).
    """

    LOCK = ".lock"
    MANAGER = ".manager.json"

    def __init__(self, root: Path):
        self.root = Path(root)
        self._fd: int | None = None

    def acquire(self, wait: float = 0) -> bool:
        """Take the folder's lock, waiting up to ``wait`` seconds for it; False if
        another process holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / self.LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.2)
        self._fd = fd
        return True

    @property
    def held(self) -> bool:
        return self._fd is not None

    def announce(self, manager: dict) -> None:
        """Say where the manager (this process, which holds the lock) is reached."""
        assert self.held
        tmp = self.root / f"{self.MANAGER}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({**manager, "pid": os.getpid()}, f)
        os.replace(tmp, self.root / self.MANAGER)

    def manager(self) -> dict | None:
        """Where the server that holds the lock said it is, if it holds it still."""
        try:
            found = json.loads((self.root / self.MANAGER).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(found, dict) or not self._locked_by_another():
            return None
        return found

    def _locked_by_another(self) -> bool:
        try:
            fd = os.open(self.root / self.LOCK, os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # a lock taken just now goes with it
        return False

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError, ValueError):
            path = self.root / self.MANAGER
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        os.close(self._fd)
        self._fd = None


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class Size(TraitType):
    """A setting that is a size: bytes, or with a unit ('500m', '2g'); read as bytes."""

    info_text = "a size in bytes, or with a unit: '500m', '2g'"

    def validate(self, obj, value):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return parse_size(value)
            except ValueError:
                pass
        self.error(obj, value)


def parse_size(text: str) -> int:
    """'512m' -> bytes (Docker's units, powers of 1024); '' or '0' -> 0."""
    value = text.strip().lower().removesuffix("b")
    if not value:
        return 0
    number, unit = (value[:-1], value[-1]) if value[-1] in _UNITS else (value, "")
    try:
        return int(float(number) * _UNITS[unit])
    except ValueError:
        raise ValueError(f"{text!r} is not a size; write e.g. '500m' or '2g'") from None
