"""The REST API and the preview proxy through a real Jupyter server (base URL
``/a%40b/``): on the fake backend (tests/fakes.py, no engine), and an app's life
on real Docker."""

from __future__ import annotations

import json
from zipfile import ZIP_STORED

import pytest
from conftest import FIXTURES, app_of, written, zip_dir
from fakes import seen
from test_archive import PKG, encrypted, make_zip
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from jupyter_reactbox import history

ROUTES = [
    ("GET", ("projects",)),
    ("POST", ("projects",)),
    ("GET", ("projects", "shop")),
    ("DELETE", ("projects", "shop")),
    ("POST", ("projects", "shop", "start")),
    ("POST", ("projects", "shop", "stop")),
    ("POST", ("projects", "shop", "restart")),
    ("POST", ("projects", "shop", "heartbeat")),
    ("GET", ("projects", "shop", "events")),
    ("GET", ("projects", "shop", "logs")),
    ("POST", ("projects", "shop", "check")),
    ("GET", ("projects", "shop", "screenshot")),
    ("GET", ("projects", "shop", "export")),
    ("GET", ("projects", "shop", "files")),
    ("GET", ("projects", "shop", "files", "src", "App.jsx")),
    ("PUT", ("projects", "shop", "files", "src", "App.jsx")),
    ("PUT", ("projects", "shop", "data", "sales")),
    ("DELETE", ("projects", "shop", "data", "sales")),
    ("GET", ("projects", "shop", "bridge")),
    ("DELETE", ("projects", "shop", "files", "src", "App.jsx")),
    ("PATCH", ("projects", "shop", "files", "src", "App.jsx")),
    ("GET", ("projects", "shop", "history")),
    ("POST", ("projects", "shop", "restore")),
    ("PUT", ("projects", "shop", "points", "start")),
    ("DELETE", ("projects", "shop", "points", "start")),
]


@pytest.mark.parametrize("method, path", ROUTES)
async def test_every_api_route_requires_authentication(jp_fetch, method, path):
    body = b"PK" if method in ("POST", "PUT", "PATCH") else None
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch(
            "reactbox", "api", *path, method=method, body=body, headers={"Authorization": ""}
        )
    assert err.value.code == 403


