"""The spare container: a dev server's container made before its project exists,
which the next new preview takes instead of waiting for the engine to make one.
A real engine, a real Jupyter server, real HTTP through the preview proxy."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
from conftest import FIXTURES, app_of, chromium, engine_name, remove_owned, zip_dir
from tornado.httpclient import AsyncHTTPClient

from jupyter_reactbox.backends.docker import LABEL, DockerBackend

pytestmark = pytest.mark.docker


async def spare_of(docker_client, owner: str, timeout: float = 60):
    """The owner's spare container, once it is made and waits."""
    selector = {"label": [f"{LABEL}.owner={owner}", f"{LABEL}.role=spare"]}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = [
            c for c in docker_client.containers.list(filters=selector) if c.name.endswith(".spare")
        ]
        if waiting:
            return waiting[0]
        await asyncio.sleep(0.2)
    raise AssertionError("no spare container was made")


async def page(server_url: str, preview_url: str) -> str:
    r = await AsyncHTTPClient().fetch(
        server_url + preview_url, headers={"Accept": "text/html"}, request_timeout=30
    )
    return r.body.decode()


async def test_a_new_preview_takes_the_spare_and_keeps_it_as_its_own(
    api, jp_fetch, runtime, docker_client, owner, projects_dir, server_url,
    monkeypatch,
):  # fmt: skip
    monkeypatch.setattr(DockerBackend, "SPARE_CONTAINER_DELAY", 0.1)
    await api.upload_running(name="first")  # no spare yet: it makes its own, then one
    spare = await spare_of(docker_client, owner)
    # Waiting, it runs nothing of any app, and uses no CPU: it blocks on a pipe.
    top = spare.top(ps_args="-o pid,stat,args")["Processes"]
    assert not any("node" in " ".join(p) for p in top), top
    assert spare.stats(stream=False)["cpu_stats"]["cpu_usage"]["total_usage"] < 2e8

    second = await api.upload_running(name="second")
    container = docker_client.containers.get(engine_name(owner, projects_dir, "second"))
    assert container.id == spare.id  # the spare, under the project's name
    assert '<div id="root">' in await page(server_url, second["preview_url"])
    app_dir = app_of(projects_dir, "second")
    assert (app_dir / "src" / "App.jsx").is_file()
    slot = runtime.backend.spares._slots() / spare.name.removeprefix(
        engine_name(owner, projects_dir) + "-"
    )
    slot = slot.with_suffix("")
    assert os.readlink(slot / "app") == str(app_dir)

    # What the dev server runs was written by the server, where the sandbox cannot.
    script = (slot / "gate" / "run").read_text()
    assert "vite-serve.mjs" in script and second["preview_url"].split("/")[-2] in script
    code, _ = container.exec_run(["sh", "-c", "echo 'exit 9' >> /opt/reactbox/gate/run"])
    assert code != 0 and (slot / "gate" / "run").read_text() == script
    mounts = container.exec_run(["cat", "/proc/mounts"]).output.decode()
    [gate] = [line for line in mounts.splitlines() if " /opt/reactbox/gate " in line]
    assert " ro," in gate
    edited = container.exec_run(["sh", "-c", "echo '// hi' >> /project/src/App.jsx"])
    assert edited.exit_code == 0 and (app_dir / "src" / "App.jsx").read_text().endswith("// hi\n")

    # Stopped and started again: the same container, link and files.
    await jp_fetch("reactbox", "api", "projects", "second", "stop", method="POST", body=b"")
    await api.wait("second", "stopped")
    await jp_fetch("reactbox", "api", "projects", "second", "start", method="POST", body=b"")
    again = await api.wait("second")
    assert again["preview_url"] == second["preview_url"]
    assert docker_client.containers.get(engine_name(owner, projects_dir, "second")).id == spare.id
    assert '<div id="root">' in await page(server_url, again["preview_url"])
    assert runtime.backend.spares.labels(container)[f"{LABEL}.project"] == "second"

    # Deleted: its container and the spare's folder go with it.
    await jp_fetch("reactbox", "api", "projects", "second", method="DELETE")
    assert engine_name(owner, projects_dir, "second") not in {
        c.name for c in docker_client.containers.list(all=True)
    }
    assert not slot.exists()


@pytest.fixture
def reactbox_config(tmp_path):
    # Spares are renamed into a project: the way of projects that are plain folders
    # (a project with a filesystem of its own gets copies, see test_boxes).
    return {"cache_dir": str(tmp_path / "own-cache"), "disk_limits": "check"}


