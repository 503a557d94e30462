"""Supply chain: dependencies come from the registry only, and no lifecycle script
runs, unless an admin says otherwise."""

from __future__ import annotations

import json
import re

import pytest
from conftest import FIXTURES, app_of, written, zip_dir
from test_archive import make_zip
from tornado.httpclient import HTTPClientError

from jupyter_reactbox import supply
from jupyter_reactbox.backends.modules import pinned
from jupyter_reactbox.errors import UnsupportedApp

FIXTURE_PKG = json.loads((FIXTURES / "vite-react" / "package.json").read_text())


def with_deps(**deps: str) -> bytes:
    pkg = json.loads(json.dumps(FIXTURE_PKG))
    pkg["dependencies"].update(deps)
    return json.dumps(pkg, indent=2).encode()


def test_what_counts_as_outside_the_registry(tmp_path):
    app = tmp_path / "app"
    (app / "vendor" / "lib").mkdir(parents=True)
    deps = {
        "ok-range": "^1.2.3",
        "ok-tag": "latest",
        "ok-alias": "npm:left-pad@^1.3.0",
        "ok-local": "file:./vendor/lib",
        "git-https": "git+https://example.invalid/a/b.git",
        "git-ssh": "git+ssh://git@example.invalid/a/b.git#main",
        "github": "github:user/repo",
        "shorthand": "user/repo#v1",
        "tarball": "https://example.invalid/pkg-1.0.0.tgz",
        "up-and-out": "file:../../outside",
        "linked": "link:/usr/lib/node_modules/x",
    }
    (app / "package.json").write_text(json.dumps({"dependencies": deps}))
    lock = {
        "packages": {
            "": {"dependencies": {}},
            "node_modules/fine": {"resolved": "https://registry.invalid/fine/-/fine-1.0.0.tgz"},
            "node_modules/sneaky": {"resolved": "git+ssh://git@example.invalid/s.git#abc"},
        }
    }
    (app / "package-lock.json").write_text(json.dumps(lock))
    found = supply.outside_registry(app)
    assert [f.split(":", 1)[0] for f in found] == [
        "git-https",
        "git-ssh",
        "github",
        "shorthand",
        "tarball",
        "up-and-out",
        "linked",
        "node_modules/sneaky",
    ]
    with pytest.raises(UnsupportedApp, match="allow_remote_dependencies") as err:
        supply.check(app)
    assert "git-https: git+https://example.invalid/a/b.git" in str(err.value)
    assert "and 3 more" in str(err.value)
    supply.check(app, supply.Policy(allow_remote_dependencies=True))  # an admin may allow it


@pytest.mark.parametrize(
    ("version", "fixed"),
    [
        ("4.5.14", "Vite 5 or later"),
        ("5.4.19", "5.4.20"),
        ("5.4.20", None),
        ("6.3.9", "6.4.2"),
        ("6.4.1", "6.4.2"),
        ("6.4.2", None),
        ("7.3.1", "7.3.2"),
        ("7.3.2", None),
        ("8.0.4", "8.0.5"),
        ("8.0.5", None),
        ("8.3.8", None),
        ("9.0.0-beta.1", None),
    ],
)
def test_vite_releases_with_known_file_leaks(tmp_path, version, fixed):
    problem = supply.vite_problem(version)
    assert (problem is None) == (fixed is None), problem
    if fixed:
        assert fixed in problem and version in problem
    lock = {"packages": {"": {}, "node_modules/vite": {"version": version}}}
    (tmp_path / "package-lock.json").write_text(json.dumps(lock))
    assert supply.vite_version(tmp_path, installed=False) == version
    pin = supply.vite_pin({"package-lock.json": json.dumps(lock).encode()})
    if fixed and fixed[0].isdigit():  # a patched release of its own line exists
        assert pin == supply.VitePin(version, fixed)
        supply.check(tmp_path)  # installed with the pin, not refused
    elif fixed:  # Vite 4 and older: no patched release; refused, saying what to change
        assert pin is None
        with pytest.raises(UnsupportedApp, match=r'set "vite": "\^5.4.20" in package.json'):
            supply.check(tmp_path)
        supply.check(tmp_path, supply.Policy(allow_vulnerable_vite=True))
    else:
        assert pin is None
        supply.check(tmp_path)
    if fixed:  # whatever got installed is checked again before a dev server runs it
        modules = tmp_path / "node_modules" / "vite"
        modules.mkdir(parents=True)
        (modules / "package.json").write_text(json.dumps({"version": version}))
        with pytest.raises(UnsupportedApp, match="allow_vulnerable_vite"):
            supply.check(tmp_path, installed=True)


