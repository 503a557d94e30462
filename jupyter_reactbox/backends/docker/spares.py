"""A dev-server container made before its dependencies are in place.

Two ways the Docker backend makes a start fast, both its own (``DockerStart``):

* **The gate.**  A start makes its container while the dependencies install.
  The container's first process waits at its gate, a folder only the server
  writes (read-only inside), and becomes the dev server once ``open`` is there
  (``Spares.release``): nothing of the app's runs before the installed tree is
  checked.
* **The spare.**  One run container waits made ahead for no project
  (``spare_container_kwargs``), blocked on a pipe in its gate; a new preview
  moves its files into the spare's folder by renames (``take``) and the spare
  becomes its container (``adopt``).  The engine cannot change a container's
  labels, so a taken spare's project, link and spec are the server's record in
  that gate, never anything the container can write.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...frameworks import AppPlan
from ..base import Endpoint, Record, Start
from ..install import hand_over
from .specs import GATE, LABEL, PORT, run_script, spare_container_kwargs

if TYPE_CHECKING:
    from .backend import DockerBackend


@dataclass
class Spare:
    name: str
    slot: Path
    go: int
    """The server's end of the gate's pipe (open until the release; then -1)."""
    address: str


class Spares:
    """The gates of one Docker backend's dev servers, and its spare container."""

    SPARE_SUFFIX = ".spare"
    """A waiting spare's name ends so (no project id has a dot); a taken one has its
    project's run name."""

    def __init__(self, backend: DockerBackend):
        self.b = backend
        self.engine = backend.engine
        self.waiting: Spare | None = None
        """The spare the next new preview takes."""
        self.making: asyncio.Task | None = None
        self.closing = False
        self.claimed: dict[str, Spare] = {}
        """Spares taken by starts whose launch is still to come."""
        self.blocked: dict[str, Spare] = {}
        """Adopted spares still blocked on their pipe, by project."""

    async def forget_earlier(self, containers: list) -> list:
        """After a restart: the spares of an earlier run removed (with their slots),
        and ``containers`` without them."""
        live = self.waiting.name if self.waiting else None
        for container in [c for c in containers if c.name.endswith(self.SPARE_SUFFIX)]:
            if container.name == live:
                continue
            self.b.log.info("Removing container %s: a spare of an earlier run", container.name)
            await self.engine.remove(container.name)
            await asyncio.to_thread(shutil.rmtree, self.slot_of(container.name), True)
        return [c for c in containers if not c.name.endswith(self.SPARE_SUFFIX)]

    async def close(self) -> None:
        """No spare is made from now on; the waiting one and those taken by starts
        that never launched are removed."""
        self.closing = True
        if (making := self.making) is not None:
            making.cancel()  # and waited for: one the engine is making is removed
            await asyncio.wait([making], timeout=30)
        spares = [self.waiting, *self.claimed.values()]
        self.waiting, self.claimed = None, {}
        for spare in spares:
            if spare is not None:
                await self.drop(spare)

    # -- the gate ----------------------------------------------------------------

    def gate(self, project_id: str) -> Path:
        return Path(self.b.cache_dir, "gates", self.b.name_of(project_id, "run"))

    async def set_gate(self, project_id: str, *, open: bool) -> None:
        def set_gate() -> None:
            gate = self.gate(project_id)
            gate.mkdir(parents=True, exist_ok=True)
            gate.chmod(0o755)  # whatever the umask: the sandbox's user looks in it
            if open:
                (gate / "open").touch()
            else:
                (gate / "open").unlink(missing_ok=True)

        await asyncio.to_thread(set_gate)

    def still_held(self, container, project_id: str) -> bool:
        gated = any(m.get("Destination") == GATE for m in container.attrs.get("Mounts", []))
        return gated and not (self.gate(project_id) / "open").exists()

    async def release(self, project_id: str) -> None:
        await self.set_gate(project_id, open=True)
        spare = self.blocked.pop(project_id, None)
        if spare is not None and spare.go >= 0:  # a spare, blocked on its pipe
            try:
                os.write(spare.go, b"go\n")
            finally:
                os.close(spare.go)
                spare.go = -1

    # -- spares ------------------------------------------------------------------

    def _slots(self) -> Path:
        return Path(self.b.cache_dir, "slots")

    SPARE_SUFFIX = ".spare"
    """A waiting spare's name ends so (no project id has a dot); a taken one has its
    project's run name."""

    @property
    def _run_prefix(self) -> str:
        """What every run container's name of this owner's store starts with."""
        return self.b.name_of("", "run")

    def _spare_name(self, slot: str) -> str:
        return f"{self._run_prefix}{slot}{self.SPARE_SUFFIX}"

    def slot_of(self, spare_name: str) -> Path:
        """The folder of a waiting spare, from its name (``_spare_name``)."""
        slot = spare_name.removeprefix(self._run_prefix).removesuffix(self.SPARE_SUFFIX)
        return self._slots() / slot

    def project_of(self, name: str) -> str | None:
        """The project whose run container has this name (a leading '/' as the
        engine lists it is ignored); None for a waiting spare or another's."""
        prefix = self._run_prefix
        name = name.lstrip("/")
        if not name.startswith(prefix) or name.endswith(self.SPARE_SUFFIX):
            return None
        return name[len(prefix) :]

    def make_later(self, delay: float) -> None:
        """In ``delay`` seconds, the spare the next new preview takes (one at a time)."""
        if self.b.boxed or not self.b.spare_container or self.waiting or self.making:
            return
        if self.closing:
            return

        async def make() -> None:
            await asyncio.sleep(delay)
            try:
                self.waiting = await self._make()
            except Exception as exc:  # a start just makes its own container
                self.b.log.warning("Could not make a spare dev-server container: %s", exc)
            finally:
                self.making = None

        self.making = asyncio.create_task(make())

    async def _make(self) -> Spare:
        await self.b.ensure_previews_network()
        name = self._spare_name(secrets.token_hex(4))
        slot = self.slot_of(name)

        def prepare() -> int:
            try:
                (slot / "app").mkdir(parents=True)
                (slot / "gate").mkdir()
                (slot / "gate").chmod(0o755)
                os.mkfifo(slot / "gate" / "go")
                (slot / "gate" / "go").chmod(0o644)  # the sandbox's user reads it
                hand_over(slot / "app", self.b.tree_owner)
                # Open here first: the container's read then never waits for a writer.
                return os.open(slot / "gate" / "go", os.O_RDWR | os.O_NONBLOCK)
            except OSError:
                shutil.rmtree(slot, ignore_errors=True)
                raise

        go = await asyncio.to_thread(prepare)
        try:
            kwargs = spare_container_kwargs(
                image=self.b.image,
                owner=self.b.owner,
                store=self.b.store,
                name=name,
                slot=slot,
                user=self.b.user,
                network=self.b.network,
                limits=self.b.run_limits,
                runtime=self.b.runtime or None,
            )
            container = await self.engine.create(**kwargs)
            return Spare(name, slot, go, self.b.address(container))
        except BaseException:
            os.close(go)
            await self.engine.remove(name)
            await asyncio.to_thread(shutil.rmtree, slot, True)
            raise

    async def take(self, project_id: str, app_dir: Path) -> None:
        """Before a start's install: move the project's files into the spare's folder
        (which becomes ``app_dir``), so ``launch`` takes the spare, not a new one."""
        if (given := self.claimed.pop(project_id, None)) is not None:
            await self.drop(given)  # to a start cancelled before its launch
        spare, self.waiting = self.waiting, None
        if spare is None:
            return
        try:
            await asyncio.to_thread(_move_in, app_dir, spare.slot / "app")
        except OSError as exc:
            self.b.log.warning("Could not give %s the spare container: %s", project_id, exc)
            if exc.errno == errno.EXDEV:  # cache_dir and projects_dir: never one filesystem
                self.b.spare_container = False
            await self.drop(spare)
            return
        self.claimed[project_id] = spare

    async def abandon(self, spare: Spare, project_id: str) -> None:
        """Undo a spare's taking that did not finish: nothing of it is left."""
        self.blocked.pop(project_id, None)
        await self.drop(spare)
        await self.engine.remove(self.b.name_of(project_id, "run"))
        await asyncio.to_thread(_remove_gate, self.gate(project_id))

    async def drop(self, spare: Spare) -> None:
        if spare.go >= 0:
            os.close(spare.go)
            spare.go = -1
        await self.engine.remove(spare.name)
        await asyncio.to_thread(shutil.rmtree, spare.slot, True)

    async def adopt(
        self,
        spare: Spare,
        project_id: str,
        app_dir: Path,
        plan: AppPlan,
        base: str,
        token: str,
        held: bool,
    ) -> Endpoint:
        name = self.b.name_of(project_id, "run")
        await self.engine.remove(name)
        gate = self.gate(project_id)
        spec = self.b.spec_of(project_id, app_dir, plan)
        record = {"project": project_id, "framework": plan.framework, "token": token,
                  "base": base, "spec": spec}  # fmt: skip

        def write() -> None:
            _remove_gate(gate)
            gate.parent.mkdir(parents=True, exist_ok=True)
            (spare.slot / "gate" / "run").write_text(run_script(plan, base))
            (spare.slot / "gate" / "run").chmod(0o644)
            (spare.slot / "gate" / "record.json").write_text(json.dumps(record))
            os.symlink(spare.slot / "gate", gate)

        await asyncio.to_thread(write)
        container = await self.engine.client_call("containers.get", spare.name)
        await self.engine.call(container.rename, name)
        self.blocked[project_id] = spare
        self.b.log.info("Started dev server of %s in the spare %s", project_id, container.id[:7])
        if not held:
            await self.release(project_id)
        return Endpoint(spare.address, PORT)

    def labels(self, container) -> dict[str, str]:
        """A container's labels; a taken spare's (made before its project) with what
        the server wrote in its gate when it gave it to the project."""
        lab = container.labels
        project_id = self.project_of(container.name)
        if lab.get(f"{LABEL}.role") != "spare" or project_id is None:
            return lab
        lab = dict(lab)
        with contextlib.suppress(OSError, ValueError):
            record = json.loads((self.gate(project_id) / "record.json").read_text())
            lab.update({f"{LABEL}.{k}": str(v) for k, v in record.items()})
            lab.update({f"{LABEL}.port": str(PORT), f"{LABEL}.role": "run"})
        return lab


