"""The preview proxy answers modules again from memory (response_cache.py): only
while the dev server says nothing changed, and never older than the dev server
itself serves them.  A real Vite in Docker; a hostile dev server is a real HTTP
server that lies on the generation stream."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web
from conftest import FIXTURES, app_of, engine_name, zip_dir
from tornado.httpclient import AsyncHTTPClient
from tornado.simple_httpclient import HTTPTimeoutError

from jupyter_reactbox.backends.docker import PORT
from jupyter_reactbox.response_cache import (
    GENERATION_PATH,
    Cached,
    ResponseCache,
    parse_generation,
)
from jupyter_reactbox.runtime import pooled_session


async def fetch(url, **kw):
    return await AsyncHTTPClient().fetch(url, raise_error=False, **kw)


async def until(predicate, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


@pytest.mark.docker
async def test_modules_come_from_memory_and_never_older_than_from_the_dev_server(
    api, server_url, runtime, docker_client, owner, projects_dir
):
    info = await api.upload_running()
    preview = server_url + info["preview_url"]
    module = preview + "src/App.jsx"
    box = docker_client.containers.get(engine_name(owner, projects_dir, "shop"))
    ip = box.attrs["NetworkSettings"]["Networks"][engine_name(owner, projects_dir, "previews")][
        "IPAddress"
    ]
    direct = f"http://{ip}:{PORT}{info['preview_url']}"

    first = await fetch(module)
    assert first.code == 200 and b"Get started" in first.body
    assert "X-Reactbox-Generation" not in first.headers  # the dev server's, not passed on
    cache = runtime.previews["shop"].responses
    await until(lambda: cache.live, what="the proxy follows the dev server's generations")

    # With the dev server frozen behind the runtime's back, the module it served
    # still comes, byte for byte, with the preview's own headers; one it has not
    # served does not.
    box.pause()
    try:
        again = await fetch(module, request_timeout=10)
        assert again.code == 200 and again.body == first.body
        assert again.headers["Content-Security-Policy"] == first.headers["Content-Security-Policy"]
        assert again.headers["ETag"] == first.headers["ETag"]
        # A browser that has it (a preview at its own origin) revalidates: 304.
        revalidated = await fetch(module, headers={"If-None-Match": first.headers["ETag"]})
        assert revalidated.code == 304 and revalidated.body == b""
        with pytest.raises(HTTPTimeoutError):  # it waits for the paused dev server
            await fetch(preview + "src/main.jsx", request_timeout=2)
    finally:
        box.unpause()

    # A change no host-side program hears of (written straight to the work tree):
    # from the moment the dev server serves the new module, so does the proxy.
    app_jsx = app_of(projects_dir, "shop") / "src" / "App.jsx"
    for before, after in (("Get started", "Changed once"), ("Changed once", "Changed twice")):
        assert before.encode() in (await fetch(module)).body
        await asyncio.sleep(1)  # Vite's watcher can miss a write moments after another
        app_jsx.write_text(app_jsx.read_text().replace(before, after))
        deadline = time.monotonic() + 15
        while after.encode() not in (seen := await fetch(direct + "src/App.jsx")).body:
            assert time.monotonic() < deadline, f"the dev server did not see it: {seen.body!r}"
        proxied = await fetch(module)
        assert after.encode() in proxied.body and before.encode() not in proxied.body

    # A page load always asks the dev server, and the page is not kept.
    page = await fetch(preview)
    assert page.code == 200 and b"jupyter-reactbox preview shim" in page.body
    kept = [url for url, _, _ in cache._entries]
    assert any(url.endswith("/src/App.jsx") for url in kept)
    assert not any(url.endswith(info["preview_url"]) for url in kept)

    # Stopped, its memory goes with it.
    await runtime.stop("shop")
    assert runtime.previews["shop"].responses is None and len(cache) == 0
    assert not cache.live


SLOW_TO_HEAR = """import react from '@vitejs/plugin-react'
import { defineConfig } from 'vite'

// Does its work on each change before Vite goes on, as route generators do.
const slowToHear = {
  name: 'slow-to-hear',
  async watchChange() {
    await new Promise((resolve) => setTimeout(resolve, 1500))
  },
}

