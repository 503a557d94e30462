"""Page load of a large app in Chromium: straight to the dev server vs through the
preview proxy, cold and warm, in one run.

The app is generated here: the vite-react fixture (so its packages come from the
cache) with ``--modules`` components (320 by default, as a real dashboard has),
each its own module with its own CSS module, imported by ``src/App.jsx`` and all
rendered. A load is done when the last component is on the page.

* cold: a dev server just (re)started, which has transformed nothing yet, and a
  browser context with an empty cache;
* warm: the same page loaded again in that context, ``--warm`` times (a direct
  load revalidates every module: Vite answers 304 to its ETag).

Each round loads direct and proxied in turn (the order alternates), after a
restart of the dev server for each cold load: previews under Jupyter's path
(the default), and with ``--origin`` then on a second server at their own
origins (``preview_origin_template``, here ``http://dash.localhost:<port>``).

A third way is measured warm only, to tell the sandbox's cost from the
proxy's: the dev server straight, with the page in an opaque origin as a
preview is (``Content-Security-Policy: sandbox``, set by a plugin of the
generated app's own ``vite.config.js`` on the page that asks for it).

Prints medians and the ratio of proxied to direct (goal: <= 1.3x, cold and
warm).

    python benchmarks/pageload.py [--rounds 3] [--warm 3] [--modules 320] [--origin]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import docker
from harness import FIXTURES, chromium, free_port, jupyter, parse_args, wait_running, zip_dir
from playwright.async_api import Error as PlaywrightError

from jupyter_reactbox.backends.docker import PORT

SANDBOX_QUERY = "reactbox-bench-sandbox"
SANDBOXING_CONFIG = b"""import react from '@vitejs/plugin-react'
import { defineConfig } from 'vite'

// Benchmark only: a page asked for with ?%s runs in an opaque origin, as a
// preview does (without the proxy), and its module requests (Origin: null) may
// read their answers.
const sandboxOnRequest = {
  name: 'bench-sandbox-on-request',
  configureServer(server) {
    server.middlewares.use((req, res, next) => {
      if (req.url.includes('%s')) res.setHeader('Content-Security-Policy', 'sandbox allow-scripts')
      if (req.headers.origin === 'null') res.setHeader('Access-Control-Allow-Origin', '*')
      next()
    })
  },
}

export default defineConfig({ plugins: [react(), sandboxOnRequest] })
""" % (SANDBOX_QUERY.encode(), SANDBOX_QUERY.encode())


def large_app(modules: int) -> bytes:
    """The fixture with ``modules`` generated components (and as many CSS modules)."""
    extra: dict[str, bytes] = {}
    imports, uses = [], []
    for i in range(modules):
        name = f"Widget{i:03d}"
        extra[f"src/widgets/{name}.module.css"] = (
            f".card {{ border: 1px solid #ccc; padding: {i % 7}px; margin: 2px; }}\n"
            f".value {{ font-weight: {400 + 100 * (i % 4)}; }}\n"
        ).encode()
        extra[f"src/widgets/{name}.jsx"] = (
            "import { useState } from 'react'\n"
            f"import styles from './{name}.module.css'\n\n"
            f"export default function {name}() {{\n"
            f"  const [value, setValue] = useState({i})\n"
            "  return (\n"
            f'    <div className={{styles.card}} data-widget="{i}">\n'
            f"      <span className={{styles.value}}>{name}: {{value}}</span>\n"
            "      <button onClick={() => setValue(value + 1)}>+</button>\n"
            "    </div>\n"
            "  )\n"
            "}\n"
        ).encode()
        imports.append(f"import {name} from './widgets/{name}.jsx'")
        uses.append(f"      <{name} />")
    extra["vite.config.js"] = SANDBOXING_CONFIG
    extra["src/App.jsx"] = (
        "\n".join(imports)
        + "\n\nexport default function App() {\n  return (\n    <main>\n"
        + "\n".join(uses)
        + "\n    </main>\n  )\n}\n"
    ).encode()
    return zip_dir(FIXTURES / "vite-react", extra=extra)


async def load(browser, url: str, last: int, warm: int, opaque: bool) -> tuple[float, list[float]]:
    """(first, [then ``warm`` times again]) seconds to the last widget on the page,
    in a fresh browser context; the page's origin checked to be opaque or not."""
    context = await browser.new_context()
    errors: list[str] = []
    try:
        page = await context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"{r.url}: {r.failure}"))
        page.on("response", lambda r: r.status >= 500 and errors.append(f"{r.url}: {r.status}"))
        times = []
        for _ in range(1 + warm):
            started = time.perf_counter()
            await page.goto(url)
            await page.wait_for_selector(f'[data-widget="{last}"]', timeout=120_000)
            times.append(time.perf_counter() - started)
        origin = await page.evaluate("self.origin")
        if (origin == "null") != opaque:
            raise SystemExit(f"{url} ran in origin {origin!r}: not what is measured")
        return times[0], times[1:]
    except PlaywrightError:
        print(f"a load of {url} did not finish; what the page saw:", *errors[:20], sep="\n  ")
        raise
    finally:
        await context.close()


