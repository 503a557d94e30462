"""A corpus of real apps, as their authors ship them: the official templates that
packages publish to the package registry, taken at test time (``npm pack``),
uploaded as a ZIP the way a user would, and opened through the preview in
Debian's chromium.  Each must render its main content and respond to a click,
or fail fast with a message that says why and what to change.  The test prints
the table, and needs 9 in 10 to render.

Nothing of these templates is committed here; the fixtures of our own (yarn,
pnpm, older create-react-app, routers, subfolders) are in ``test_real_apps.py``.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import chromium
from tornado.httpclient import HTTPClientError

pytestmark = [pytest.mark.docker, pytest.mark.browser]


@dataclass
class App:
    name: str
    source: str
    """Where it comes from: the registry package and the folder in it."""
    files: dict[str, bytes]
    refused: str | None = None
    """Part of the message an app we do not run must fail with."""
    main: str = "#root"
    """The element the app renders into."""


def npm_pack(spec: str, into: Path) -> Path:
    """Unpack the registry package ``spec`` into a new folder; its ``package/``."""
    into.mkdir(parents=True)
    out = subprocess.run(
        ["npm", "pack", spec, "--json", "--pack-destination", str(into)],
        capture_output=True,
        text=True,
        cwd=into,
        timeout=300,
        check=True,
    )
    with tarfile.open(into / json.loads(out.stdout)[0]["filename"]) as tar:
        tar.extractall(into, filter="data")
    return into / "package"


RENAMED = {"_gitignore": ".gitignore", "gitignore": ".gitignore", "README-template.md": "README.md"}


def folder_files(root: Path) -> dict[str, bytes]:
    """A template folder as its scaffolder writes it (``_gitignore`` -> ``.gitignore``)."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            rel = path.relative_to(root).as_posix()
            files[RENAMED.get(rel, rel)] = path.read_bytes()
    return files


def vite_template(tmp: Path, version: str, template: str) -> App:
    package = npm_pack(f"create-vite@{version}", tmp / f"create-vite-{version}-{template}")
    real = json.loads((package / "package.json").read_text())["version"]
    files = folder_files(package / f"template-{template}")
    manifest = json.loads(files["package.json"])
    manifest["name"] = template
    files["package.json"] = json.dumps(manifest, indent=2).encode()
    major = int(manifest["devDependencies"]["vite"].lstrip("^~").split(".")[0])
    refused = "no patched release of Vite" if major < 5 else None
    return App(
        f"vite-{version}-{template}", f"create-vite@{real} template-{template}", files, refused
    )


def cra_template(tmp: Path, name: str) -> App:
    """What `create-react-app` makes of a template: its ``template/`` folder, and a
    package.json with react-scripts, React and the template's dependencies."""
    package = npm_pack(name, tmp / name)
    real = json.loads((package / "package.json").read_text())["version"]
    template = json.loads((package / "template.json").read_text())["package"]
    files = folder_files(package / "template")
    manifest = {
        "name": name,
        "version": "0.1.0",
        "private": True,
        "dependencies": {
            "react": "^19.0.0",
            "react-dom": "^19.0.0",
            "react-scripts": "5.0.1",
            **template.get("dependencies", {}),
        },
        "scripts": {"start": "react-scripts start"},
        "eslintConfig": template.get("eslintConfig", {}),
        "browserslist": {
            "production": [">0.2%", "not dead", "not op_mini all"],
            "development": ["last 1 chrome version"],
        },
    }
    files["package.json"] = json.dumps(manifest, indent=2).encode()
    return App(name, f"{name}@{real}", files)