async def test_a_restarted_server_removes_its_old_spare_and_keeps_taken_ones(
    api,
    runtime,
    docker_client,
    owner,
    monkeypatch,
    projects_dir,
):
    monkeypatch.setattr(DockerBackend, "SPARE_CONTAINER_DELAY", 0.1)
    await api.upload_running(name="first")
    await spare_of(docker_client, owner)
    await api.upload_running(name="second")  # takes it
    old = await spare_of(docker_client, owner)  # and the next one is made
    if (making := runtime.backend.spares.making) is not None:
        await making  # listed by the engine before the backend holds it

    # A new server process knows no spare: it finds this one, and the taken one.
    forgotten, runtime.backend.spares.waiting = runtime.backend.spares.waiting, None
    os.close(forgotten.go)
    forgotten.go = -1
    records = await runtime.backend.recover({"first", "second"})
    assert sorted(r.project_id for r in records) == ["first", "second"]
    taken = next(r for r in records if r.project_id == "second")
    assert taken.token and taken.endpoint is not None
    names = {c.name for c in docker_client.containers.list(all=True)}
    assert old.name not in names and engine_name(owner, projects_dir, "second") in names
    assert await runtime.backend.running() >= {"first", "second"}
    assert json.loads((runtime.backend.spares.gate("second") / "record.json").read_text())[
        "project"
    ] == ("second")


async def test_a_server_shut_down_while_it_makes_a_spare_leaves_none(
    runtime, docker_client, tmp_path
):
    """A spare is made a second after a start is over, so a shutdown often finds one
    the engine is still making: it must not be left behind, created or running."""
    owner = f"{runtime.backend.owner}-x"
    selector = {"label": f"{LABEL}.owner={owner}"}
    slots = tmp_path / "cache" / "slots"
    waited = []
    try:
        for delay in (0.0, 0.1, 0.2, 0.3, 0.5, 0.8):
            backend = DockerBackend(
                owner=owner, cache_dir=str(tmp_path / "cache"), image=runtime.backend.image
            )
            backend.spares.make_later(0)
            await asyncio.sleep(delay)
            waited.append(backend.spares.waiting is not None)
            await backend.close()
            left = docker_client.containers.list(all=True, filters=selector)
            assert [c.name for c in left] == [], f"closed after {delay} s"
            assert not slots.exists() or not any(slots.iterdir())
    finally:
        remove_owned(docker_client, owner)
    assert not all(waited), "every spare was made before the close: nothing was tested"


def large_app(widgets: int) -> bytes:
    """The fixture with ``widgets`` generated components: a first load of hundreds of
    modules, as a real dashboard has."""
    extra, imports, uses = {}, [], []
    for i in range(widgets):
        name = f"Widget{i:03d}"
        extra[f"src/widgets/{name}.jsx"] = (
            f"export default function {name}() {{\n"
            f'  return <div data-widget="{i}">{name}</div>\n}}\n'
        ).encode()
        imports.append(f"import {name} from './widgets/{name}.jsx'")
        uses.append(f"      <{name} />")
    extra["src/App.jsx"] = (
        "\n".join(imports)
        + "\n\nexport default function App() {\n  return (\n    <main>\n"
        + "\n".join(uses)
        + "\n    </main>\n  )\n}\n"
    ).encode()
    return zip_dir(FIXTURES / "vite-react", extra=extra)


async def test_a_first_page_load_right_after_running_loses_nothing_with_ipv6_on(
    api, server_url, docker_client, owner
):
    """A browser on the engine's host drops every request in flight when a host
    interface changes (a container starts; its interface gets an IPv6 address a
    moment later).  The spare container for the next preview is such a change: it
    is made once the previews are quiet, not while a first page loads."""
    from conftest import IPV6_DEFAULT

    before = IPV6_DEFAULT.read_text()
    IPV6_DEFAULT.write_text("0")  # as on a desktop: new interfaces get IPv6
    try:
        await api.upload(large_app(400), "big")
        info = await api.wait("big")
        async with chromium() as browser:
            page = await browser.new_page()
            failed: list[str] = []
            page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
            asked = time.time()
            await page.goto(server_url + info["preview_url"])
            await page.wait_for_selector('[data-widget="399"]', timeout=120_000)
            loaded = time.time()
            assert failed == []
            spare = await spare_of(docker_client, owner)
        # Made before the page was asked for (a slow browser), or after it loaded:
        # never while its requests were in flight.
        made = spare.attrs["Created"]
        when = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))  # noqa: E731
        assert not when(asked) <= made <= when(loaded + 1), (made, when(asked), when(loaded))
    finally:
        IPV6_DEFAULT.write_text(before)
