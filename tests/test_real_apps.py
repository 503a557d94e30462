"""Apps as people have them: yarn and pnpm projects, ... Each must render its main
content in Debian's chromium, through the preview, and respond to a click.

Real engine, real installs from the package registry, real dev servers.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from conftest import FIXTURES, app_of, preview_page, zip_dir
from test_edits import block, post_edit
from tornado.httpclient import HTTPClientError

pytestmark = [pytest.mark.docker, pytest.mark.browser]


async def renders_and_responds(url: str, *, heading: str, button: str, after: str) -> None:
    """The page at ``url`` shows ``heading``; clicking ``button`` makes it read ``after``."""
    async with preview_page(url) as (page, errors):
        await page.wait_for_selector(f"text={heading}", timeout=60_000)
        await page.click(button)
        await page.wait_for_selector(f"text={after}", timeout=10_000)
        assert errors == []


@pytest.mark.parametrize("docker_config", [{"tmp_size": "4m"}])
@pytest.mark.parametrize(
    "manager, tool",
    [
        ("yarn-classic", "yarn-1/bin/yarn.js install"),
        ("yarn-berry", "yarn-4/bin/yarn.js install"),
        ("pnpm", "pnpm-10/bin/pnpm.cjs install"),
        ("bun", "bun-1/bin/bun install --linker=hoisted --frozen-lockfile"),
    ],
)
async def test_yarn_and_pnpm_apps_install_with_the_managers_the_image_ships(
    api, jp_fetch, server_url, manager, tool
):
    """No corepack download at install time: the image's own yarn and pnpm, from
    the registry alone (the yarn 1 lockfile names another registry host for every
    tarball; the install fetches them from the configured one).  The containers'
    /tmp is 4 MB here: a manager's temporary files go to disk (yarn 4 converts
    each package to a zip there, and filled 256 MB of /tmp with a large app)."""
    lock = {"pnpm": "pnpm-lock.yaml", "bun": "bun.lock"}.get(manager, "yarn.lock")
    folder = FIXTURES / "managers" / manager
    data = zip_dir(
        FIXTURES / "vite-react",
        omit=("package-lock.json",),
        extra={name: (folder / name).read_bytes() for name in ("package.json", lock)},
    )
    r = await api.upload(data, manager)
    assert r.code == 201
    info = await api.wait(json.loads(r.body)["id"], timeout=400)
    assert info["package_manager"] == manager.split("-")[0]
    log = (await jp_fetch("reactbox", "api", "projects", manager, "logs")).body.decode()
    assert tool in log
    assert "corepack" not in log
    await renders_and_responds(
        server_url + info["preview_url"],
        heading="Get started",
        button="button.counter",
        after="Count is 1",
    )


def two_apps() -> bytes:
    """A repository as GitHub zips it: the app in frontend/, a server and a second
    app (a Storybook-like docs site) beside it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(
        io.BytesIO(zip_dir(FIXTURES / "vite-react", wrap="shop-main/frontend"))
    ) as src:
        with zipfile.ZipFile(buf, "w") as out:
            for info in src.infolist():
                out.writestr(info, src.read(info))
            out.writestr("shop-main/backend/package.json", '{"dependencies": {"express": "5"}}')
            out.writestr("shop-main/backend/server.js", "")
            out.writestr("shop-main/docs/package.json", '{"devDependencies": {"vite": "8"}}')
    return buf.getvalue()


async def test_an_app_in_a_subfolder_is_found_and_path_picks_among_several(
    jp_fetch, api, server_url
):
    upload = dict(method="POST", body=two_apps(), headers={"Content-Type": "application/zip"})
    with pytest.raises(HTTPClientError) as exc:
        await jp_fetch("reactbox", "api", "projects", params={"name": "mono"}, **upload)
    assert exc.value.code == 422
    body = json.loads(exc.value.response.body)
    assert "Pick one with ?path=<folder>. Apps: docs, frontend." in body["message"]
    r = await jp_fetch(
        "reactbox", "api", "projects", params={"name": "mono", "path": "frontend"}, **upload
    )
    assert r.code == 201
    info = await api.wait("mono")
    files = (await jp_fetch("reactbox", "api", "projects", "mono", "files")).body.decode()
    assert "src/App.jsx" in files and "server.js" not in files
    await renders_and_responds(
        server_url + info["preview_url"],
        heading="Get started",
        button="button.counter",
        after="Count is 1",
    )