BAD_UPLOADS = {
    "not a zip": (b"this is not a zip", 400, "not a ZIP"),
    "empty": (b"", 400, "empty"),
    "slip": (make_zip({"package.json": PKG, "../../evil.js": b"x"}), 400, "outside the app"),
    "absolute": (make_zip({"package.json": PKG, "/tmp/evil.js": b"x"}), 400, "absolute path"),
    "symlink": (
        make_zip({"package.json": PKG, "src/l": (b"/etc/passwd", 0o120777)}),
        400,
        "symbolic link",
    ),
    "bomb": (make_zip({"package.json": PKG, "z.js": b"0" * (60 << 20)}), 413, "ZIP bomb"),
    "too many entries": (
        make_zip({"package.json": PKG, **{f"f{i}": b"" for i in range(10_001)}}),
        413,
        "entries",
    ),
    "no package.json": (make_zip({"src/App.jsx": b"x"}), 400, "no package.json"),
    "duplicate names": (make_zip({"package.json": PKG, "./package.json": b"{}"}), 400, "two"),
    "backslash": (make_zip({"package.json": PKG, "src\\..\\..\\x.js": b"x"}), 400, "backslash"),
    "NUL in a name": (
        make_zip({"package.json": PKG, "src/aQ.js": b"x"}).replace(b"src/aQ.js", b"src/a\x00.js"),
        400,
        "NUL",
    ),
    "encrypted": (
        encrypted(make_zip({"package.json": PKG}, compression=ZIP_STORED)),
        400,
        "encrypted",
    ),
    "nested archive": (make_zip({"app.zip": make_zip({"package.json": PKG})}), 400, "another"),
    "unsupported": (make_zip({"package.json": b'{"dependencies": {}}'}), 422, "Cannot tell"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
async def test_bad_uploads_are_4xx_and_write_nothing(api, projects_dir, case):
    data, code, message = BAD_UPLOADS[case]
    with pytest.raises(HTTPClientError) as err:
        await api.upload(data, "bad")
    assert err.value.code == code
    assert message in json.loads(err.value.response.body)["message"]
    assert written(projects_dir) == []


async def test_upload_checks_name_and_type(api, jp_fetch, projects_dir):
    with pytest.raises(HTTPClientError) as err:
        await api.upload(make_zip({"package.json": PKG}), "!!!")
    assert err.value.code == 400
    assert "not a usable project name" in json.loads(err.value.response.body)["message"]
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch(
            "reactbox",
            "api",
            "projects",
            method="POST",
            params={"name": "x"},
            body=b"{}",
            headers={"Content-Type": "application/json"},
        )
    assert err.value.code == 415
    assert written(projects_dir) == []


async def test_unknown_project_is_404(jp_fetch):
    for path in (("projects", "nope"), ("projects", "nope", "logs")):
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("reactbox", "api", *path)
        assert err.value.code == 404
        assert "No project 'nope'" in json.loads(err.value.response.body)["message"]


@pytest.mark.docker
async def test_vite_app_lifecycle(api, jp_fetch, jp_base_url, projects_dir, docker_client, owner):
    # A GitHub "Download ZIP": one wrapping folder, uploaded as multipart.
    data = zip_dir(FIXTURES / "vite-react", wrap="vite-react-main")
    boundary = "reactbox-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="vite-react-main.zip"\r\nContent-Type: application/zip\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    r = await jp_fetch(
        "reactbox",
        "api",
        "projects",
        method="POST",
        body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.code == 201
    created = json.loads(r.body)
    assert created["id"] == "vite-react-main"
    assert created["framework"] == "vite"
    assert created["status"] in ("installing", "starting")
    assert r.headers["Location"] == f"{jp_base_url}reactbox/api/projects/vite-react-main"

    # The same name again is a conflict, and changes nothing.
    with pytest.raises(HTTPClientError) as err:
        await api.upload(data, "vite-react-main")
    assert err.value.code == 409

    info = await api.wait("vite-react-main")
    token = info["preview_url"].rstrip("/").rsplit("/", 1)[1]
    assert info["preview_url"] == f"{jp_base_url}reactbox/preview/vite-react-main/{token}/"
    assert len(token) >= 32

    listed = json.loads((await jp_fetch("reactbox", "api", "projects")).body)["projects"]
    assert [p["id"] for p in listed] == ["vite-react-main"]

    app_dir = app_of(projects_dir, "vite-react-main")
    log = (await jp_fetch("reactbox", "api", "projects", "vite-react-main", "logs")).body.decode()
    assert "npm ci" in log and "VITE" in log
    # The import is the first commit of the project's history, kept beside the
    # work tree, out of the container's reach.
    assert [c.message for c in history.log(app_dir)] == ["Import uploaded app"]
    assert not (app_dir / ".git").exists()

    # Stop: the dev server stops; its container is kept, and with it the link.
    selector = {"label": f"org.jupyter.reactbox.owner={owner}"}

    def listed(**kw):  # the project's containers; not the spare waiting for the next one
        found = docker_client.containers.list(filters=selector, **kw)
        return [c for c in found if not c.name.endswith(".spare")]

    r = await jp_fetch(
        "reactbox", "api", "projects", "vite-react-main", "stop", method="POST", body=b""
    )
    assert r.code == 202
    stopped = await api.get("vite-react-main")
    assert (stopped["status"], stopped["preview_url"]) == ("stopped", info["preview_url"])
    assert listed() == []
    [kept] = listed(all=True)
    assert kept.status == "exited"

    # Start again: nothing to install, the same container and link.
    r = await jp_fetch(
        "reactbox", "api", "projects", "vite-react-main", "start", method="POST", body=b""
    )
    assert r.code == 202
    again = await api.wait("vite-react-main")
    assert again["preview_url"] == info["preview_url"]
    assert again["detail"] is None
    assert [c.id for c in listed()] == [kept.id]

    # Restart: a new container and a new link; the old link is dead.
    r = await jp_fetch(
        "reactbox", "api", "projects", "vite-react-main", "restart", method="POST", body=b""
    )
    assert r.code == 202
    fresh = await api.wait("vite-react-main")
    assert fresh["preview_url"] != info["preview_url"]
    assert [c.id for c in listed()] != [kept.id]

    r = await jp_fetch("reactbox", "api", "projects", "vite-react-main", method="DELETE")
    assert r.code == 204
    assert not (projects_dir / "vite-react-main").exists()
    assert listed(all=True) == []


@pytest.mark.docker
async def test_restarted_server_reattaches_running_preview(api, runtime, jp_fetch):
    info = await api.upload_running()
    # What a fresh server process knows: nothing but the engine's labels.
    runtime.previews.clear()
    assert (await api.get("shop"))["status"] == "stopped"
    await runtime.recover()
    assert await api.get("shop") == info


async def test_files_and_data_check_their_input_and_write_nothing_when_refused(
    jp_fetch, runtime, server_url, jp_base_url, jp_serverapp
):
    """Hand edits and notebook data: refused input is a 4xx with a reason, and the
    project stays exactly as it was."""
    project = runtime.store.import_zip(zip_dir(FIXTURES / "vite-react"), "shop")
    app = project.app_dir

    def snapshot() -> dict[str, bytes]:
        return {
            p.relative_to(app).as_posix(): p.read_bytes()
            for p in sorted(app.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(app).parts
        }

    async def call(method, *path, body=None, raw=False):
        try:
            r = await jp_fetch(
                "reactbox", "api", "projects", "shop", *path, method=method, body=body
            )
            return r.code, r.body if raw else (json.loads(r.body) if r.body else None)
        except HTTPClientError as exc:
            return exc.code, json.loads(exc.response.body)["message"]

    code, listing = await call("GET", "files")
    assert code == 200 and "src/App.jsx" in listing["files"] and "package.json" in listing["files"]
    code, text = await call("GET", "files", "src", "App.jsx", raw=True)
    assert code == 200 and text == (app / "src" / "App.jsx").read_bytes()

    before = snapshot()
    head = history.head(app)
    refused = [
        (("PUT", "files", "src", "50%.jsx"), b"export default (", 422, "src/50%.jsx:1"),
        (("PUT", "files", ".git", "config"), b"x", 422, ".git and node_modules"),
        (("PUT", "files", "src", "App.jsx"), b"export default (", 422, "syntax error"),
        (("PUT", "files", "src", "App.jsx"), b"\xff\xfe", 415, "UTF-8"),
        (("GET", "files", "src", "Nope.jsx"), None, 404, "no file"),
        (("GET", "files", "src", "assets", "hero.png"), None, 415, "not a UTF-8 text"),
        (("PUT", "data", "sales"), b"{not json", 400, "not JSON"),
        (("PUT", "data", "bad.name"), b"[]", 400, "cannot name data"),
        (("DELETE", "data", "sales"), None, 404, "No data named"),
    ]
    for (method, *path), body, status, words in refused:
        code, message = await call(method, *path, body=body)
        assert code == status, (path, code, message)
        assert words in message, (path, message)
    assert snapshot() == before and history.head(app) == head
    # A path that leaves the project, as raw bytes on the wire (no client normalising it).
    for raw in ("files/..%2Fproject.json", "files/src/..%2F..%2F..%2Fetc%2Fpasswd"):
        r = await AsyncHTTPClient().fetch(
            f"{server_url}{jp_base_url}reactbox/api/projects/shop/{raw}",
            method="PUT",
            body=b"x",
            headers={"Authorization": f"token {jp_serverapp.identity_provider.token}"},
            raise_error=False,
        )
        assert r.code == 422 and b"only paths inside the project" in r.body, r.body
    assert snapshot() == before and history.head(app) == head

    # Accepted: a hand edit is one commit; data is a file outside history.
    new = (app / "src" / "App.jsx").read_text().replace("Get started", "Welcome")
    code, body = await call("PUT", "files", "src", "App.jsx", body=new.encode())
    assert code == 200 and body["commit"] == history.head(app)
    assert history.log(app)[0].message == "Edit src/App.jsx by hand"
    code, body = await call("PUT", "data", "sales", body=b'[{"units": 3}]')
    assert (code, body["path"]) == (200, "src/reactbox-data/sales.json")
    assert history.diff(app, "HEAD") == ""  # the data file is not a change to commit
    code, _ = await call("DELETE", "data", "sales")
    assert code == 204 and not (app / "src/reactbox-data/sales.json").exists()


# -- with no engine: the fake backend's dev servers (tests/fakes.py) ---------------


async def test_an_apps_life_through_the_api(api, jp_fetch, jp_base_url, projects_dir, runtime):
    """Upload, run, stop, start, restart and delete through the API: the server's
    side of each verb, whatever runs the dev server."""
    r = await api.upload(zip_dir(FIXTURES / "vite-react"), "shop")
    assert r.code == 201
    assert r.headers["Location"] == f"{jp_base_url}reactbox/api/projects/shop"
    assert json.loads(r.body)["status"] in ("installing", "starting", "running")
    with pytest.raises(HTTPClientError) as err:  # the same name again changes nothing
        await api.upload(zip_dir(FIXTURES / "vite-react"), "shop")
    assert err.value.code == 409

    info = await api.wait("shop")
    assert info["framework"] == "vite"
    token = info["preview_url"].rstrip("/").rsplit("/", 1)[1]
    assert info["preview_url"] == f"{jp_base_url}reactbox/preview/shop/{token}/"
    listed = json.loads((await jp_fetch("reactbox", "api", "projects")).body)["projects"]
    assert [p["id"] for p in listed] == ["shop"]
    assert [c.message for c in history.log(app_of(projects_dir, "shop"))] == ["Import uploaded app"]

    async def verb(name: str) -> int:
        r = await jp_fetch("reactbox", "api", "projects", "shop", name, method="POST", body=b"")
        return r.code

    backend = runtime.backend
    assert await verb("stop") == 202
    stopped = await api.get("shop")
    assert (stopped["status"], stopped["preview_url"]) == ("stopped", info["preview_url"])
    assert "shop" not in backend.servers
    assert await verb("start") == 202
    assert (await api.wait("shop"))["preview_url"] == info["preview_url"]
    assert await verb("restart") == 202
    fresh = await api.wait("shop")
    assert fresh["preview_url"] != info["preview_url"]

    r = await jp_fetch("reactbox", "api", "projects", "shop", method="DELETE")
    assert r.code == 204
    assert not (projects_dir / "shop").exists()
    assert "shop" not in backend.servers and "shop" not in backend.kept
    with pytest.raises(HTTPClientError) as err:
        await api.get("shop")
    assert err.value.code == 404


async def test_the_proxy_passes_on_no_credential_and_sandboxes_the_page(
    api, server_url, jp_serverapp, jp_base_url
):
    """What reaches the dev server, and what the page gets back, seen from the dev
    server's side: none of the user's credentials, and an opaque-origin page."""
    info = await api.upload_running()
    preview = server_url + info["preview_url"]
    jupyter_token = jp_serverapp.identity_provider.token

    async def fetch(url, **kw):
        return await AsyncHTTPClient().fetch(url, raise_error=False, **kw)

    r = await fetch(
        f"{preview}deep/route?token={jupyter_token}&keep=1",
        headers={
            "Cookie": "username-x=secret; _xsrf=abc",
            "Authorization": f"token {jupyter_token}",
            "X-XSRFToken": "abc",
        },
    )
    assert r.code == 200
    got = seen(r.body)
    assert got["request"] == f"GET {info['preview_url']}deep/route?keep=1 HTTP/1.1"
    sent = {name.lower() for name in got["headers"]}
    assert not sent & {"cookie", "authorization", "x-xsrftoken"}, got["headers"]
    assert jupyter_token not in r.body.decode()
    assert "Set-Cookie" not in r.headers
    assert r.headers["Content-Security-Policy"].startswith("sandbox allow-scripts ")
    assert "allow-same-origin" not in r.headers["Content-Security-Policy"]
    assert r.headers["Content-Security-Policy"].endswith("frame-ancestors 'self'")

    base = f"{server_url}{jp_base_url}reactbox/preview"
    token = info["preview_url"].rstrip("/").rsplit("/", 1)[1]
    for url in (
        f"{base}/shop/{'x' * len(token)}/",  # wrong token
        f"{base}/shop/",  # no token
        f"{base}/other/{token}/",  # right token, other project
        f"{base}/shop/{token}<script>alert(1)</script>/",
    ):
        r = await fetch(url, headers={"Authorization": f"token {jupyter_token}"})
        assert r.code == 403, url
        assert "<script>" not in r.body.decode() and "Set-Cookie" not in r.headers
    for path in ("..%2F..%2Fapi/kernels", "src/%2e%2e/%2e%2e/x", "a%2Fb"):
        assert (await fetch(f"{preview}{path}")).code == 400, path