// Without HMR (as some apps configure it), no message to the pages follows a change.
export default defineConfig({ plugins: [react(), slowToHear], server: { hmr: false } })
"""


@pytest.mark.docker
async def test_what_vite_serves_while_its_plugins_hear_of_a_change_is_not_kept(
    api, server_url, jp_fetch
):
    """Vite forgets a changed module only once every plugin's watchChange hook has
    answered (a route generator does its work there): what it serves meanwhile is
    the old module, under the generation the watcher's event counted.  The proxy
    may replay it only until Vite has forgotten it, never for good."""
    r = await api.upload(
        zip_dir(FIXTURES / "vite-react", extra={"vite.config.js": SLOW_TO_HEAR.encode()}), "shop"
    )
    info = await api.wait(json.loads(r.body)["id"])
    module = server_url + info["preview_url"] + "src/App.jsx"
    file = ("reactbox", "api", "projects", "shop", "files", "src/App.jsx")
    original = (await jp_fetch(*file)).body.decode()
    assert b"Get started" in (await fetch(module)).body

    for n in range(2):
        await jp_fetch(*file, method="PUT", body=original.replace("Get started", f"Change {n}"))
        deadline = time.monotonic() + 15
        while f"Change {n}".encode() not in (await fetch(module)).body:  # asked all along
            assert time.monotonic() < deadline, f"change {n} never served"
            await asyncio.sleep(0.05)


@pytest.mark.docker
async def test_the_short_way_gives_what_the_handler_gives_and_only_what_it_is_sure_of(
    api, server_url, runtime, jp_serverapp, jp_http_port
):
    """A kept module is answered while its request is read (proxy.KeptAnswers),
    byte for byte and header for header as PreviewProxyHandler answers it; every
    request it is not sure of goes the whole way, and gets the handler's answer."""
    info = await api.upload_running()
    preview = server_url + info["preview_url"]
    module = preview + "src/App.jsx"
    kept = jp_serverapp.web_app.settings["reactbox_kept_answers"]
    first = await fetch(module)
    assert first.code == 200
    cache = runtime.previews["shop"].responses
    await until(lambda: cache.live, what="the proxy follows the dev server's generations")

    def short(response) -> bool:
        """Whether the short way answered the request just made."""
        nonlocal answered
        taken, answered = kept.answered > answered, kept.answered
        return taken

    answered = kept.answered
    # A host the handler has not checked yet goes to the handler, which answers
    # from the cache too; then the same request comes the short way.
    for host, asked in (
        ("localhost", {}),
        ("127.0.0.2", {"If-None-Match": first.headers["ETag"]}),
    ):
        new_host = {"Host": f"{host}:{jp_http_port}", **asked}
        by_handler = await fetch(module, headers=new_host)
        assert not short(by_handler)
        by_router = await fetch(module, headers=new_host)
        assert short(by_router)
        assert by_router.code == by_handler.code == (304 if asked else 200)
        assert by_router.body == by_handler.body == (b"" if asked else first.body)
        assert sorted(by_router.headers.get_all()) == sorted(by_handler.headers.get_all())
        assert "sandbox allow-scripts" in by_router.headers["Content-Security-Policy"]
        assert by_router.headers["Access-Control-Allow-Origin"] == "*"
    assert short(await fetch(module))

    # What it is not sure of goes the whole way.
    token = info["preview_url"].rstrip("/").rsplit("/", 1)[1]
    wrong = module.replace(token, "x" * len(token))
    assert (await fetch(wrong)).code == 403 and not short(None)
    refused_host = await fetch(module, headers={"Host": "evil.example"})
    assert refused_host.code == 403 and not short(None)
    assert (await fetch(preview + "src/./App.jsx")).code == 400 and not short(None)
    page_load = await fetch(module, headers={"Sec-Fetch-Mode": "navigate"})
    assert page_load.code == 200 and not short(None)
    encoded = await fetch(preview + "src/App%2Ejsx")
    assert encoded.code == 200 and encoded.body == first.body and not short(None)
    ranged = await fetch(module, headers={"Range": "bytes=0-9"})
    assert ranged.code in (200, 206) and not short(None)
    # A frozen preview is woken by the handler, and then comes the short way again.
    assert await runtime.freeze("shop")
    woken = await fetch(module)
    assert woken.code == 200 and woken.body == first.body and not short(None)
    assert not runtime.previews["shop"].frozen
    assert short(await fetch(module))
    # Stopped, nothing of it is answered.
    await runtime.stop("shop")
    assert (await fetch(module)).code in (403, 503) and not short(None)