class DockerStart(Start):
    """A start that makes the dev server's container while the dependencies install
    (in the waiting spare, if there is one), held at its gate until ``ready``.  A
    kept container is resumed at ``ready`` instead."""

    backend: DockerBackend
    _ahead: asyncio.Task | None = None
    _link: tuple[str, str] = ("", "")

    async def __aenter__(self) -> DockerStart:
        backend, project_id = self.backend, self.project_id
        if self.fresh:
            await backend.discard(project_id)
        elif await backend.kept(project_id):
            return self  # resumed once its dependencies are in place
        self._link = token, base = self.link()
        await backend.spares.take(project_id, self.app_dir)
        self._ahead = asyncio.create_task(
            backend.launch(project_id, self.app_dir, self.plan, base=base, token=token, held=True)
        )
        return self

    async def launched(self) -> Endpoint:
        """Where the container made ahead listens (its dev server still held)."""
        assert self._ahead is not None, "nothing was made ahead: the start resumes"
        return await asyncio.shield(self._ahead)

    async def ready(self) -> Record:
        if self._ahead is None:
            return await super().ready()
        endpoint = await self.launched()
        await self.backend.spares.release(self.project_id)
        token, base = self._link
        return Record(self.project_id, self.plan.framework, token, base, endpoint)

    async def __aexit__(self, kind: object, *exc: object) -> None:
        """A start that failed or was stopped: what was made ahead is finished or
        cancelled (a cancelled launch removes what it made), so that what comes next
        (a discard, a stop) finds all of it."""
        ahead = self._ahead
        if kind is None or ahead is None:
            return
        ahead.cancel()
        await asyncio.wait([ahead])
        if not ahead.cancelled():
            ahead.exception()  # retrieved: it failed with the start, which says why


