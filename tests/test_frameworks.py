"""Framework and package-manager detection, and the commands planned from it."""

from __future__ import annotations

import json

import pytest

from jupyter_reactbox.errors import UnsupportedApp
from jupyter_reactbox.frameworks import detect

BASE = "/a%40b/reactbox/preview/shop/tok/"
WHERE = {"base": BASE, "host": "0.0.0.0", "port": 4321, "support": "/opt/reactbox/support"}


def app(tmp_path, pkg, *lockfiles):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "package.json").write_text(json.dumps(pkg))
    for name in lockfiles:
        (tmp_path / name).write_text("")
    return tmp_path


def test_vite_with_npm_lockfile(tmp_path):
    plan = detect(app(tmp_path, {"devDependencies": {"vite": "^8"}}, "package-lock.json"))
    assert (plan.framework, plan.package_manager, plan.lockfile) == (
        "vite",
        "npm",
        "package-lock.json",
    )
    assert plan.install_argv() == [
        "npm",
        "ci",
        "--prefer-offline",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        "--ignore-scripts",
    ]
    assert plan.dev_argv(**WHERE) == [
        "node",
        "/opt/reactbox/support/vite-serve.mjs",  # the app's Vite, config and our plugin
        "--host",
        "0.0.0.0",
        "--port",
        "4321",
        "--base",
        BASE,
    ]
    assert plan.dev_env(**WHERE) == {"BROWSER": "none"}  # server.open must not crash it


def test_vite_typescript_template_without_lockfile(tmp_path):
    pkg = {"dependencies": {"react": "^19"}, "devDependencies": {"vite": "^8", "typescript": "~5"}}
    plan = detect(app(tmp_path, pkg))
    assert (plan.framework, plan.package_manager, plan.lockfile) == ("vite", "npm", None)
    assert plan.install_argv(ignore_scripts=False) == [
        "npm",
        "install",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
    ]


def test_cra_gets_public_url_and_socket_path(tmp_path):
    plan = detect(app(tmp_path, {"dependencies": {"react-scripts": "5.0.1"}}, "yarn.lock"))
    assert (plan.framework, plan.package_manager) == ("cra", "yarn")
    assert plan.install_argv() == [
        "node",
        "/opt/reactbox/pm/yarn-1/bin/yarn.js",
        "install",
        "--non-interactive",
        "--network-timeout",
        "600000",
        "--frozen-lockfile",
        "--ignore-scripts",
    ]
    assert plan.dev_argv(**WHERE) == ["node", "/opt/reactbox/support/cra-start.cjs"]
    assert plan.dev_env(**WHERE) == {
        "HOST": "0.0.0.0",
        "PORT": "4321",
        "BROWSER": "none",
        "PUBLIC_URL": BASE,
        "WDS_SOCKET_PATH": BASE + "ws",
        "WDS_SOCKET_PORT": "0",
        "DANGEROUSLY_DISABLE_HOST_CHECK": "true",
        "FAST_REFRESH": "true",
    }


def test_pnpm_from_package_manager_field(tmp_path):
    pkg = {"packageManager": "pnpm@9.1.0", "devDependencies": {"vite": "^8"}}
    plan = detect(app(tmp_path, pkg, "pnpm-lock.yaml"))
    assert plan.package_manager == "pnpm"
    assert plan.install_argv() == [
        "node",
        "/opt/reactbox/pm/pnpm-9/bin/pnpm.cjs",
        "install",
        "--config.node-linker=hoisted",
        "--frozen-lockfile",
        "--ignore-scripts",
    ]


def test_next_gets_the_base_as_its_default_base_path(tmp_path):
    plan = detect(app(tmp_path, {"dependencies": {"next": "16.4.6"}}, "package-lock.json"))
    assert plan.framework == "next"
    assert plan.dev_argv(**WHERE) == [
        "node", "node_modules/next/dist/bin/next", "dev", "--port", "4321", "--hostname", "0.0.0.0",
    ]  # fmt: skip
    assert plan.dev_env(**WHERE) == {
        "NODE_OPTIONS": "--require /opt/reactbox/support/next-preload.cjs",
        "REACTBOX_BASE": BASE,
        "NEXT_TELEMETRY_DISABLED": "1",
        "BROWSER": "none",
    }


