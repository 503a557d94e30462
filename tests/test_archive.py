"""Safe ZIP extraction: every bad archive is refused and leaves nothing behind."""

from __future__ import annotations

import io
import json
import stat
import zipfile

import pytest

from jupyter_reactbox import archive
from jupyter_reactbox.errors import ArchiveError, ArchiveTooLarge
from jupyter_reactbox.frameworks import runnable

PKG = b'{"name": "x", "devDependencies": {"vite": "^8"}}'


def make_zip(entries, *, compression=zipfile.ZIP_DEFLATED) -> bytes:
    """entries: name -> bytes, or name -> (bytes, unix mode)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, value in entries.items():
            data, mode = value if isinstance(value, tuple) else (value, None)
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


def test_extracts_files(tmp_path):
    data = make_zip({"package.json": PKG, "src/App.jsx": b"export default 1\n"})
    files = archive.extract(data, tmp_path / "app")
    assert sorted(files) == ["package.json", "src/App.jsx"]
    assert (tmp_path / "app" / "src" / "App.jsx").read_bytes() == b"export default 1\n"


def test_strips_one_wrapping_folder_and_drops_node_modules_and_git(tmp_path):
    data = make_zip(
        {
            "shop-main/": b"",
            "shop-main/package.json": PKG,
            "shop-main/src/main.jsx": b"1",
            "shop-main/node_modules/.bin/vite": (b"../vite/bin/vite.js", stat.S_IFLNK | 0o777),
            "shop-main/node_modules/vite/index.js": b"x",
            "shop-main/.git/config": b"[core]\n\tfsmonitor = rm -rf /\n",
        }
    )
    files = archive.extract(data, tmp_path / "app")
    assert sorted(files) == ["package.json", "src/main.jsx"]
    assert sorted(p.name for p in (tmp_path / "app").iterdir()) == ["package.json", "src"]


def test_does_not_strip_when_files_sit_at_top(tmp_path):
    data = make_zip({"package.json": PKG, "src/a.js": b"1"})
    assert sorted(archive.extract(data, tmp_path / "app")) == ["package.json", "src/a.js"]


BAD = {
    "slip": ({"package.json": PKG, "../evil.js": b"x"}, "outside the app"),
    "deep slip": ({"package.json": PKG, "src/../../evil.js": b"x"}, "outside the app"),
    "absolute": ({"package.json": PKG, "/etc/cron.d/x": b"x"}, "absolute path"),
    "drive": ({"package.json": PKG, "C:/x.js": b"x"}, "absolute path"),
    "symlink": (
        {"package.json": PKG, "src/link": (b"/etc/passwd", stat.S_IFLNK | 0o777)},
        "symbolic link",
    ),
    "fifo": ({"package.json": PKG, "src/pipe": (b"", stat.S_IFIFO | 0o644)}, "special file"),
    "duplicate": ({"package.json": PKG, "./package.json": b"{}"}, "two entries"),
    "backslash": ({"package.json": PKG, "src\\..\\..\\x": b"x"}, "backslash"),
    "no package.json": ({"src/App.jsx": b"x", "README.md": b"x"}, "no package.json"),
    "only folders": ({"a/": b"", "b/": b""}, "no package.json"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_rejects_bad_archives_and_writes_nothing(tmp_path, case):
    entries, message = BAD[case]
    with pytest.raises(ArchiveError, match=message):
        archive.extract(make_zip(entries), tmp_path / "app")
    assert list(tmp_path.iterdir()) == []


def test_an_archive_inside_is_a_file_never_opened(tmp_path):
    inner = make_zip({"package.json": PKG, "../../evil.js": b"x"})
    files = archive.extract(
        make_zip({"package.json": PKG, "assets/data.zip": inner}), tmp_path / "a"
    )
    assert files == ["package.json", "assets/data.zip"]
    assert (tmp_path / "a" / "assets" / "data.zip").read_bytes() == inner
    assert not (tmp_path / "evil.js").exists()
    with pytest.raises(ArchiveError, match=r"another archive \(my-app.zip\)"):
        archive.extract(make_zip({"my-app.zip": make_zip({"package.json": PKG})}), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_rejects_nul_in_names(tmp_path):
    # zipfile cannot write a NUL in a name (it cuts the name there), so patch the bytes.
    data = make_zip({"package.json": PKG, "src/aQ.js": b"x"}).replace(b"src/aQ.js", b"src/a\x00.js")
    with pytest.raises(ArchiveError, match="NUL"):
        archive.extract(data, tmp_path / "app")
    assert list(tmp_path.iterdir()) == []


def test_rejects_not_a_zip_and_empty(tmp_path):
    with pytest.raises(ArchiveError, match="not a ZIP"):
        archive.extract(b"PK\x03\x04 but not really a zip", tmp_path / "app")
    with pytest.raises(ArchiveError, match="empty"):
        archive.extract(b"", tmp_path / "app")
    with pytest.raises(ArchiveError, match="empty"):
        archive.extract(make_zip({}), tmp_path / "app")
    assert list(tmp_path.iterdir()) == []


def encrypted(data: bytes) -> bytes:
    """The archive with its first entry flagged as encrypted (zipfile cannot encrypt):
    the flag bit set in the local header and in the central directory."""
    data = bytearray(data)
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        data[data.find(sig) + offset] |= 0x1
    return bytes(data)


def test_rejects_encrypted_entries(tmp_path):
    data = encrypted(make_zip({"package.json": PKG}, compression=zipfile.ZIP_STORED))
    with pytest.raises(ArchiveError, match="encrypted"):
        archive.extract(data, tmp_path / "app")
    assert list(tmp_path.iterdir()) == []


def test_rejects_too_many_entries(tmp_path):
    entries = {"package.json": PKG, **{f"src/f{i}.js": b"1" for i in range(10_001)}}
    with pytest.raises(ArchiveTooLarge, match="10002 entries"):
        archive.extract(make_zip(entries), tmp_path / "app", archive.Limits(max_entries=10_000))
    assert list(tmp_path.iterdir()) == []


def test_rejects_bomb_by_ratio_while_inflating(tmp_path):
    bomb = make_zip({"package.json": PKG, "src/zeros.js": b"0" * (50 * 1024 * 1024)})
    assert len(bomb) < 200_000
    with pytest.raises(ArchiveTooLarge, match="ZIP bomb"):
        archive.extract(bomb, tmp_path / "app")
    assert list(tmp_path.iterdir()) == []


def test_total_size_is_counted_from_inflated_bytes_not_headers(tmp_path):
    data = bytearray(make_zip({"package.json": PKG, "big.bin": bytes(range(256)) * 8192}))
    # Lie in the central directory: claim big.bin is 10 bytes.
    at = data.find(b"PK\x01\x02")
    at = data.find(b"PK\x01\x02", at + 4)  # the second central entry is big.bin
    data[at + 24 : at + 28] = (10).to_bytes(4, "little")
    with pytest.raises((ArchiveTooLarge, ArchiveError)):
        archive.extract(bytes(data), tmp_path / "app", archive.Limits(max_total_bytes=100_000))
    assert list(tmp_path.iterdir()) == []


API = b'{"name": "api", "dependencies": {"express": "^5"}}'
NEXT = b'{"name": "site", "dependencies": {"next": "16"}}'


def extract_app(tmp_path, entries, **kw):
    return sorted(archive.extract(make_zip(entries), tmp_path / "app", runnable=runnable, **kw))


def test_an_app_in_a_subfolder_is_found_and_only_it_is_imported(tmp_path):
    files = extract_app(
        tmp_path,
        {
            "repo-main/README.md": b"# shop",
            "repo-main/package.json": b'{"private": true, "scripts": {"dev": "cd frontend"}}',
            "repo-main/backend/package.json": API,
            "repo-main/backend/server.js": b"",
            "repo-main/frontend/package.json": PKG,
            "repo-main/frontend/src/main.jsx": b"",
        },
    )
    assert files == ["package.json", "src/main.jsx"]
    assert (tmp_path / "app" / "package.json").read_bytes() == PKG


def workspace(manager: str) -> dict[str, bytes]:
    """A monorepo: two apps and a package they share, the apps/* and packages/*
    globs in the root's package.json (npm, yarn, bun) or pnpm-workspace.yaml."""
    root = {"private": True, "devDependencies": {"prettier": "^3"}}
    entries = {
        "acme-main/apps/web/package.json": PKG,
        "acme-main/apps/web/src/main.jsx": b"",
        "acme-main/apps/admin/package.json": PKG,
        "acme-main/packages/ui/package.json": b'{"name": "@acme/ui"}',
        "acme-main/tools/scratch/package.json": PKG,  # an app outside the globs
    }
    if manager == "pnpm":
        entries["acme-main/pnpm-workspace.yaml"] = b"packages:\n  - 'apps/*'\n  - packages/*\n"
    else:
        root["workspaces"] = {"packages": ["apps/*", "packages/*", "!apps/old"]}
    entries["acme-main/package.json"] = json.dumps(root).encode()
    return entries


@pytest.mark.parametrize("manager", ["npm", "pnpm"])
def test_a_workspace_member_is_imported_with_its_whole_workspace(tmp_path, manager):
    entries = workspace(manager)
    with pytest.raises(archive.UnsupportedApp, match=r"Apps: apps/admin, apps/web, tools/scratch"):
        extract_app(tmp_path, entries)
    files = archive.extract(make_zip(entries), tmp_path / "app", runnable=runnable, path="apps/web")
    assert files.member == "apps/web"
    assert "packages/ui/package.json" in files and "apps/admin/package.json" in files
    # A folder no glob names is an app of its own, imported alone.
    scratch = archive.extract(
        make_zip(entries), tmp_path / "scratch", runnable=runnable, path="tools/scratch"
    )
    assert (sorted(scratch), scratch.member) == (["package.json"], "")
    # With one app among the members, it is picked.
    del (
        entries["acme-main/apps/admin/package.json"],
        entries["acme-main/tools/scratch/package.json"],
    )
    files = archive.extract(make_zip(entries), tmp_path / "one", runnable=runnable)
    assert files.member == "apps/web"
    assert (tmp_path / "one" / "apps" / "web" / "src" / "main.jsx").is_file()


def test_several_apps_are_listed_and_path_picks_one(tmp_path):
    entries = {"web/package.json": PKG, "docs/site/package.json": NEXT, "api/package.json": API}
    with pytest.raises(archive.UnsupportedApp) as exc:
        extract_app(tmp_path, entries)
    assert exc.value.status == 422
    assert str(exc.value) == (
        "The ZIP holds several apps. Pick one with ?path=<folder>. Apps: docs/site, web."
    )
    assert not (tmp_path / "app").exists()
    assert extract_app(tmp_path, entries, path="docs/site/") == ["package.json"]
    assert (tmp_path / "app" / "package.json").read_bytes() == NEXT


def test_a_path_without_a_package_json_is_refused(tmp_path):
    with pytest.raises(archive.UnsupportedApp, match=r"no package.json in 'src'\. Folders"):
        extract_app(tmp_path, {"web/package.json": PKG, "web/src/a.js": b""}, path="src")
    assert not (tmp_path / "app").exists()


def test_a_runnable_top_level_wins_over_apps_below(tmp_path):
    files = extract_app(
        tmp_path, {"package.json": PKG, "examples/demo/package.json": PKG, "index.html": b""}
    )
    assert files == ["examples/demo/package.json", "index.html", "package.json"]