@pytest.mark.parametrize(
    "name, data",
    [
        ("yarn.lock", b'"vite@^6.0.0":\n  version "6.0.3"\n  resolved "https://r.invalid/x.tgz"\n'),
        ("yarn.lock", b'"vite@npm:^6.0.0":\n  version: 6.0.3\n  resolution: "vite@npm:6.0.3"\n'),
        ("pnpm-lock.yaml", b"lockfileVersion: '9.0'\npackages:\n  vite@6.0.3:\n    resolution: {}\n"),
        ("pnpm-lock.yaml", b"lockfileVersion: '6.0'\npackages:\n  /vite@6.0.3(less@4.0.0):\n"),
        ("package.json", b'{"devDependencies": {"vite": "6.0.3"}}'),
    ],
)  # fmt: skip
def test_the_locked_vite_is_read_from_every_lockfile(name, data):
    files = {"package.json": b"{}", name: data}
    assert supply.locked_vite(files) == "6.0.3"
    assert supply.vite_pin(files) == supply.VitePin("6.0.3", "6.4.2")
    assert supply.vite_pin(files, supply.Policy(allow_vulnerable_vite=True)) is None
    assert supply.locked_vite({"package.json": b'{"devDependencies": {"vite": "^6.0.3"}}'}) is None


@pytest.mark.parametrize(
    "deps, changes",
    [
        (
            {"vite": "~4.3.9", "@vitejs/plugin-react-swc": "^3.3.2", "react": "^18"},
            ["vite ~4.3.9 -> ^5.4.20", "@vitejs/plugin-react-swc ^3.3.2 -> ^3.11.0"],
        ),
        (
            {"vite": "^3.0.0", "@vitejs/plugin-react": "^2.0.0"},
            [
                "vite ^3.0.0 -> ^5.4.20",
                "@vitejs/plugin-react ^2.0.0 -> ^4.7.0",
            ],
        ),
        ({"vite": "4.2.1"}, ["vite 4.2.1 -> ^5.4.20"]),
        ({"vite": "^5.0.0", "@vitejs/plugin-react": "^4.0.0"}, None),  # pinned, not upgraded
        ({"react": "^18"}, None),
    ],
)
def test_an_unmaintained_vite_is_upgraded_with_its_react_plugin_only(deps, changes):
    manifest = json.dumps({"name": "x", "devDependencies": deps}, indent=4).encode()
    upgrade = supply.vite_upgrade(manifest)
    if changes is None:
        assert upgrade is None
        return
    assert list(upgrade.changes) == changes
    after = json.loads(upgrade.manifest)
    assert after["name"] == "x" and after["devDependencies"].get("react") == deps.get("react")
    assert upgrade.manifest.startswith(b'{\n    "name"')  # the file's own indent
    assert supply.vite_line({"package.json": upgrade.manifest}) == 5


def test_a_bun_lock_is_held_to_the_same_rules(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps(FIXTURE_PKG))
    good = {
        "react": ["react@19.2.0", "", {}, "sha512-x"],
        "@scope/pkg": ["@scope/pkg@1.0.0", "https://r.invalid/@scope/pkg/-/pkg-1.0.0.tgz", {}],
        "@acme/ui": ["@acme/ui@workspace:packages/ui"],
    }
    lock = {"lockfileVersion": 1, "workspaces": {"": {"name": "x"}}, "packages": good}
    # bun writes trailing commas.
    (app / "bun.lock").write_text(json.dumps(lock, indent=2).replace("}\n", "},\n"))
    supply.check(app)
    swapped = {**good, "lodash": ["lodash@4.17.21", "https://r.invalid/evil/-/evil-1.0.0.tgz"]}
    (app / "bun.lock").write_text(json.dumps({**lock, "packages": swapped}))
    with pytest.raises(UnsupportedApp, match=r"bun.lock: lodash: lodash@4.17.21 is locked to"):
        supply.check(app)
    git = {**good, "left": ["left@github:someone/left#abc123", {}, "someone-left-abc123"]}
    (app / "bun.lock").write_text(json.dumps({**lock, "packages": git}))
    with pytest.raises(UnsupportedApp, match=r"bun.lock: left: github:someone/left#abc123"):
        supply.check(app)
    (app / "bun.lock").write_text("{ not json")
    with pytest.raises(UnsupportedApp, match=r"bun.lock cannot be read"):
        supply.check(app)