def test_only_answers_of_the_newest_generation_are_kept_and_replayed():
    cache = ResponseCache("t", max_bytes=3 * 1024)
    cache.live = True
    a = Cached((("Content-Type", "text/javascript"),), b"a" * 100, 'W/"1"')
    g1, g2 = parse_generation("run1.1"), parse_generation("run1.2")
    assert parse_generation("run1.x") is None and parse_generation("A.1") is None
    assert parse_generation("r." + "9" * 16) is None and parse_generation(None) is None

    assert cache.observe(g1)
    cache.put(("/a", "", ""), a, g1)
    assert cache.get(("/a", "", "")) is a
    # An answer that was on its way during a change is not kept.
    assert not cache.observe(parse_generation("run1.0"))
    cache.put(("/old", "", ""), a, parse_generation("run1.0"))
    assert cache.get(("/old", "", "")) is None
    # A newer generation drops everything.
    assert cache.observe(g2)
    assert cache.get(("/a", "", "")) is None and len(cache) == 0
    # So does a message to a page; answers labelled before it are not kept.
    cache.put(("/a", "", ""), a, g2)
    cache.changed()
    assert len(cache) == 0
    cache.put(("/a", "", ""), a, g2)
    assert len(cache) == 0
    # Another run of the dev server starts afresh.
    assert cache.observe(parse_generation("run2.0"))
    # Memory stays within its budget: the least recently used goes first, and an
    # answer larger than the budget is not kept.
    g = cache.generation
    for i in range(10):
        cache.put((f"/m{i}", "", ""), Cached((), b"x" * 1000, "e"), g)
    assert cache.size <= 3 * 1024 and cache.get(("/m9", "", "")) is not None
    assert cache.get(("/m0", "", "")) is None
    cache.put(("/big", "", ""), Cached((), b"x" * 4000, "e"), g)
    assert cache.get(("/big", "", "")) is None
    # Nothing is replayed while the dev server's stream is not heard.
    cache.live = False
    assert cache.get(("/m9", "", "")) is None


@pytest.mark.parametrize(
    "stream",
    [
        [b"run1.1\n", b"x" * (1 << 20) + b"\n"],  # a line far too long
        [b"run1.1\n", b"not a generation\n"],
        [b"run1.1\n"],  # then the connection ends
        [b"run1.1\n", b"run1.2\n" * 5000],  # a flood
    ],
)
async def test_a_lying_dev_server_stream_turns_replays_off(stream):
    """What a dev server writes on its generation stream can only end the replays."""

    async def generations(request):
        response = web.StreamResponse()
        await response.prepare(request)
        for chunk in stream:
            await response.write(chunk)
            await asyncio.sleep(0.05)
        return response

    app = web.Application()
    app.router.add_get(GENERATION_PATH, generations)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    session = pooled_session(sock_read=30)
    cache = ResponseCache("t")
    try:
        cache.follow(session, f"http://127.0.0.1:{port}")
        await until(lambda: cache.live, what="the first line is taken")
        cache.put(("/a", "", ""), Cached((), b"a", "e"), cache.generation)
        assert cache.get(("/a", "", "")) is not None
        await until(lambda: not cache.live, what="the lie ends the replays")
        assert len(cache) == 0 and cache.get(("/a", "", "")) is None
        if len(stream) > 1:  # a dev server that lied is not listened to again
            cache.follow(session, f"http://127.0.0.1:{port}")
            assert cache._follower.done()
    finally:
        cache.close()
        await session.close()
        await runner.cleanup()
