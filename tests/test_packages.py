"""The package store: a new npm lockfile whose packages earlier installs fetched is
assembled from copies of them, as ``npm ci`` would lay them out, and no npm runs.

Unit tests on trees made here (the layout npm writes, with its hidden lockfile),
then the real thing: real npm installs in the sandbox image, a real Jupyter
server, and a preview that tries to poison what the next project gets.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import stat
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, containers_made, engine_name, next_second, zip_dir
from fakes import FakeBackend
from test_hostile import sh

from jupyter_reactbox.backends.install import Installer
from jupyter_reactbox.backends.modules import SPARE, ModulesCache, installed, mark
from jupyter_reactbox.backends.packages import PackageStore, Platform
from jupyter_reactbox.backends.packages import installed as installed_packages

HERE = Platform("linux", "x64", "glibc")


def integrity(text: str) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(text.encode()).digest()).decode()


PACKAGES = {
    # lockfile path -> (entry, files)
    "node_modules/tool": (
        {"version": "1.0.0", "bin": {"tool": "bin/tool.js"}, "dependencies": {"dep": "^1"}},
        {"package.json": '{"name":"tool"}', "bin/tool.js": "#!/usr/bin/env node\n"},
    ),
    "node_modules/dep": (
        {"version": "1.0.0"},
        {"package.json": '{"name":"dep","version":"1.0.0"}', "index.js": "one"},
    ),
    "node_modules/tool/node_modules/dep": (
        {"version": "2.0.0"},
        {"package.json": '{"name":"dep","version":"2.0.0"}', "index.js": "two"},
    ),
    "node_modules/@scope/ui": (
        {
            "version": "3.0.0",
            "optionalDependencies": {"@scope/ui-linux-x64": "3.0.0", "@scope/ui-wasm": "3.0.0"},
        },
        {"package.json": '{"name":"@scope/ui"}', "lib/a.js": "a"},
    ),
    "node_modules/@scope/ui-linux-x64": (
        {"version": "3.0.0", "optional": True, "os": ["linux"], "cpu": ["x64"]},
        {"package.json": "{}", "ui.node": "\x7fELF"},
    ),
    "node_modules/@scope/ui-wasm": (
        {
            "version": "3.0.0",
            "optional": True,
            "cpu": ["wasm32"],
            "dependencies": {"wasm-runtime": "1"},
        },
        {"package.json": "{}"},
    ),
    "node_modules/wasm-runtime": (  # reached only through the wasm build: not installed
        {"version": "1.0.0", "optional": True},
        {"package.json": "{}"},
    ),
}
MANIFEST = {"name": "app", "dependencies": {"tool": "^1", "dep": "^1", "@scope/ui": "^3"}}


def entry(path: str) -> dict:
    meta, _ = PACKAGES[path]
    return {**meta, "resolved": f"https://registry.invalid/{path}.tgz",
            "integrity": integrity(path)}  # fmt: skip


def lockfile(**changes) -> dict:
    packages = {"": {"name": "app", **{k: v for k, v in MANIFEST.items() if k != "name"}}}
    packages.update({path: entry(path) for path in PACKAGES})
    packages.update(changes)
    return {"name": "app", "lockfileVersion": 3, "requires": True, "packages": packages}


def npm_tree(root: Path, paths=None) -> Path:
    """A node_modules as npm leaves it on ``HERE`` (without the skipped packages)."""
    paths = paths or [p for p in PACKAGES if "wasm" not in p]
    tree = root / "node_modules"
    for path in paths:
        for name, text in PACKAGES[path][1].items():
            (root / path / name).parent.mkdir(parents=True, exist_ok=True)
            (root / path / name).write_text(text)
    (root / "node_modules/tool/bin/tool.js").chmod(0o755)
    (tree / ".bin").mkdir()
    (tree / ".bin" / "tool").symlink_to("../tool/bin/tool.js")
    hidden = {"name": "app", "lockfileVersion": 3, "requires": True,
              "packages": {path: entry(path) for path in paths}}  # fmt: skip
    (tree / ".package-lock.json").write_text(json.dumps(hidden))
    return tree


def listing(root: Path, leave_out: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every entry under root: its kind, content and mode; top-level names in
    leave_out are not walked (a running dev server writes and renames in .vite)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        if folder == str(root):
            dirs[:] = [d for d in dirs if d not in leave_out]
        for name in dirs + files:
            path = Path(folder, name)
            st = path.lstat()
            what = (
                ("link", os.readlink(path))
                if path.is_symlink()
                else ("file", path.read_bytes())
                if path.is_file()
                else ("dir",)
            )
            found[str(path.relative_to(root))] = (*what, stat.S_IMODE(st.st_mode))
    return found


def test_a_lockfile_is_assembled_as_npm_lays_it_out(tmp_path):
    tree = npm_tree(tmp_path / "npm")
    store = PackageStore(tmp_path / "store")
    assert store.save(tree) == 5
    assert store.save(tree) == 0  # kept once

    assembly = store.plan(MANIFEST, lockfile(), HERE)
    assert assembly is not None
    store.assemble(assembly, tmp_path / "new")
    ours, npms = listing(tmp_path / "new" / "node_modules"), listing(tree)
    hidden = ours.pop(".package-lock.json"), npms.pop(".package-lock.json")
    assert ours == npms  # folders, files, modes, the .bin link: as npm made them
    assert json.loads(hidden[0][1])["packages"] == json.loads(hidden[1][1])["packages"]
    # The skipped platform build, and what only it needed, are not there.
    assert sorted(installed_packages(lockfile()["packages"], HERE)) == [
        "node_modules/@scope/ui",
        "node_modules/@scope/ui-linux-x64",
        "node_modules/dep",
        "node_modules/tool",
        "node_modules/tool/node_modules/dep",
    ]


def test_a_package_npm_would_fetch_is_left_to_npm(tmp_path):
    store = PackageStore(tmp_path / "store")
    store.save(npm_tree(tmp_path / "npm"))
    missing = {**entry("node_modules/dep"), "integrity": integrity("another dep")}
    assert store.plan(MANIFEST, lockfile(**{"node_modules/dep": missing}), HERE) is None
    # A native build for another CPU is skipped here; on that CPU it is needed, and
    # no install here ever fetched it.
    arm = {"version": "3.0.0", "optional": True, "os": ["linux"], "cpu": ["arm64"],
           "integrity": integrity("the arm64 build")}  # fmt: skip
    ui = entry("node_modules/@scope/ui")
    ui["optionalDependencies"] = {**ui["optionalDependencies"], "@scope/ui-linux-arm64": "3"}
    lock = lockfile(**{"node_modules/@scope/ui": ui, "node_modules/@scope/ui-linux-arm64": arm})
    assert store.plan(MANIFEST, lock, HERE) is not None
    assert store.plan(MANIFEST, lock, Platform("linux", "arm64", "glibc")) is None


@pytest.mark.parametrize(
    "why, manifest, lock",
    [
        ("out of step", {**MANIFEST, "dependencies": {"tool": "^2"}}, lockfile()),
        ("workspaces", {**MANIFEST, "workspaces": ["a"]}, lockfile()),
        ("overrides", {**MANIFEST, "overrides": {"dep": "1.0.0"}}, lockfile()),
        ("lockfile v1", MANIFEST, {**lockfile(), "lockfileVersion": 1}),
        ("a path out", MANIFEST, lockfile(**{"node_modules/../../../etc": entry("node_modules/dep")})),
        ("a dot path", MANIFEST, lockfile(**{"node_modules/.": entry("node_modules/dep")})),
        ("not under node_modules", MANIFEST, lockfile(**{"lib/dep": entry("node_modules/dep")})),
        ("a link", MANIFEST, lockfile(**{"node_modules/dep": {**entry("node_modules/dep"), "link": True}})),
        ("a bundled package", MANIFEST, lockfile(**{"node_modules/dep": {**entry("node_modules/dep"), "inBundle": True}})),
        ("no integrity", MANIFEST, lockfile(**{"node_modules/dep": {"version": "1.0.0"}})),
        ("a bin out", MANIFEST, lockfile(**{"node_modules/tool": {**entry("node_modules/tool"), "bin": {"tool": "../../../../etc/passwd"}}})),
        ("an absolute bin", MANIFEST, lockfile(**{"node_modules/tool": {**entry("node_modules/tool"), "bin": {"tool": "/etc/passwd"}}})),
        ("a bin name with a path", MANIFEST, lockfile(**{"node_modules/tool": {**entry("node_modules/tool"), "bin": {"../../x": "bin/tool.js"}}})),
        ("a bin claimed twice", MANIFEST, lockfile(**{"node_modules/dep": {**entry("node_modules/dep"), "bin": {"tool": "index.js"}}})),
        ("a package for no platform", MANIFEST, lockfile(**{"node_modules/dep": {**entry("node_modules/dep"), "os": ["win32"]}})),
    ],
)  # fmt: skip
def test_lockfiles_it_cannot_reproduce_exactly_are_left_to_npm(tmp_path, why, manifest, lock):
    """Hostile or unusual lockfiles: no plan, so nothing is made from them here
    (npm then installs, or refuses, as it would have anyway)."""
    store = PackageStore(tmp_path / "store")
    store.save(npm_tree(tmp_path / "npm"))
    assert store.plan(manifest, lock, HERE) is None, why


def test_only_trees_that_npm_alone_wrote_are_kept(tmp_path):
    # A git dependency's prepare script may have run, even with scripts off.
    tree = npm_tree(tmp_path / "git")
    hidden = json.loads((tree / ".package-lock.json").read_text())
    hidden["packages"]["node_modules/from-git"] = {"resolved": "git+ssh://x/y.git#abc"}
    (tree / ".package-lock.json").write_text(json.dumps(hidden))
    store = PackageStore(tmp_path / "store")
    assert store.save(tree) == 0
    assert not store.root.exists() or not list(store.root.iterdir())

    # A folder with a link in it is not what npm extracts: that package is skipped.
    tree = npm_tree(tmp_path / "npm")
    (tree / "dep" / "passwd").symlink_to("/etc/passwd")
    assert store.save(tree) == 4
    assert store.plan(MANIFEST, lockfile(), HERE) is None  # so dep is left to npm


def test_the_store_keeps_the_most_recently_used(tmp_path):
    store = PackageStore(tmp_path / "store", keep=3)
    assert store.save(npm_tree(tmp_path / "npm")) == 5
    assert len(list(store.root.iterdir())) == 3


def test_assembled_files_are_copies_never_links_into_the_store(tmp_path):
    store = PackageStore(tmp_path / "store")
    store.save(npm_tree(tmp_path / "npm"), link=True)
    store.assemble(store.plan(MANIFEST, lockfile(), HERE), tmp_path / "new")
    made = tmp_path / "new/node_modules/dep/index.js"
    made.write_text("poisoned")
    kept = [p for p in store.root.rglob("index.js") if p.read_text() == "one"]
    assert len(kept) == 1 and made.stat().st_ino != kept[0].stat().st_ino


# -- kept trees, and the spare copy the next project takes --------------------------


def kept_tree(tmp_path: Path, fp: str = "fp") -> ModulesCache:
    cache = ModulesCache(tmp_path / "modules")
    app_dir = tmp_path / "first" / "app"
    (app_dir / "node_modules" / "dep").mkdir(parents=True)
    (app_dir / "node_modules" / "dep" / "index.js").write_text("one")
    mark(app_dir, fp)
    cache.save(fp, app_dir)
    return cache


def test_the_next_project_takes_the_spare_copy_by_a_rename_and_only_once(tmp_path):
    cache = kept_tree(tmp_path)
    assert cache.make_spare("fp") and not cache.make_spare("fp")  # one spare at a time
    spare = (cache.root / "fp" / SPARE / "dep" / "index.js").stat().st_ino
    kept = cache.tree("fp") / "dep" / "index.js"
    assert kept.stat().st_ino != spare  # a copy, not links into the kept tree

    taken, copied = tmp_path / "second" / "app", tmp_path / "third" / "app"
    for app_dir in (taken, copied):
        app_dir.mkdir(parents=True)
        assert cache.restore("fp", app_dir)
    assert (taken / "node_modules/dep/index.js").stat().st_ino == spare  # moved, not copied
    assert installed(taken) == installed(copied) == "fp"
    assert not (cache.root / "fp" / SPARE).exists()  # the third one copied

    # What a preview writes into the tree it took never reaches the kept one.
    (taken / "node_modules/dep/index.js").write_text("poisoned")
    assert kept.read_text() == "one"
    assert cache.make_spare("fp")
    assert (cache.root / "fp" / SPARE / "dep" / "index.js").read_text() == "one"


async def test_an_installer_makes_the_spare_after_a_tree_is_used(tmp_path, monkeypatch):
    installer = FakeBackend(cache_dir=str(tmp_path))._installer(run=None, route=None)
    kept_tree(tmp_path, "used")
    monkeypatch.setattr(Installer, "SPARE_TREE_DELAY", 0.0)
    installer._spare_tree_later("used")
    await asyncio.gather(*installer._spare_trees)
    assert (tmp_path / "modules" / "used" / SPARE / "dep" / "index.js").read_text() == "one"

    installer._spare_tree_later("unknown")  # nothing kept: nothing made, no error
    await asyncio.gather(*installer._spare_trees)
    assert sorted(os.listdir(tmp_path / "modules")) == ["used"]


# -- the real thing: npm in the sandbox image, a Jupyter server, Docker -----------


def app(note: str, **extra: bytes) -> bytes:
    manifest = json.loads((FIXTURES / "vite-react" / "package.json").read_text())
    manifest["description"] = f"{note} {time.time_ns()}"  # a lockfile no install has seen
    return zip_dir(FIXTURES / "vite-react", extra={"package.json": json.dumps(manifest), **extra})


@pytest.fixture
def reactbox_config(tmp_path):
    return {"cache_dir": str(tmp_path / "own-cache")}  # an empty store: npm installs first


@pytest.mark.docker
async def test_a_new_lockfile_of_fetched_packages_is_assembled_and_cannot_be_poisoned(
    api, jp_fetch, runtime, docker_client, owner, projects_dir
):
    await api.upload(app("first"), "first")
    await api.wait("first")
    first_log = (projects_dir / "first" / "install.log").read_text()
    assert "skipped" not in first_log  # npm ran

    since = await next_second()
    await api.upload(app("second"), "second")
    await api.wait("second")
    log = (projects_dir / "second" / "install.log").read_text()
    assert log.startswith("$ npm ci") and "skipped: every package of the lockfile" in log
    assert "install" not in containers_made(docker_client, owner, since)
    first = runtime.store.get("first").app_dir / "node_modules"
    second = runtime.store.get("second").app_dir / "node_modules"
    # .vite is each dev server's own, written as it optimises while we read.
    ours, npms = listing(second, (".vite",)), listing(first, (".vite",))
    assert {(second / p).lstat().st_uid for p in ours} == {(first / p).lstat().st_uid for p in npms}
    for kept in (ours, npms):
        kept.pop(".reactbox-installed")
        kept.pop(".package-lock.json")
    assert ours == npms

    # The dev server runs from it: the page's entry module, transformed, through the proxy.
    info = await api.get("second")
    r = await jp_fetch(*info["preview_url"].strip("/").split("/")[1:], "src", "main.jsx")
    assert b"createRoot" in r.body and b"import " in r.body

    # That preview rewrites a package in its node_modules; the next project assembled
    # from the store gets the package as npm fetched it.
    sh(docker_client.containers.get(engine_name(owner, projects_dir, "second")),
       "echo '/* poisoned */' >> node_modules/react/index.js")  # fmt: skip
    await api.upload(app("third"), "third")
    await api.wait("third")
    third = runtime.store.get("third").app_dir / "node_modules"
    assert "skipped: every package" in (projects_dir / "third" / "install.log").read_text()
    assert b"poisoned" in (second / "react/index.js").read_bytes()
    assert (third / "react/index.js").read_bytes() == (first / "react/index.js").read_bytes()
    assert b"poisoned" not in (third / "react/index.js").read_bytes()


CLSX = {
    "version": "2.1.1",
    "integrity": "sha512-eYm0QWBtUrBWZWG0d386OGAw16Z995PiOVo2B7bjWSbHedGl5e0ZWaq65kOGgUSNesEIDkB9ISbTg/JK9dhCZA==",
    "license": "MIT",
    "engines": {"node": ">=6"},
}


def with_clsx(note: str) -> bytes:
    """The fixture with one more dependency, in package.json and the lockfile."""
    manifest = json.loads((FIXTURES / "vite-react" / "package.json").read_text())
    manifest["description"] = f"{note} {time.time_ns()}"
    lock = json.loads((FIXTURES / "vite-react" / "package-lock.json").read_text())
    for deps in (manifest["dependencies"], lock["packages"][""]["dependencies"]):
        deps["clsx"] = "^2.1.1"
    lock["packages"]["node_modules/clsx"] = CLSX
    extra = {"package.json": json.dumps(manifest), "package-lock.json": json.dumps(lock)}
    return zip_dir(FIXTURES / "vite-react", extra=extra)


@pytest.mark.docker
async def test_a_lockfile_with_a_package_more_gets_the_rest_from_the_store(
    api, runtime, projects_dir
):
    await api.upload(app("first"), "first")  # npm: the store gets its packages
    await api.wait("first")
    await api.upload(with_clsx("one more"), "more")
    await api.wait("more")
    log = (projects_dir / "more" / "install.log").read_text()
    copied = re.search(r"(\d+) of (\d+) packages copied from earlier installs", log)
    assert copied and int(copied[1]) == int(copied[2]) - 1, log
    assert "npm install --prefer-offline" in log and "a clean install" not in log
    first = listing(runtime.store.get("first").app_dir / "node_modules")
    more = listing(runtime.store.get("more").app_dir / "node_modules")
    assert json.loads(more.pop("clsx/package.json")[1])["version"] == "2.1.1"
    hidden = json.loads(more[".package-lock.json"][1])["packages"]
    assert hidden["node_modules/clsx"]["integrity"] == CLSX["integrity"]
    for kept in (first, more):
        for name in [
            k for k in kept if k.startswith((".vite", "clsx", ".package-lock", ".reactbox"))
        ]:
            kept.pop(name)
    assert more == first  # the rest is the tree npm made for the app without clsx

    # Now the store has clsx too: the next such lockfile runs no npm.
    await api.upload(with_clsx("again"), "again")
    await api.wait("again")
    again = (projects_dir / "again" / "install.log").read_text()
    assert "skipped: every package of the lockfile copied" in again
