"""The server's own headless Chromium (``headless.py``): one load of a page over the
DevTools pipe, what it threw, whether it is blank, and its picture; the page can
reach nothing but the host it was loaded from."""

from __future__ import annotations

import asyncio
import os

import pytest
from conftest import chromium
from tornado import httpserver, netutil, web

from jupyter_reactbox import headless
from jupyter_reactbox.ai.vision import sniff

pytestmark = pytest.mark.browser

PAGES = {
    "/crash": """<!doctype html><div id="root"></div><script type="module">
        function App() { return window.something.method(1) }
        setTimeout(() => reportError(new TypeError("Cannot read properties of undefined")), 20)
        </script>""",
    "/fine": """<!doctype html><div id="root"></div><script>
        document.getElementById('root').textContent = 'Orders'
        Promise.reject(new Error('no API here'))</script>""",
    "/calls": """<!doctype html><p>Calling home</p><script>
        fetch('http://127.0.0.1:{port}/fetch', {mode: 'no-cors'}).catch(() => {})
        fetch('http://localhost:{port}/name', {mode: 'no-cors'}).catch(() => {})
        </script><img src="http://127.0.0.1:{port}/img">""",
}


@pytest.fixture
def site(jp_asyncio_loop):
    """Two servers on loopback: the page's, and another service of this host."""
    hits: list[str] = []
    ports: list[int] = []

    class Page(web.RequestHandler):
        def get(self):
            self.finish(PAGES[self.request.path].replace("{port}", str(ports[1])))

    class Other(web.RequestHandler):
        def get(self):
            hits.append(self.request.path)

    servers = []

    async def start():
        for app in (web.Application([(r"/.*", Page)]), web.Application([(r"/.*", Other)])):
            sockets = netutil.bind_sockets(0, "127.0.0.1")
            server = httpserver.HTTPServer(app)
            server.add_sockets(sockets)
            servers.append(server)
            ports.append(sockets[0].getsockname()[1])

    jp_asyncio_loop.run_until_complete(start())
    yield f"http://127.0.0.1:{ports[0]}", hits
    for server in servers:
        server.stop()


@pytest.fixture
def browser():
    found = headless.find_browser()
    if found is None:
        pytest.fail("Browser tests need Debian's chromium: apt-get install -y chromium")
    return found


async def test_a_page_that_throws_and_shows_nothing_is_said_so(site, browser):
    url, _ = site
    # The server's own descriptors are many: the pipe's must still reach the browser.
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(16)]
    try:
        loaded = await headless.load(browser, url + "/crash")
    finally:
        for fd in spare:
            os.close(fd)
    assert loaded.blank is True
    [error] = loaded.errors
    assert error["kind"] == "error"
    assert error["message"] == "Uncaught TypeError: Cannot read properties of undefined"
    assert error["stack"].startswith("TypeError: Cannot read properties of undefined\n    at ")
    assert loaded.png is None


async def test_a_page_that_renders_is_not_blank_and_its_picture_is_a_png(site, browser):
    url, _ = site
    loaded = await headless.load(browser, url + "/fine", screenshot=True)
    assert loaded.blank is False
    assert [(e["kind"], e["message"]) for e in loaded.errors] == [
        ("rejection", "Error: no API here")
    ]
    assert sniff(loaded.png) == "image/png"


async def test_the_page_reaches_nothing_but_its_own_host(site, browser):
    url, hits = site
    loaded = await headless.load(browser, url + "/calls")
    assert loaded.blank is False
    await asyncio.sleep(0.5)
    assert hits == []  # the host's other service heard nothing, by address or by name
    async with chromium() as person:  # in a person's browser the same page does reach it
        page = await person.new_page()
        await page.goto(url + "/calls")
        for _ in range(40):
            if len(hits) >= 3:
                break
            await asyncio.sleep(0.1)
    assert sorted(hits) == ["/fetch", "/img", "/name"]
