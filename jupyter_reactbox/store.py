"""Projects on disk.

    <root>/
      <project-id>/
        project.json    metadata (name, framework, created)
        app/            the app's files: the only folder a sandbox can write to,
                        so nothing in it is trusted (see ``worktree``)
        history.git/    its history, a bare git repository only the server
                        writes (see ``history``)
        install.log     output of the last dependency install
      .incoming-*/      uploads being checked; renamed into place when good

An import is atomic: it is extracted and committed in ``.incoming-*`` and then
renamed to ``<project-id>``, so a rejected upload leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import archive, history, supply
from .errors import InvalidName, ProjectExists, ProjectNotFound
from .frameworks import AppPlan, detect, runnable

ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")


def slugify(name: str) -> str:
    """A project id from a free-form name: lowercase letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-")
    return slug


@dataclass
class Project:
    id: str
    name: str
    framework: str
    package_manager: str
    created: float
    path: Path

    @property
    def app_dir(self) -> Path:
        return self.path / "app"

    @property
    def install_log(self) -> Path:
        return self.path / "install.log"

    def plan(self) -> AppPlan:
        return detect(self.app_dir)

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
    ):
        self.root = Path(root)
        self.limits = limits or archive.Limits()
        self.supply_policy = supply_policy or supply.Policy()
        self.root.mkdir(parents=True, exist_ok=True)

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

    def import_zip(self, data: bytes, name: str, path: str | None = None) -> Project:
        """Check, extract and commit an uploaded ZIP as the new project ``name``;
        ``path`` names the app's folder in the ZIP when it holds several apps."""
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
            archive.extract(data, staging / "app", self.limits, path=path, runnable=runnable)
            plan = detect(staging / "app")
            supply.check(staging / "app", self.supply_policy)
            project = Project(
                id=project_id,
                name=name,
                framework=plan.framework,
                package_manager=plan.package_manager,
                created=time.time(),
                path=final,
            )
            history.create(staging / "app")
            (staging / "project.json").write_text(json.dumps(project.to_json(), indent=1))
            try:
                os.rename(staging, final)  # atomic; fails if a twin upload won the race
            except OSError as exc:
                raise ProjectExists(f"A project named {project_id!r} exists already.") from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return project

    def delete(self, project_id: str) -> None:
        path = self._dir(project_id)
        if not path.exists():
            raise ProjectNotFound(f"No project {project_id!r}.")
        # Rename first so a half-deleted folder never looks like a project.
        doomed = Path(tempfile.mkdtemp(prefix=".deleting-", dir=self.root))
        os.rename(path, doomed / project_id)
        shutil.rmtree(doomed, ignore_errors=True)

    def cleanup_staging(self) -> None:
        """Remove what an interrupted import, delete, install or migration left behind."""
        for child in self.root.iterdir():
            if child.name.startswith((".incoming-", ".deleting-")):
                shutil.rmtree(child, ignore_errors=True)
            elif not child.name.startswith(".") and child.is_dir():
                for debris in child.glob(".*-*"):
                    if debris.name.startswith((".install-", ".modules-", ".history-")):
                        shutil.rmtree(debris, ignore_errors=True)


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


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
