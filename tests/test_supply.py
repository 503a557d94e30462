"""Supply chain: dependencies come from the registry only, and no lifecycle script
runs, unless an admin says otherwise."""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURES, zip_dir
from test_archive import make_zip
from tornado.httpclient import HTTPClientError

from jupyter_reactbox import supply
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
    if fixed:
        with pytest.raises(UnsupportedApp, match="allow_vulnerable_vite"):
            supply.check(tmp_path)
        supply.check(tmp_path, supply.Policy(allow_vulnerable_vite=True))
    else:
        supply.check(tmp_path)


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
    assert [p.name for p in projects_dir.iterdir()] == []


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
def reactbox_config(request):
    return getattr(request, "param", {})


@pytest.mark.docker
@pytest.mark.parametrize(
    "reactbox_config, ran",
    [({}, []), ({"ignore_scripts": False}, ["install", "postinstall", "preinstall", "prepare"])],
    ids=["default", "scripts-allowed"],
    indirect=["reactbox_config"],
)
async def test_lifecycle_scripts_run_only_when_allowed(api, projects_dir, reactbox_config, ran):
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
    app = projects_dir / "scripts" / "app"
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
async def test_an_old_vite_is_refused_by_its_lockfile_and_after_the_install(
    api, projects_dir, docker_client, owner
):
    # Pinned in the lockfile: refused at upload, nothing written.
    lock = {"lockfileVersion": 3, "packages": {"": {}, "node_modules/vite": {"version": "6.0.0"}}}
    with pytest.raises(HTTPClientError) as err:
        await api.upload(
            make_zip({**OLD_VITE_APP, "package-lock.json": json.dumps(lock).encode()}), "old"
        )
    assert err.value.code == 422
    message = json.loads(err.value.response.body)["message"]
    assert "Vite 6.0.0" in message and "6.4.2" in message and "allow_vulnerable_vite" in message
    assert [p.name for p in projects_dir.iterdir()] == []

    # No lockfile: what npm installs is checked before a dev server runs it.
    r = await api.upload(make_zip(OLD_VITE_APP), "old")
    assert r.code == 201
    failed = await api.wait("old", "failed")
    assert "Vite 6.0.0" in failed["error"] and "6.4.2" in failed["error"], failed
    runs = docker_client.containers.list(
        all=True,
        filters={"label": [f"org.jupyter.reactbox.owner={owner}", "org.jupyter.reactbox.role=run"]},
    )
    assert runs == []
