"""The preview state machine with no engine: a fake backend (real little HTTP
servers that answer 200) and an injected clock, so idle culling, crash backoff,
max_running and recovery run in milliseconds.  The project JSON is checked here
against its one definition (jupyter_reactbox/schema.py), and so are the readers
of it: the kernel's client and the JupyterLab extension."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from conftest import FIXTURES, zip_dir
from fakes import Clock, FakeBackend

from jupyter_reactbox import schema
from jupyter_reactbox.backends.base import Backend
from jupyter_reactbox.errors import QuotaExceeded, TooManyPreviews
from jupyter_reactbox.runtime import Runtime
from jupyter_reactbox.schema import ProjectInfo
from jupyter_reactbox.spaces import Space, SpacePerUser
from jupyter_reactbox.store import ProjectStore

ROOT = Path(__file__).parent.parent


@pytest.fixture
def store(tmp_path):
    store = ProjectStore(tmp_path / "projects")
    for name in ("shop", "blog"):
        store.import_zip(zip_dir(FIXTURES / "vite-react"), name)
    return store


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def backend(tmp_path):
    return FakeBackend(owner="alice", cache_dir=str(tmp_path / "cache"))


def make_runtime(store, backend, clock, **settings) -> Runtime:
    return Runtime(store, backend, base_url="/base/", clock=clock, **settings)


async def started(runtime: Runtime, project_id: str) -> dict:
    runtime.start(runtime.store.get(project_id))
    await runtime.previews.until_settled(project_id, 10)
    return runtime.info(runtime.store.get(project_id))


async def test_the_project_json_is_the_schema(store, backend, clock):
    runtime = make_runtime(store, backend, clock)
    info = await started(runtime, "shop")
    assert info["status"] == "running", info
    assert set(info) == set(typing.get_type_hints(ProjectInfo))
    assert info["preview_url"].startswith("/base/reactbox/preview/shop/")
    assert (info["backend"], info["sandboxed"]) == ("fake", True)


def test_the_lab_extension_and_the_kernel_client_read_only_the_schema():
    generated = ROOT / "labextension" / "src" / "schema.ts"
    assert generated.read_text() == schema.typescript(), (
        "labextension/src/schema.ts is not what jupyter_reactbox/schema.py generates: "
        "python -m jupyter_reactbox.schema > labextension/src/schema.ts"
    )
    api_ts = (ROOT / "labextension" / "src" / "api.ts").read_text()
    assert "export * from './schema';" in api_ts
    assert not re.search(r"export interface (ProjectInfo|EditResult|EditEvent)\b", api_ts)
    client = (ROOT / "jupyter_reactbox" / "kernel" / "client.py").read_text()
    read = set(re.findall(r"self\.info(?:\.get\(|\[)\"(\w+)\"", client))
    assert read and read <= set(typing.get_type_hints(ProjectInfo)), read
    from_json = client[client.index("class EditResult") :].split("    def cost", 1)[0]
    read = set(re.findall(r"data(?:\.get\(|\[)\"(\w+)\"", from_json))
    assert read and read <= set(typing.get_type_hints(schema.EditResult)), read


def test_typescript_of_the_schema_says_what_python_says():
    ts = schema.typescript()
    assert "export type Status = 'installing' | 'starting' | 'running'" in ts
    assert "  framework: string;\n" in ts  # as the server sends it: never null
    assert "  selection: Selection | null;\n" in ts
    assert "  source?: string;\n" in ts and "  kind: string;\n" in ts  # PageError
    assert "  daily_limit?: number | null;\n" in ts
    assert "  stage: EditStage;\n" in ts and "  position?: number;\n" in ts
    assert "  asking: 'Asking the model',\n" in ts
    # Every type a generated one names is generated too.
    named = set(re.findall(r": ([A-Z]\w+)(?:\[\]| \||;)", ts))
    declared = set(re.findall(r"export (?:interface|type) (\w+)", ts))
    assert named <= declared, named - declared


async def test_an_idle_preview_stops_and_starts_again_at_its_link(store, backend, clock):
    runtime = make_runtime(store, backend, clock, idle_timeout=60)
    first = await started(runtime, "shop")
    clock.advance(59)
    await runtime.watcher.check()
    assert runtime.state("shop").status == "running"
    clock.advance(1)
    await runtime.watcher.check()
    st = runtime.state("shop")
    assert st.status == "stopped" and "without use" in st.detail
    assert runtime.previews.url("shop") == first["preview_url"]  # the link stays
    again = await started(runtime, "shop")
    assert again["status"] == "running" and again["preview_url"] == first["preview_url"]


async def test_an_unused_preview_is_frozen_first_then_stopped(store, backend, clock):
    runtime = make_runtime(store, backend, clock, freeze_timeout=30, idle_timeout=600)
    await started(runtime, "shop")
    assert runtime.watcher.tick == 3 and runtime.watcher.beat_ms == 10_000
    clock.advance(29)
    await runtime.watcher.check()
    assert not runtime.state("shop").frozen
    clock.advance(1)
    await runtime.watcher.check()
    st = runtime.state("shop")
    assert st.status == "running" and st.frozen and ("freeze", "shop") in backend.calls
    assert runtime.info(store.get("shop"))["frozen"] is True

    # An API action (or any request of the proxy) wakes it; a wake-up by the app's
    # own requests is not use, but it stays awake another freeze_timeout.
    await runtime.use("shop")
    assert not st.frozen and backend.calls[-1] == ("thaw", "shop")
    await runtime.thaw("shop")  # thawing a thawed preview asks the backend nothing
    assert backend.calls.count(("thaw", "shop")) == 1
    clock.advance(29)
    await runtime.watcher.check()
    assert not st.frozen
    clock.advance(1)
    await runtime.watcher.check()
    assert st.frozen

    # Frozen all the way to the idle timeout: then stopped, and no longer frozen.
    clock.advance(600)
    await runtime.watcher.check()
    assert st.status == "stopped" and not st.frozen and "without use" in st.detail


async def test_a_backend_that_cannot_freeze_keeps_the_preview_running(store, tmp_path, clock):
    class Unfreezable(FakeBackend):
        freeze = Backend.freeze

    backend = Unfreezable(owner="alice", cache_dir=str(tmp_path / "cache"))
    runtime = make_runtime(store, backend, clock, freeze_timeout=30, idle_timeout=600)
    await started(runtime, "shop")
    clock.advance(60)
    await runtime.watcher.check()
    st = runtime.state("shop")
    assert st.status == "running" and not st.frozen


async def test_a_busy_preview_is_not_culled(store, backend, clock):
    runtime = make_runtime(store, backend, clock, idle_timeout=60, busy=lambda p: p == "shop")
    await started(runtime, "shop")
    clock.advance(600)
    await runtime.watcher.check()
    assert runtime.state("shop").status == "running"


async def test_a_crashed_dev_server_is_restarted_with_backoff_then_given_up(store, backend, clock):
    runtime = make_runtime(store, backend, clock, idle_timeout=0, max_restarts=2)
    first = await started(runtime, "shop")
    for restart, delay in ((1, 1), (2, 2)):
        backend.crash("shop", code=137)
        await runtime.watcher.check()
        st = runtime.state("shop")
        assert st.status == "failed" and "exited with code 137" in st.error
        assert st.detail.startswith(f"restarting in {delay} s (restart {restart} of 2)")
        clock.advance(delay - 0.5)
        await runtime.watcher.check()
        assert runtime.state("shop").status == "failed"  # not yet
        clock.advance(0.5)
        await runtime.watcher.check()
        await runtime.previews.until_settled("shop", 10)
        assert runtime.state("shop").status == "running"
        assert runtime.previews.url("shop") == first["preview_url"]
    backend.crash("shop")
    await runtime.watcher.check()
    st = runtime.state("shop")
    assert st.status == "failed" and "gave up after 2 restarts" in st.detail
    clock.advance(3600)
    await runtime.watcher.check()
    assert runtime.state("shop").status == "failed"


async def test_a_restart_count_resets_once_it_has_run_a_while(store, backend, clock):
    runtime = make_runtime(store, backend, clock, idle_timeout=0, max_restarts=1)
    await started(runtime, "shop")
    backend.crash("shop")
    await runtime.watcher.check()
    clock.advance(1)
    await runtime.watcher.check()
    await runtime.previews.until_settled("shop", 10)
    assert runtime.state("shop").restarts == 1
    clock.advance(61)  # stable for more than a minute
    await runtime.watcher.check()
    assert runtime.state("shop").restarts == 0


async def test_max_running_stops_the_least_recently_used(store, backend, clock):
    runtime = make_runtime(store, backend, clock, idle_timeout=0, max_running=1)
    await started(runtime, "shop")
    clock.advance(5)
    info = await started(runtime, "blog")
    assert info["status"] == "running"
    st = runtime.state("shop")
    assert st.status == "stopped" and "to make room for blog" in st.detail
    assert await backend.running() == {"blog"}


async def test_max_running_answers_429_when_none_can_stop(store, backend, clock):
    runtime = make_runtime(store, backend, clock, max_running=1, busy=lambda p: True)
    await started(runtime, "shop")
    with pytest.raises(TooManyPreviews) as err:
        runtime.start(store.get("blog"))
    assert err.value.status == 429 and "c.Runtime.max_running" in str(err.value)


async def test_a_restarted_server_finds_its_previews_in_the_backend(store, backend, clock):
    before = make_runtime(store, backend, clock, idle_timeout=0)
    shop = await started(before, "shop")
    blog = await started(before, "blog")
    await before.stop("blog")
    store.delete("blog")
    backend.kept["ghost"] = ("vite", "t", "/base/reactbox/preview/ghost/t/")  # project gone

    after = make_runtime(store, backend, clock, idle_timeout=0)
    await after.recover()
    try:
        assert after.state("shop").status == "running"
        assert after.previews.url("shop") == shop["preview_url"]
        assert after.previews.authorize("shop", shop["preview_url"].split("/")[-2]) is not None
        assert "ghost" not in backend.kept and "blog" not in backend.kept
        assert blog["id"] not in {p.id for p in store.list()}
    finally:
        await after.close()


async def test_the_hub_wide_cap_refuses_a_start_and_stops_no_one_elses(tmp_path, clock):
    """The hub service's spaces share ``max_running_total``: Bob's start beyond it is a
    429 (Alice's previews keep running), and it goes through once one stops."""

    def make(name: str) -> Space:
        store = ProjectStore(tmp_path / name / "projects")
        for project in ("shop", "blog"):
            store.import_zip(zip_dir(FIXTURES / "vite-react"), project)
        backend = FakeBackend(owner=name, cache_dir=str(tmp_path / name / "cache"))
        return Space(name, make_runtime(store, backend, clock, max_running=5), None)

    spaces = SpacePerUser(make, max_running_total=2)
    alice, bob = await spaces.for_user("alice"), await spaces.for_user("bob")
    try:
        for project in ("shop", "blog"):
            assert (await started(alice.runtime, project))["status"] == "running"
        with pytest.raises(TooManyPreviews, match="All 2 previews"):
            bob.runtime.start(bob.runtime.store.get("shop"))
        assert [p.status for _, p in alice.runtime.previews.items()] == ["running"] * 2
        await alice.runtime.stop("blog")
        assert (await started(bob.runtime, "shop"))["status"] == "running"
    finally:
        await spaces.close()


async def test_a_users_projects_together_are_held_to_their_disk_quota(tmp_path, clock):
    """The hub service's per-user quota: an upload that would pass it is refused, and
    a preview whose owner is over it does not start (and says why)."""

    def make(name: str) -> Space:
        store = ProjectStore(tmp_path / name / "projects")
        store.import_zip(zip_dir(FIXTURES / "vite-react"), "shop")
        backend = FakeBackend(owner=name, cache_dir=str(tmp_path / name / "cache"))
        return Space(name, make_runtime(store, backend, clock), None, disk_quota=4 << 20)

    spaces = SpacePerUser(make)
    alice = await spaces.for_user("alice")
    try:
        await alice.check_room(1 << 20)  # room for a 1 MiB upload
        with pytest.raises(QuotaExceeded, match=r"needs 8\.0 MiB more; you may use 4\.0 MiB"):
            await alice.check_room(8 << 20)
        assert (await started(alice.runtime, "shop"))["status"] == "running"
        await alice.runtime.stop("shop")
        store = alice.runtime.store
        (store.get("shop").app_dir / "public" / "video.bin").write_bytes(b"\1" * (5 << 20))
        info = await started(alice.runtime, "shop")
        assert info["status"] == "failed" and "you may use 4.0 MiB in all" in info["error"], info
    finally:
        await spaces.close()