@pytest.mark.parametrize("variant", ["main.jsx", "main-data-router.jsx", "main-tanstack.jsx"])
async def test_client_routers_without_a_basename_route_under_the_preview(
    api, server_url, runtime, variant
):
    """BrowserRouter, createBrowserRouter and TanStack's createRouter, as tutorials
    write them (no basename): routes match, links and the reload of a deep route
    work, and nothing is written into the app's files."""
    folder = FIXTURES / "vite-routers"
    name = variant.removesuffix(".jsx").replace("main-", "").replace("main", "browser-router")
    r = await api.upload(
        zip_dir(folder, extra={"src/main.jsx": (folder / "src" / variant).read_bytes()}), name
    )
    info = await api.wait(json.loads(r.body)["id"], timeout=400)
    url = server_url + info["preview_url"]
    async with preview_page(url) as (page, errors):
        await page.wait_for_selector("text=Home page", timeout=60_000)
        await page.click("button.counter")
        await page.wait_for_selector("text=Clicked 1")
        await page.click("text=About")
        await page.wait_for_selector("text=About page")
        assert page.url == url + "about"
        await page.reload()
        await page.wait_for_selector("text=About page", timeout=30_000)
        await page.go_back()
        await page.wait_for_selector("text=Home page")
        assert errors == []
    app = runtime.store.get(name).app_dir
    assert (app / "src" / "main.jsx").read_bytes() == (folder / "src" / variant).read_bytes()
    assert (app / "vite.config.js").read_bytes() == (folder / "vite.config.js").read_bytes()


CRA_RELEASES = ("react-scripts-2", "react-scripts-4")
"""The oldest line we run (2.1: every quirk of 3.2 and more) and the last of webpack 4."""


@pytest.mark.parametrize("release", CRA_RELEASES)
async def test_older_create_react_app_renders_under_the_prefix(
    api, jp_fetch, server_url, projects_dir, release
):
    """react-scripts 2.1.1 and 4.0.3 (webpack 4) on Node 20: they need OpenSSL's
    legacy provider; 2.1 (as 3.2) also ignores PUBLIC_URL in development, and its
    dev server knows no socket path.  4.0.3 comes as lockfiles of its time have it:
    postcss-safe-parser with postcss 8.1, whose "./" folder export Node 17 and later
    no longer honour.  Version 4 also hot reloads through the preview's socket."""
    folder = FIXTURES / "cra-legacy"
    pinned = folder / release
    data = zip_dir(
        folder,
        omit=tuple(f"{r}/{f.name}" for r in CRA_RELEASES for f in (folder / r).iterdir()),
        extra={f.name: f.read_bytes() for f in pinned.iterdir()},
    )
    r = await api.upload(data, release)
    info = await api.wait(json.loads(r.body)["id"], timeout=600)
    log = (await jp_fetch("reactbox", "api", "projects", release, "logs")).body.decode()
    version = json.loads((pinned / "package.json").read_text())["dependencies"]["react-scripts"]
    assert f"jupyter-reactbox: react-scripts {version}" in log
    async with preview_page(server_url + info["preview_url"]) as (page, errors):
        await page.wait_for_selector("text=Hello from an older create-react-app", timeout=120_000)
        await page.wait_for_function(
            "[...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout=10_000
        )
        await page.click("button.counter")
        await page.wait_for_selector("text=Count is 1")
        if release.startswith("react-scripts-4"):
            app_js = app_of(projects_dir, release) / "src" / "App.js"
            app_js.write_text(app_js.read_text().replace("Hello from", "Hot reloaded"))
            await page.wait_for_selector("text=Hot reloaded an older", timeout=60_000)
        assert errors == []