@pytest.mark.parametrize(
    "pkg, message",
    [
        ({"dependencies": {"react": "19"}}, "none of 'vite', 'react-scripts' or 'next'"),
        ({"dependencies": {"astro": "5", "@astrojs/react": "4"}}, "This is an Astro site"),
        (
            {
                "dependencies": {"react-router": "7"},
                "devDependencies": {"@react-router/dev": "7", "vite": "7"},
            },
            "uses @react-router/dev .React Router's framework mode",
        ),
        ([1, 2], "JSON object"),
    ],
)
def test_unsupported_apps_say_what_is_missing(tmp_path, pkg, message):
    with pytest.raises(UnsupportedApp, match=message):
        detect(app(tmp_path, pkg))


def test_frameworks_that_need_the_root_run_where_previews_have_their_own_origin(tmp_path):
    rr = {"dependencies": {"react-router": "7"}, "devDependencies": {"@react-router/dev": "7"}}
    with pytest.raises(UnsupportedApp, match="With previews at an origin of their own"):
        detect(app(tmp_path / "rr", rr))
    plan = detect(app(tmp_path / "rr", rr), own_origin=True)
    assert plan.framework == "react-router"
    assert plan.dev_argv(base="/", host="0.0.0.0", port=8000, support="/s")[:2] == [
        "node", "/s/vite-serve.mjs",
    ]  # fmt: skip
    astro = detect(app(tmp_path / "astro", {"dependencies": {"astro": "5"}}), own_origin=True)
    assert astro.dev_argv(base="/", host="0.0.0.0", port=8000, support="/s") == [
        "node", "/s/astro-dev.mjs", "--host", "0.0.0.0", "--port", "8000",
    ]  # fmt: skip
    # Gatsby runs nowhere, and says why.
    with pytest.raises(UnsupportedApp, match="This is a Gatsby site"):
        detect(app(tmp_path / "gatsby", {"dependencies": {"gatsby": "5"}}), own_origin=True)


def test_broken_package_json(tmp_path):
    (tmp_path / "package.json").write_text("{nope")
    with pytest.raises(UnsupportedApp, match="not valid JSON"):
        detect(tmp_path)


def test_next_compile_check_asks_for_the_pages_of_the_changed_files():
    from jupyter_reactbox.frameworks.nextjs import routes as next_routes

    assert next_routes(["app/about/page.tsx", "src/app/(shop)/cart/page.jsx"]) == [
        "about",
        "cart",
    ]
    assert next_routes(["pages/blog/index.js", "pages/legacy.js"]) == ["blog", "legacy"]
    # Components, layouts, dynamic and private routes, API routes: the root page.
    for path in ("app/counter.js", "app/layout.js", "app/blog/[id]/page.js",
                 "pages/_app.js", "pages/api/hello.js", "app/@modal/page.js"):  # fmt: skip
        assert next_routes([path]) == [""], path
    assert next_routes(["app/a.js", "app/b.js"]) == [""]


def test_next_compile_errors_are_read_from_its_error_page():
    from jupyter_reactbox.frameworks.nextjs import error_of as next_error

    data = {"page": "/_error", "err": {"name": "Error", "message": "./app/x.js:3:1\nBoom"}}
    body = (
        '<html><script id="__NEXT_DATA__" type="application/json">'
        + json.dumps(data)
        + "</script></html>"
    ).encode()
    assert next_error(body) == "./app/x.js:3:1\nBoom"
    assert next_error(b"<html>no data</html>") is None
    assert next_error(b'<script id="__NEXT_DATA__" type="application/json">{bad</script>') is None
