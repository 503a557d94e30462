"""Workspaces read as data: which folders are members, what an install of them is
given, and where their trees go, with the work tree written by an attacker."""

from __future__ import annotations

import json
import shutil

import pytest

from jupyter_reactbox import workspaces
from jupyter_reactbox.backends import modules


@pytest.mark.parametrize(
    "folder, member",
    [
        ("apps/web", True),
        ("apps/web/nested", False),  # * stays within one segment
        ("packages/ui", True),
        ("packages/ui/react", True),  # ** crosses any number
        ("packages/legacy", False),  # excluded by !
        ("docs", True),  # named exactly
        ("tools/x", False),
    ],
)
def test_globs_match_as_the_managers_do(folder, member):
    globs = workspaces.patterns(
        {"workspaces": ["./apps/*", "packages/**", "!packages/legacy"]},
        b"packages:\n  - 'docs'  # the site\n\ncatalog:\n  react: ^19\n",
    )
    assert globs == ["apps/*", "packages/**", "!packages/legacy", "docs"]
    assert workspaces.matches(folder, globs) is member


def test_yarn_and_flow_style_declarations_are_read():
    assert workspaces.patterns({"workspaces": {"packages": ["a/*"], "nohoist": ["**"]}}) == ["a/*"]
    assert workspaces.patterns(None, b"packages: ['a/*', \"b\"]\n") == ["a/*", "b"]
    assert workspaces.patterns({"workspaces": "apps/*"}) == []  # not a list: not one
    assert workspaces.patterns({"name": "app"}) == []


def tree(tmp_path):
    app = tmp_path / "app"
    for folder in ("apps/web", "packages/ui", "scratch"):
        (app / folder).mkdir(parents=True)
        (app / folder / "package.json").write_text(json.dumps({"name": folder}))
    (app / "package.json").write_text(json.dumps({"workspaces": ["apps/*", "packages/*"]}))
    return app


def test_members_and_their_manifests_go_to_the_install_and_links_are_not_walked(tmp_path):
    app = tree(tmp_path)
    outside = tmp_path / "outside"
    (outside / "evil").mkdir(parents=True)
    (outside / "evil" / "package.json").write_text('{"name": "not yours"}')
    (app / "apps" / "evil").symlink_to(outside / "evil")  # planted by the preview
    (app / "apps" / "node_modules").mkdir()
    assert workspaces.members(app) == ["apps/web", "packages/ui"]
    inputs = modules.install_inputs(app, ["npm", "ci"])
    assert sorted(inputs.files) == [
        "apps/web/package.json",
        "package.json",
        "packages/ui/package.json",
    ]
    assert inputs.members == ["apps/web", "packages/ui"]
    staging = tmp_path / "staging"
    staging.mkdir()
    inputs.write(staging, "https://registry.invalid/")
    assert json.loads((staging / "apps/web/package.json").read_text()) == {"name": "apps/web"}
    # A member's manifest changes the install's fingerprint.
    (app / "packages/ui/package.json").write_text('{"name": "ui", "dependencies": {"a": "1"}}')
    assert modules.install_inputs(app, ["npm", "ci"]).fingerprint != inputs.fingerprint


def test_member_trees_land_in_their_members_and_never_through_a_link(tmp_path):
    app = tree(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (app / "apps" / "web" / "node_modules" / "old").mkdir(parents=True)

    def staged() -> object:
        staging = tmp_path / "staging"
        shutil.rmtree(staging, ignore_errors=True)
        for member in ("apps/web", "packages/ui"):
            (staging / member / "node_modules" / "pkg").mkdir(parents=True)
            (staging / member / "node_modules" / "pkg" / "index.js").write_text(member)
        return staging

    modules.place_member_trees(app, staged(), ["apps/web", "packages/ui"])
    assert (app / "apps/web/node_modules/pkg/index.js").read_text() == "apps/web"
    assert not (app / "apps/web/node_modules/old").exists()
    assert (app / "packages/ui/node_modules/pkg/index.js").read_text() == "packages/ui"

    # The preview swaps a member for a link to a folder outside the project.
    shutil.rmtree(app / "packages" / "ui")
    (app / "packages" / "ui").symlink_to(outside)
    # The control: a move by path would land outside.
    staging = staged()
    shutil.move(staging / "packages/ui/node_modules", app / "packages/ui/node_modules")
    assert (outside / "node_modules").exists()
    shutil.rmtree(outside / "node_modules")
    modules.place_member_trees(app, staged(), ["apps/web", "packages/ui"])
    assert list(outside.iterdir()) == []
    assert (app / "apps/web/node_modules/pkg/index.js").read_text() == "apps/web"