def test_members_of_a_workspace_are_checked_and_may_link_each_other(tmp_path):
    app = tmp_path / "app"
    for member in ("apps/web", "packages/ui", "tools/x"):
        (app / member).mkdir(parents=True)
    (app / "package.json").write_text(json.dumps({"workspaces": ["apps/*", "packages/*"]}))
    web = {
        "ui": "workspace:*",
        "ui-file": "file:../../packages/ui",
        "ok": "^1.0.0",
        "git": "git+https://example.invalid/a/b.git",
        "escape": "file:../../../outside",
    }
    (app / "apps/web/package.json").write_text(json.dumps({"dependencies": web}))
    (app / "packages/ui/package.json").write_text(json.dumps({"dependencies": {"gh": "u/r"}}))
    # Not a member: what it asks for is no install's business.
    (app / "tools/x/package.json").write_text(json.dumps({"dependencies": {"gh": "u/r"}}))
    lock = {
        "packages": {
            "node_modules/ui": {"resolved": "packages/ui", "link": True},
            "node_modules/away": {"resolved": "../../elsewhere", "link": True},
        }
    }
    (app / "package-lock.json").write_text(json.dumps(lock))
    assert supply.outside_registry(app) == [
        "apps/web: git: git+https://example.invalid/a/b.git",
        "apps/web: escape: file:../../../outside",
        "packages/ui: gh: u/r",
        "node_modules/away: ../../elsewhere",
    ]


@pytest.mark.parametrize(
    "spec, line",
    [("^4.3.2", 4), ("~3.1", 3), ("4.x", 4), ("2", 2), ("4.5.3", 4), (">=4", None),
     ("^4 || ^5", None), ("latest", None), ("npm:rolldown-vite@7", None)],
)  # fmt: skip
def test_a_range_within_one_old_line_is_refused_at_upload(tmp_path, spec, line):
    manifest = json.dumps({"devDependencies": {"vite": spec}}).encode()
    assert supply.vite_line({"package.json": manifest}) == line
    (tmp_path / "package.json").write_bytes(manifest)
    if line is None:
        supply.check(tmp_path)
    else:
        with pytest.raises(UnsupportedApp, match=f"Vite {re.escape(spec)} is no longer"):
            supply.check(tmp_path)


def test_a_pin_overrides_the_package_for_the_app_and_its_dependents():
    manifest = json.dumps({"devDependencies": {"vite": "6.0.3", "vitest": "3"}}).encode()
    assert json.loads(pinned(manifest, {"vite": "6.4.2"}, "npm")) == {
        "devDependencies": {"vite": "6.4.2", "vitest": "3"},
        "overrides": {"vite": "6.4.2"},
    }
    assert json.loads(pinned(manifest, {"vite": "6.4.2"}, "yarn"))["resolutions"] == {
        "vite": "6.4.2"
    }
    assert json.loads(pinned(manifest, {"vite": "6.4.2"}, "pnpm"))["pnpm"] == {
        "overrides": {"vite": "6.4.2"}
    }


REGISTRY = "https://registry.example.invalid"


@pytest.mark.parametrize(
    "lockfile, text, entry",
    [
        (
            "package-lock.json",
            json.dumps(
                {
                    "lockfileVersion": 3,
                    "packages": {
                        "": {"dependencies": {"lodash": "^4.17.21"}},
                        "node_modules/lodash": {
                            "version": "4.17.21",
                            "resolved": f"{REGISTRY}/left-pad/-/left-pad-1.3.0.tgz",
                        },
                    },
                }
            ),
            "node_modules/lodash",
        ),
        (  # a scope in front of the right name and file is another package's path
            "package-lock.json",
            json.dumps(
                {
                    "lockfileVersion": 3,
                    "packages": {
                        "node_modules/lodash": {
                            "version": "4.17.21",
                            "resolved": f"{REGISTRY}/@evil/lodash/-/lodash-4.17.21.tgz",
                            "integrity": "sha512-AAAA",
                        },
                    },
                }
            ),
            "node_modules/lodash",
        ),
        (  # the right package, another release than the entry says
            "package-lock.json",
            json.dumps(
                {
                    "lockfileVersion": 1,
                    "dependencies": {
                        "react": {
                            "version": "19.3.1",
                            "dependencies": {
                                "loose": {
                                    "version": "1.0.0",
                                    "resolved": f"{REGISTRY}/loose/-/loose-0.0.1.tgz",
                                },
                            },
                        },
                    },
                }
            ),
            "node_modules/react/node_modules/loose",
        ),
        (
            "yarn.lock",
            "# yarn lockfile v1\n\n"
            'lodash@^4.17.21:\n  version "4.17.21"\n'
            f'  resolved "{REGISTRY}/left-pad/-/left-pad-1.3.0.tgz#abc"\n',
            "lodash@^4.17.21",
        ),
        (
            "pnpm-lock.yaml",
            "lockfileVersion: '9.0'\n\npackages:\n\n"
            f"  lodash@4.17.21:\n    resolution: {{tarball: {REGISTRY}/left-pad/-/left-pad-1.3.0.tgz}}\n",
            "lodash@4.17.21",
        ),
    ],
)
def test_a_lockfile_tarball_of_another_package_is_refused_naming_the_entry(
    tmp_path, lockfile, text, entry
):
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps(FIXTURE_PKG))
    (app / lockfile).write_text(text)
    [found] = supply.mismatched_tarballs(app)
    assert found.startswith(f"{lockfile}: {entry}: ")
    with pytest.raises(UnsupportedApp, match="the tarball of another package") as err:
        supply.check(app)
    assert entry in str(err.value)