def next_template(tmp: Path, template: str, language: str, version: str = "latest") -> App:
    """What `create-next-app --no-eslint` makes of one of its templates: the folder,
    and the package.json it writes (its own Next release, the React it names)."""
    name = f"next-{version}-{template}-{language}"
    package = npm_pack(f"create-next-app@{version}", tmp / name)
    real = json.loads((package / "package.json").read_text())["version"]
    code = (package / "dist" / "index.js").read_text()
    named = re.search(r'dependencies:\{react:("[^"]+"|\w+)', code)
    assert named, "create-next-app no longer writes React's version where it did"
    react = named.group(1).strip('"')
    if not named.group(1).startswith('"'):  # a constant of the bundle
        constant = re.search(rf'\b{react}="(\d+\.\d+\.\d+)"', code)
        assert constant, "create-next-app no longer names the React it installs where it did"
        react = constant.group(1)
    files = folder_files(package / "dist" / "templates" / template / language)
    files.pop("eslint.config.mjs", None)
    files.pop(".eslintrc.json", None)
    manifest = {
        "name": name,
        "version": "0.1.0",
        "private": True,
        "scripts": {"dev": "next dev", "build": "next build", "start": "next start"},
        "dependencies": {"react": react, "react-dom": react, "next": real},
        "devDependencies": {},
    }
    if language == "ts":
        types = "^" + react.lstrip("^~").split(".")[0]
        manifest["devDependencies"] = {
            "typescript": "^5", "@types/node": "^20", "@types/react": types,
            "@types/react-dom": types,
        }  # fmt: skip
    files["package.json"] = json.dumps(manifest, indent=2).encode()
    return App(name, f"create-next-app@{real} {template}/{language}", files, main="main")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[App]:
    tmp = tmp_path_factory.mktemp("corpus")
    # Both languages on the two newest Vite lines; JavaScript on older ones (their
    # TypeScript templates differ only in files Vite compiles the same way).
    apps = [
        vite_template(tmp, version, template)
        for version in ("latest", "7")
        for template in ("react", "react-ts")
    ]
    apps += [vite_template(tmp, version, "react") for version in ("6", "5")]
    apps.append(vite_template(tmp, "4", "react"))  # Vite 4: no patched release
    # create-react-app's own template (its 1,400 packages take most of the run's
    # time; the TypeScript template installs the same react-scripts 5, which
    # test_preview.py and test_real_apps.py run too).
    apps.append(cra_template(tmp, "cra-template"))
    apps += [next_template(tmp, "app", "ts"), next_template(tmp, "default", "js")]
    # Older Next.js lines people still have: 15 (app router, TypeScript) and 13
    # (pages router, webpack).
    apps += [next_template(tmp, "app", "ts", "15"), next_template(tmp, "default", "js", "13")]
    return apps


def to_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


async def check_page(browser, url: str, main: str) -> tuple[str, str]:
    """(rendered, clicked): 'yes', or what went wrong; 'no button' where the page
    has nothing to click but links out."""
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        await page.goto(url)
        await page.wait_for_function(
            "main => document.querySelector(main)?.innerText.trim().length > 0",
            arg=main,
            timeout=120_000,
        )
        if errors:
            return f"page error: {errors[0][:80]}", "-"
        button = page.locator("button").first
        if not await button.count():
            return "yes", "no button"
        before = await page.inner_text(main)
        await button.click()
        await page.wait_for_function(
            "([main, before]) => document.querySelector(main).innerText !== before",
            arg=[main, before],
        )
        return "yes", "yes"
    except Exception as exc:  # a row of the table, not the end of the run
        return f"no: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}", "-"
    finally:
        await page.close()


CONCURRENT = 2
"""Apps taken through at once: an install waits on the registry much of its time."""


async def take_through(api, jp_fetch, server_url, browser, app: App) -> tuple:
    """Upload, wait, render and click one app; its row of the table."""
    started = time.monotonic()
    try:
        r = await api.upload(to_zip(app.files), app.name)
    except HTTPClientError as exc:
        message = json.loads(exc.response.body)["message"]
        ok = app.refused is not None and app.refused in message
        return (app, "refused" if ok else "no", "-", message, time.monotonic() - started)
    project = json.loads(r.body)["id"]
    try:
        info = await api.get(project)
        deadline = time.monotonic() + 600
        while info["status"] not in ("running", "failed") and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            info = await api.get(project)
        if info["status"] != "running":
            note = (info["error"] or info["status"]).splitlines()[0]
            ok = app.refused is not None and app.refused in note
            return (app, "refused" if ok else "no", "-", note, time.monotonic() - started)
        rendered, clicked = await check_page(browser, server_url + info["preview_url"], app.main)
        note = "; ".join(info["notes"]) or info["detail"] or ""
        return (app, rendered, clicked, note, time.monotonic() - started)
    finally:
        await jp_fetch("reactbox", "api", "projects", project, method="DELETE")


@pytest.mark.timeout(1200)
async def test_the_corpus_of_registry_templates_renders(api, jp_fetch, server_url, corpus):
    turns = asyncio.Semaphore(CONCURRENT)
    async with chromium() as browser:

        async def one(app: App) -> tuple:
            async with turns:
                return await take_through(api, jp_fetch, server_url, browser, app)

        rows = await asyncio.gather(*(one(app) for app in corpus))

    width = max(len(a.source) for a in corpus)
    print(f"\n{'app':<{width}}  {'renders':<8} {'click':<9} {'s':>5}  note")
    for app, rendered, clicked, note, seconds in rows:
        print(f"{app.source:<{width}}  {rendered[:8]:<8} {clicked:<9} {seconds:5.0f}  {note[:100]}")
    ran = [row for row in rows if row[0].refused is None]
    good = [row for row in ran if row[1] == "yes" and row[2] in ("yes", "no button")]
    print(f"rendered and responded: {len(good)} of {len(ran)}; refused as expected: "
          f"{sum(1 for row in rows if row[1] == 'refused')} of {len(rows) - len(ran)}")  # fmt: skip
    assert len(good) >= 0.9 * len(ran), rows
    # An app we do not run fails fast, with a message that says what to change.
    assert all(row[1] == "refused" for row in rows if row[0].refused is not None), rows