def direct_url(client, server, info: dict) -> str:
    """The page at the dev server's own address (the container's, on its network)."""
    container = client.containers.get(server.engine_name("dash"))
    networks = container.attrs["NetworkSettings"]["Networks"]
    ip = networks[server.engine_name("previews")]["IPAddress"]
    port = PORT
    path = info["preview_url"] if info["preview_url"].startswith("/") else "/"
    return f"http://{ip}:{port}{path}"


async def measure(rounds: int, warm: int, modules: int, proxied: str, *extra, port=None):
    """Cold and warm loads, direct and ``proxied``, on one server; and warm loads
    of the dev server straight with the page sandboxed."""
    rows: dict[str, list[float]] = {}
    client = docker.from_env()
    with jupyter(*extra, port=port) as server:
        server.upload(large_app(modules), "dash")
        wait_running(server, "dash")

        def fresh(way: str) -> str:
            """The page's URL on a dev server just started: nothing transformed yet."""
            server.call("POST", "reactbox/api/projects/dash/stop", b"")
            server.wait("dash", "stopped")
            server.call("POST", "reactbox/api/projects/dash/start", b"")
            info = wait_running(server, "dash")
            if way == "direct":
                return direct_url(client, server, info)
            url = info["preview_url"]
            return server.url + url if url.startswith("/") else url

        async def measured(way: str, url) -> None:
            opaque = way == SANDBOXED or (way != "direct" and not extra)
            try:
                cold, warms = await load(browser, url(), modules - 1, warm, opaque)
            except PlaywrightError:
                print("(that load is measured again, on another fresh dev server)")
                cold, warms = await load(browser, url(), modules - 1, warm, opaque)
            if way != SANDBOXED:  # its first load is not cold: the dev server is warm
                rows.setdefault(f"cold, {way}", []).append(cold)
            rows.setdefault(f"warm, {way}", []).extend(warms)

        async with chromium() as browser:
            for i in range(rounds):
                ways = ["direct", proxied]
                for way in ways if i % 2 == 0 else ways[::-1]:
                    await measured(way, lambda way=way: fresh(way))
                if not extra:  # previews under Jupyter's path: sandboxed
                    info = server.project("dash")
                    page = f"{direct_url(client, server, info)}?{SANDBOX_QUERY}"
                    await measured(SANDBOXED, lambda page=page: page)
    return rows


SANDBOXED = "direct, page sandboxed (no proxy)"


def report(title: str, rows: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    print(f"{'':40}{'n':>4}{'median':>9}{'min':>9}{'ratio to direct':>18}")
    for kind in ("cold", "warm"):
        base = statistics.median(rows[f"{kind}, direct"])
        for name, xs in rows.items():
            if name.startswith(kind):
                med = statistics.median(xs)
                print(f"{name:40}{len(xs):>4}{med:>9.2f}{min(xs):>9.2f}{med / base:>17.2f}x")


async def run(rounds: int, warm: int, modules: int, origin: bool) -> None:
    what = f"{modules} components ({2 * modules} modules of its own)"
    sandboxed = await measure(rounds, warm, modules, "through the proxy")
    report(
        f"page load of a generated app of {what} -> the last one rendered in chromium (s); "
        "previews under Jupyter's path (the default: an opaque-origin sandbox)",
        sandboxed,
    )
    proxy, alone = (
        statistics.median(sandboxed[f"warm, {w}"]) for w in ("through the proxy", SANDBOXED)
    )
    print(
        f"the proxy's own share of a warm load: {proxy / alone:.2f}x the same sandboxed page "
        "straight from the dev server"
    )
    if not origin:
        print(
            "goal: through the proxy <= 1.3x direct, cold and warm. A sandboxed page's origin "
            "is opaque, and Chromium keeps no HTTP cache for it: every warm load fetches each "
            "module again where a direct load revalidates (304). --origin measures previews "
            "at their own origins too."
        )
        return
    port = free_port()
    own = await measure(
        rounds,
        warm,
        modules,
        "through the proxy, own origin",
        f"--ReactBoxApp.preview_origin_template=http://{{project}}.localhost:{port}",
        f"--ReactBoxApp.frame_ancestors=http://localhost:{port}",
        port=port,
    )
    report("the same, previews at their own origins (c.ReactBoxApp.preview_origin_template)", own)
    print(
        "goal: through the proxy <= 1.3x direct, cold and warm. A sandboxed page's origin "
        "is opaque, and Chromium keeps no HTTP cache for it: every warm load of the "
        "default mode fetches each module again where a direct load revalidates (304)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm", type=int, default=3, help="warm loads after each cold one")
    parser.add_argument("--modules", type=int, default=320)
    parser.add_argument(
        "--origin", action="store_true", help="also measure previews at their own origins"
    )
    args = parse_args(parser)
    asyncio.run(run(args.rounds, args.warm, args.modules, args.origin))


if __name__ == "__main__":
    main()