def test_registry_tarballs_of_their_own_package_pass_on_any_host_and_prefix(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps(FIXTURE_PKG))
    lock = {"lockfileVersion": 3, "packages": {
        "node_modules/lodash": {
            "version": "4.17.21", "resolved": f"{REGISTRY}/lodash/-/lodash-4.17.21.tgz",
        },
        "node_modules/@babel/core": {
            "version": "7.2.0",
            "resolved": "https://mirror.example.invalid/npm/@babel/core/-/core-7.2.0.tgz",
        },
        "node_modules/pad": {  # an alias: installed as "pad", the package "left-pad"
            "name": "left-pad", "version": "1.3.0",
            "resolved": f"{REGISTRY}/left-pad/-/left-pad-1.3.0.tgz",
        },
        "node_modules/plain": {"version": "1.0.0"},  # no URL: fetched by name and version
    }}  # fmt: skip
    (app / "package-lock.json").write_text(json.dumps(lock))
    (app / "yarn.lock").write_bytes(
        (FIXTURES / "managers" / "yarn-classic" / "yarn.lock").read_bytes()
    )
    assert supply.mismatched_tarballs(app) == []
    supply.check(app)


@pytest.mark.docker
async def test_a_lockfile_that_swaps_a_tarball_is_refused_at_upload(api, projects_dir):
    lock = json.loads((FIXTURES / "vite-react" / "package-lock.json").read_text())
    lock["packages"]["node_modules/react"]["resolved"] = f"{REGISTRY}/preact/-/preact-10.0.0.tgz"
    data = zip_dir(FIXTURES / "vite-react", extra={"package-lock.json": json.dumps(lock).encode()})
    with pytest.raises(HTTPClientError) as err:
        await api.upload(data, "shop")
    assert err.value.code == 422
    message = json.loads(err.value.response.body)["message"]
    assert "package-lock.json: node_modules/react: react@19.3.1 is locked to the tarball" in message
    assert written(projects_dir) == []


@pytest.mark.docker
async def test_a_git_dependency_is_refused_at_upload_and_writes_nothing(api, projects_dir):
    data = zip_dir(
        FIXTURES / "vite-react",
        extra={"package.json": with_deps(leftpad="github:left-pad/left-pad")},
    )
    with pytest.raises(HTTPClientError) as err:
        await api.upload(data, "shop")
    assert err.value.code == 422
    message = json.loads(err.value.response.body)["message"]
    assert "leftpad: github:left-pad/left-pad" in message
    assert written(projects_dir) == []


@pytest.mark.docker
async def test_an_edit_that_adds_one_is_refused_before_the_install(
    api, jp_fetch, docker_client, owner
):
    info = await api.upload_running()
    await jp_fetch(
        "reactbox",
        "api",
        "projects",
        "shop",
        "files",
        "package.json",
        method="PUT",
        body=with_deps(evil="git+https://example.invalid/evil.git"),
    )
    await jp_fetch("reactbox", "api", "projects", "shop", "restart", method="POST", body=b"")
    failed = await api.wait(info["id"], "failed")
    assert "evil: git+https://example.invalid/evil.git" in failed["error"]
    # No install container was made for it (installs carry the role label).
    installs = docker_client.containers.list(
        all=True,
        filters={
            "label": [f"org.jupyter.reactbox.owner={owner}", "org.jupyter.reactbox.role=install"]
        },
    )
    assert installs == []


@pytest.fixture
def backend_config(request):
    return getattr(request, "param", {})