def _move_in(app_dir: Path, slot_app: Path) -> None:
    """Make ``slot_app`` (a spare's empty folder) the project's ``app_dir``: its
    entries moved in by renames, then the folder renamed; a link is left where the
    spare's folder was, which the engine mounts again when the container restarts.
    OSError, with the project's folder as it was, if that cannot be done (another
    filesystem)."""
    app_dir = Path(os.path.abspath(app_dir))
    if os.stat(app_dir).st_dev != os.stat(slot_app).st_dev:
        raise OSError(errno.EXDEV, "the spare's folder is on another filesystem")
    moved: list[str] = []
    try:
        for entry in os.listdir(app_dir):
            os.rename(app_dir / entry, slot_app / entry)
            moved.append(entry)
        old = app_dir.with_name(f".{app_dir.name}-old-{secrets.token_hex(4)}")
        os.rename(app_dir, old)
    except OSError:
        for entry in moved:
            os.rename(slot_app / entry, app_dir / entry)
        raise
    try:
        os.rename(slot_app, app_dir)
    except OSError:
        os.rename(old, app_dir)
        for entry in moved:
            os.rename(slot_app / entry, app_dir / entry)
        raise
    os.symlink(app_dir, slot_app)
    for entry in os.listdir(old):  # written meanwhile (a window of a few renames)
        with contextlib.suppress(OSError):
            os.rename(old / entry, app_dir / entry)
    shutil.rmtree(old, ignore_errors=True)


def _remove_gate(gate: Path) -> None:
    """A gate folder, or a taken spare's link to its slot (and the slot)."""
    if gate.is_symlink():
        slot = Path(os.readlink(gate)).parent
        gate.unlink()
        shutil.rmtree(slot, ignore_errors=True)
    else:
        shutil.rmtree(gate, ignore_errors=True)