def png(width: int = 32, height: int = 32) -> bytes:
    """A small red PNG."""
    rows = b"".join(b"\x00" + bytes([200, 30, 30] * width) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


SYSTEM_FONT = Path("/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf")
"""A font of the machine (Chromium's), put into the app at test time."""


def next_extras() -> dict[str, bytes]:
    return {**NEXT_EXTRAS, "app/fonts/Sans.ttf": SYSTEM_FONT.read_bytes()}


NEXT_EXTRAS = {
    "public/dot.png": png(),
    "app/media/page.js": b"""import Image from 'next/image'
import localFont from 'next/font/local'

const sans = localFont({ src: '../fonts/Sans.ttf' })

export default function Media() {
  return (
    <main className={sans.className}>
      <h1>Media page</h1>
      <Image src="/dot.png" alt="dot" width={32} height={32} />
    </main>
  )
}
""",
    "pages/data/index.js": b"""import Link from 'next/link'

export default function Data() {
  return <main><h1>Data index</h1><Link href="/data/7">Seven</Link></main>
}
""",
    "pages/data/[n].js": b"""export async function getServerSideProps({ params }) {
  return { props: { n: params.n, twice: Number(params.n) * 2 } }
}

export default function Number_({ n, twice }) {
  return <main><h1>Number {n} twice is {twice}</h1></main>
}
""",
}


async def test_a_next_app_runs_under_the_prefix_with_both_routers_and_hot_reloads(
    api, server_url, projects_dir
):
    """Next.js 16 (Turbopack): the preview's base becomes its basePath with no change
    to the app's files; its dev-origin check lets the sandboxed page (Origin: null)
    through the proxy; the app router, the pages router, links, reloads of deep
    routes, public files and HMR all work; and so do next/image (its optimizer
    asked for a public file named from the root), next/font, and a pages-router
    client navigation whose data comes from _next/data (a preflighted fetch)."""
    r = await api.upload(zip_dir(FIXTURES / "next-app", extra=next_extras()), "next")
    info = await api.wait(json.loads(r.body)["id"], timeout=600)
    assert info["framework"] == "next"
    url = server_url + info["preview_url"]
    async with preview_page(url) as (page, errors):
        await page.wait_for_selector("text=Hello from Next.js", timeout=120_000)
        assert await page.evaluate("self.origin") == "null"
        await page.wait_for_function(
            "[...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout=10_000
        )
        await page.click("button.counter")
        await page.wait_for_selector("text=Count is 1")
        await page.click("text=About")
        await page.wait_for_selector("text=About page", timeout=60_000)
        assert page.url.rstrip("/") == url + "about"
        await page.reload()
        await page.wait_for_selector("text=About page", timeout=60_000)
        await page.goto(url + "legacy")
        await page.wait_for_selector("text=Pages router", timeout=120_000)
        await page.click("button.counter")
        await page.wait_for_selector("text=Count is 1")

        await page.goto(url + "media")
        await page.wait_for_selector("text=Media page", timeout=120_000)
        await page.wait_for_function(
            "[...document.images].every(i => i.complete && i.naturalWidth === 32)",
            timeout=30_000,
        )
        await page.wait_for_function(
            "[...document.fonts].some(f => f.status === 'loaded' && f.family.includes('sans'))",
            timeout=30_000,
        )
        rules = await page.evaluate(ROOT_FONT_RULES)
        assert rules == [], rules  # Next's own fonts are named under the base

        data: list[int] = []
        page.on("response", lambda r: "/_next/data/" in r.url and data.append(r.status))
        await page.goto(url + "data")
        await page.wait_for_selector("text=Data index", timeout=120_000)
        await page.evaluate("window.__stayed = true")
        await page.click("text=Seven")
        await page.wait_for_selector("text=Number 7 twice is 14", timeout=60_000)
        assert data and set(data) == {200}, data
        assert await page.evaluate("window.__stayed") is True  # a client navigation

        await page.goto(url)
        await page.wait_for_selector("text=Hello from Next.js", timeout=60_000)
        await page.click("button.counter")
        page_js = app_of(projects_dir, "next") / "app" / "page.js"
        page_js.write_text(page_js.read_text().replace("Hello from", "Hot reloaded"))
        await page.wait_for_selector("text=Hot reloaded Next.js", timeout=60_000)
        assert errors == []


ROOT_FONT_RULES = """() => [...document.styleSheets].flatMap(sheet => {
    try { return [...sheet.cssRules].map(rule => rule.cssText) } catch { return [] }
}).filter(text => text.includes('url("/__nextjs_font/'))"""


async def test_a_next_edit_that_does_not_compile_is_fed_back_then_fixed(
    api, jp_fetch, llm, projects_dir
):
    """AI edits on a Next.js app are compiled by its dev server before they are
    kept: the first answer imports a module that does not exist, Next's error goes
    back to the model, and its second answer (which fixes it) is the one change."""
    r = await api.upload(zip_dir(FIXTURES / "next-app"), "next")
    await api.wait(json.loads(r.body)["id"], timeout=600)
    app = app_of(projects_dir, "next")
    counter = "import { useState } from 'react'"
    bad_import = "import Missing from './does-not-exist'"
    llm.answer(block("app/counter.js", counter, f"{counter}\n{bad_import}"))
    llm.answer(
        block("app/counter.js", bad_import, "")
        + "\n"
        + block("app/counter.js", "Count is {count}", "Clicks: {count}")
    )
    result = await post_edit(jp_fetch, "Say Clicks instead of Count is", project_id="next")
    assert result["status"] == "applied", result
    assert result["attempts"] == 2
    fed_back = llm.user_messages(1)[-1]
    assert "failed to compile" in fed_back and "does-not-exist" in fed_back, fed_back
    text = (app / "app" / "counter.js").read_text()
    assert "does-not-exist" not in text and "Clicks: {count}" in text


async def test_an_app_that_needs_a_service_worker_says_so_in_the_sandbox(api, server_url):
    """A service worker needs an origin of its own (the sandbox's is opaque): the page
    says so at its top and the notebook hears it, instead of a blank page.  (In
    separate-origin mode it runs: test_origin_mode.)"""
    r = await api.upload(zip_dir(FIXTURES / "vite-worker"), "worker")
    info = await api.wait(json.loads(r.body)["id"])
    async with preview_page(server_url + info["preview_url"]) as (page, _):
        bar = page.locator("#reactbox-no-worker")
        await bar.wait_for(timeout=30_000)
        assert "registers a service worker" in await bar.inner_text()
        assert "preview_origin_template" in await bar.inner_text()
    for _ in range(40):
        errors = (await api.get("worker"))["errors"]
        if errors:
            break
        await asyncio.sleep(0.25)
    assert any("registers a service worker" in e["message"] for e in errors), errors


async def test_an_app_whose_dev_script_starts_its_api_reaches_it_through_its_proxy(
    api, jp_fetch, server_url
):
    """ "dev": "concurrently \\"npm run api\\" \\"vite\\"" and a server.proxy for /api:
    the API runs beside the dev server in the sandbox, and the app's fetch of
    "/api/feedback" (from the root, as outside a preview) reaches it, GET and POST."""
    r = await api.upload(zip_dir(FIXTURES / "vite-companion"), "feedback")
    info = await api.wait(json.loads(r.body)["id"])
    await renders_and_responds(
        server_url + info["preview_url"],
        heading="Feedback (1)",
        button="button.add",
        after="Feedback (2)",
    )
    log = (await jp_fetch("reactbox", "api", "projects", "feedback", "logs")).body.decode()
    assert "[jupyter-reactbox] companion: node api.mjs" in log
    assert "API on 5174" in log


async def test_an_npm_workspace_installs_as_a_whole_and_runs_the_member_picked(
    api, jp_fetch, server_url, projects_dir
):
    """A monorepo (apps/web, apps/admin, packages/ui shared by both): the upload
    lists its apps, ?path= picks one, the workspace installs from its root's
    lockfile, the app's import of its sibling package resolves to the member, and
    an edit of that package hot-reloads the app."""
    data = zip_dir(FIXTURES / "workspace", wrap="acme-main")
    upload = dict(method="POST", body=data, headers={"Content-Type": "application/zip"})
    with pytest.raises(HTTPClientError) as exc:
        await jp_fetch("reactbox", "api", "projects", params={"name": "acme"}, **upload)
    assert "Apps: apps/admin, apps/web." in json.loads(exc.value.response.body)["message"]
    r = await jp_fetch(
        "reactbox", "api", "projects", params={"name": "acme", "path": "apps/web"}, **upload
    )
    assert json.loads(r.body)["member"] == "apps/web"
    info = await api.wait("acme")
    assert (info["member"], info["package_manager"]) == ("apps/web", "npm")
    log = (await jp_fetch("reactbox", "api", "projects", "acme", "logs")).body.decode()
    assert "npm ci" in log
    tree = app_of(projects_dir, "acme")
    assert (tree / "node_modules" / "@acme" / "ui").is_symlink()
    url = server_url + info["preview_url"]
    async with preview_page(url) as (page, errors):
        await page.wait_for_selector("text=Acme storefront", timeout=60_000)
        await page.click("button.counter")
        await page.wait_for_selector("text=Items in cart: 1", timeout=10_000)
        # The shared package is the app's source too: its edit is hot-reloaded.
        ui = tree / "packages" / "ui" / "src" / "index.jsx"
        ui.write_text(ui.read_text().replace('"banner"', '"banner" title="edited"'))
        await page.wait_for_selector("h1.banner[title=edited]", timeout=20_000)
        assert errors == []


@pytest.mark.parametrize(
    "manager, command",
    [
        ("pnpm", "pnpm-10/bin/pnpm.cjs install"),
        ("bun", "bun-1/bin/bun install --linker=hoisted --frozen-lockfile"),
    ],
)
async def test_a_pnpm_or_bun_workspace_with_one_app_picks_it_and_links_its_packages(
    api, jp_fetch, server_url, manager, command
):
    """pnpm-workspace.yaml, or a bun workspace, and "@acme/ui": "workspace:*" (which
    npm cannot install): the one app among the members is picked, and the
    workspace's own manager links the package."""
    overlay = FIXTURES / f"workspace-{manager}"
    extra = {
        f.relative_to(overlay).as_posix(): f.read_bytes() for f in overlay.rglob("*") if f.is_file()
    }
    data = zip_dir(FIXTURES / "workspace", omit=("package-lock.json", "apps/admin"), extra=extra)
    r = await api.upload(data, f"acme-{manager}")
    assert json.loads(r.body)["member"] == "apps/web"
    info = await api.wait(f"acme-{manager}", timeout=400)
    assert info["package_manager"] == manager
    log = (await jp_fetch("reactbox", "api", "projects", f"acme-{manager}", "logs")).body
    assert command in log.decode() and "--frozen-lockfile" in log.decode()
    await renders_and_responds(
        server_url + info["preview_url"],
        heading="Acme storefront",
        button="button.counter",
        after="Items in cart: 1",
    )


async def test_an_app_on_vite_4_is_upgraded_on_request_as_one_change_that_undoes(
    api, jp_fetch, server_url, projects_dir
):
    """Vite 4 has no release with the file-read fixes: the upload is refused, saying
    how to have it upgraded; with ?upgrade=vite it is, as a commit after the upload's
    (Vite and its React plugin raised, the lockfile that pinned Vite 4 removed), and
    it renders.  Undone, the app is as uploaded, and a restart says why it cannot run."""
    old = FIXTURES / "vite-4"  # create-vite 4's manifest, lockfile and config
    data = zip_dir(FIXTURES / "vite-react", extra={f.name: f.read_bytes() for f in old.iterdir()})
    upload = dict(method="POST", body=data, headers={"Content-Type": "application/zip"})
    with pytest.raises(HTTPClientError) as exc:
        await jp_fetch("reactbox", "api", "projects", params={"name": "old"}, **upload)
    assert exc.value.code == 422
    assert "?upgrade=vite" in json.loads(exc.value.response.body)["message"]
    assert not (projects_dir / "old").exists()
    await jp_fetch(
        "reactbox", "api", "projects", params={"name": "old", "upgrade": "vite"}, **upload
    )
    info = await api.wait("old", timeout=300)
    commits = json.loads((await jp_fetch("reactbox", "api", "projects", "old", "history")).body)
    upgrade, uploaded = (c["message"] for c in commits["commits"][:2])
    assert upgrade == (
        "Upgrade Vite to a maintained release: vite ^4.3.9 -> ^5.4.20; "
        "@vitejs/plugin-react ^4.0.0 -> ^4.7.0; package-lock.json removed (it pinned Vite 4.5.14)"
    )
    assert uploaded == "Import uploaded app"
    tree = app_of(projects_dir, "old")
    assert json.loads((tree / "node_modules" / "vite" / "package.json").read_text())[
        "version"
    ].startswith("5.4.")
    await renders_and_responds(
        server_url + info["preview_url"],
        heading="Get started",
        button="button.counter",
        after="Count is 1",
    )
    await jp_fetch("reactbox", "api", "projects", "old", "undo", method="POST", body=b"")
    assert (tree / "package-lock.json").read_bytes() == (
        FIXTURES / "vite-4" / "package-lock.json"
    ).read_bytes()
    await jp_fetch("reactbox", "api", "projects", "old", "restart", method="POST", body=b"")
    failed = await api.wait("old", "failed")
    assert "Vite ^4.3.9 is no longer maintained" in failed["error"]
    with pytest.raises(HTTPClientError) as exc:
        await jp_fetch(
            "reactbox", "api", "projects", params={"name": "x", "upgrade": "all"}, **upload
        )
    assert exc.value.code == 400