@pytest.mark.docker
@pytest.mark.parametrize(
    "backend_config, ran",
    [({}, []), ({"ignore_scripts": False}, ["install", "postinstall", "preinstall", "prepare"])],
    ids=["default", "scripts-allowed"],
    indirect=["backend_config"],
)
async def test_lifecycle_scripts_run_only_when_allowed(api, projects_dir, backend_config, ran):
    pkg = json.loads(with_deps())
    # Installs run in a staging copy of the manifest and lockfile, and only the
    # node_modules it makes is kept: the marker goes there.
    marker = (
        "const fs = require('fs'); fs.mkdirSync('node_modules', {recursive: true}); "
        "fs.writeFileSync('node_modules/SCRIPT-RAN-' + process.env.npm_lifecycle_event, 'x')"
    )
    pkg["scripts"].update(
        {
            name: f'node -e "{marker}"'
            for name in ("preinstall", "install", "postinstall", "prepare")
        }
    )
    data = zip_dir(FIXTURES / "vite-react", extra={"package.json": json.dumps(pkg).encode()})
    r = await api.upload(data, "scripts")
    info = await api.wait(json.loads(r.body)["id"])
    assert info["status"] == "running"  # installed (a real npm ci) and serving
    app = app_of(projects_dir, "scripts")
    assert (app / "node_modules" / "vite").is_dir()
    found = app.glob("node_modules/SCRIPT-RAN-*")
    assert sorted(p.name.removeprefix("SCRIPT-RAN-") for p in found) == ran


OLD_VITE_APP = {
    "package.json": json.dumps(
        {
            "name": "old",
            "private": True,
            "scripts": {"dev": "vite"},
            "devDependencies": {"vite": "6.0.0"},
        }
    ).encode(),
    "index.html": b'<!doctype html><div id="root"></div><script type="module" src="/main.js"></script>',
    "main.js": b"document.getElementById('root').textContent = 'old vite'\n",
}


@pytest.mark.docker
async def test_an_old_vite_runs_on_its_lines_patched_release_and_older_lines_are_refused(
    api, jp_fetch, projects_dir, docker_client, owner
):
    # Vite 6.0.0 in the lockfile: installed as 6.4.2, said in the log and the
    # project's JSON; the app's own package.json and lockfile are untouched.
    lock = {"lockfileVersion": 3, "packages": {"": {}, "node_modules/vite": {"version": "6.0.0"}}}
    files = {**OLD_VITE_APP, "package-lock.json": json.dumps(lock).encode()}
    r = await api.upload(make_zip(files), "old")
    info = await api.wait(json.loads(r.body)["id"])
    assert info["notes"] == [supply.VitePin("6.0.0", "6.4.2").note]
    app = app_of(projects_dir, "old")
    assert json.loads((app / "node_modules" / "vite" / "package.json").read_text())["version"] == (
        "6.4.2"
    )
    for name in ("package.json", "package-lock.json"):
        assert (app / name).read_bytes() == files[name]
    log = (await jp_fetch("reactbox", "api", "projects", "old", "logs")).body.decode()
    assert "$ npm install --no-audit" in log and "(with vite 6.4.2 in place of the app's)" in log

    # Vite 4: no patched release of its line. Refused at upload, nothing written.
    pkg = json.loads(OLD_VITE_APP["package.json"])
    pkg["devDependencies"]["vite"] = "4.5.3"
    with pytest.raises(HTTPClientError) as err:
        await api.upload(make_zip({**OLD_VITE_APP, "package.json": json.dumps(pkg).encode()}), "v4")
    assert err.value.code == 422
    message = json.loads(err.value.response.body)["message"]
    assert "Vite 4.5.3" in message and 'set "vite": "^5.4.20" in package.json' in message
    assert written(projects_dir) == ["old"]

    # A range (no lockfile) that resolves to a vulnerable release: what npm installed
    # is checked before a dev server runs it.
    pkg["devDependencies"]["vite"] = "~6.0.0"
    r = await api.upload(make_zip({**OLD_VITE_APP, "package.json": json.dumps(pkg).encode()}), "r")
    failed = await api.wait("r", "failed")
    assert "Vite 6.0." in failed["error"] and "6.4.2" in failed["error"], failed
    runs = docker_client.containers.list(
        all=True,
        filters={
            "label": [
                f"org.jupyter.reactbox.owner={owner}",
                "org.jupyter.reactbox.role=run",
                "org.jupyter.reactbox.project=r",
            ]
        },
    )
    assert runs == []
