"""The history beside the work tree, and the work tree read as data: unit tests on real
files and a real git, a migration through a real server's start, and parallel hand
edits through the REST API."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, zip_dir

from jupyter_reactbox import history, worktree

PLAIN_GIT = ["git", "-c", "user.name=old", "-c", "user.email=old@localhost"]


def make_app(tmp_path: Path) -> Path:
    app = tmp_path / "p" / "app"
    (app / "src").mkdir(parents=True)
    (app / "src" / "App.jsx").write_text("one\n")
    (app / "package.json").write_text("{}\n")
    return app


def test_commit_undo_redo_and_diff_without_a_work_tree(tmp_path):
    app = make_app(tmp_path)
    (app / "run.sh").write_text("#!/bin/sh\n")
    (app / "run.sh").chmod(0o755)
    (app / "node_modules" / "x").mkdir(parents=True)
    (app / "node_modules" / "x" / "index.js").write_text("not history")
    (app / "src" / "reactbox-data").mkdir()
    (app / "src" / "reactbox-data" / "sales.json").write_text("[]")
    os.symlink("/etc/passwd", app / "link")
    first = history.create(app)
    tracked = history.git(app, "ls-tree", "-r", "--name-only", "HEAD").split()
    assert tracked == ["package.json", "run.sh", "src/App.jsx"]
    assert "100755" in history.git(app, "ls-tree", "HEAD", "run.sh")
    assert not (app / ".git").exists() and history.git_dir(app) == tmp_path / "p/history.git"

    assert history.commit_all(app, "nothing") is None
    (app / "src" / "App.jsx").write_text("two\n")
    (app / 'a "quoted"\nname.txt').write_text("odd")
    second = history.commit_all(app, "two")
    assert second and history.head(app) == second
    assert "+two" in history.diff(app, first, second)
    (app / "src" / "App.jsx").write_text("three\n")
    assert "+three" in history.diff(app, "HEAD")  # the work tree, uncommitted
    assert history.head(app) == second  # a diff commits nothing

    history.undo(app)  # "three" is committed first, then undone
    assert (app / "src" / "App.jsx").read_text() == "two\n"
    history.undo(app)
    assert (app / "src" / "App.jsx").read_text() == "one\n"
    assert not (app / 'a "quoted"\nname.txt').exists()
    assert (app / "link").is_symlink() and (app / "src/reactbox-data/sales.json").exists()
    history.redo(app)
    assert (app / 'a "quoted"\nname.txt').read_text() == "odd"
    assert [c.message for c in history.log(app)] == ["two", "Import uploaded app"]
    history.git(app, "fsck", "--strict", "--no-progress")


def old_project(tmp_path: Path, mark: Path) -> tuple[Path, list[str]]:
    """A project as an older version kept it: its repository inside the app folder,
    three commits, one undone (on the redo stack), and a planted filter and hook."""
    app = make_app(tmp_path)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=app, check=True)
    shas = []
    for text in ("one\n", "two\n", "three\n"):
        (app / "src" / "App.jsx").write_text(text)
        subprocess.run([*PLAIN_GIT, "add", "-A"], cwd=app, check=True)
        subprocess.run([*PLAIN_GIT, "commit", "-qm", text.strip()], cwd=app, check=True)
        shas.append(subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=app, text=True))
    shas = [s.strip() for s in shas]
    subprocess.run(["git", "reset", "-q", "--hard", shas[1]], cwd=app, check=True)
    (app / ".git" / "reactbox-redo").write_text(shas[2] + "\n")
    subprocess.run(["git", "gc", "-q"], cwd=app, check=True)  # some objects packed
    (app / "src" / "Extra.jsx").write_text("uncommitted\n")
    evil = app / ".git" / "evil.sh"
    evil.write_text(f"#!/bin/sh\necho ran >> {mark}\ncat\n")
    evil.chmod(0o755)
    with open(app / ".git" / "config", "a") as f:
        f.write('[filter "x"]\n\tclean = sh .git/evil.sh\n\tsmudge = sh .git/evil.sh\n')
        f.write("[core]\n\tfsmonitor = sh .git/evil.sh\n")
    (app / ".git" / "hooks" / "post-checkout").write_text(f"#!/bin/sh\necho ran >> {mark}\n")
    (app / ".git" / "hooks" / "post-checkout").chmod(0o755)
    (app / ".gitattributes").write_text("* filter=x\n")
    return app, shas


def test_an_older_projects_history_moves_out_and_nothing_of_it_runs(tmp_path):
    mark = tmp_path / "ran"
    app, shas = old_project(tmp_path, mark)
    assert history.migrate(app)
    assert not (app / ".git").exists()
    assert [c.sha for c in history.log(app)] == [shas[1], shas[0]]  # the same commits
    assert history.commit_all(app, "Manual changes")  # Extra.jsx, .gitattributes
    history.undo(app)
    history.undo(app)
    assert (app / "src" / "App.jsx").read_text() == "one\n"
    history.redo(app)
    history.redo(app)
    assert (app / "src" / "Extra.jsx").read_text() == "uncommitted\n"
    assert not mark.exists()
    assert not history.migrate(app)  # once
    history.git(app, "fsck", "--strict", "--no-progress")


def test_a_crafted_old_repository_starts_a_fresh_history(tmp_path):
    app = make_app(tmp_path)
    (app / ".git" / "refs" / "heads").mkdir(parents=True)
    (app / ".git" / "refs" / "heads" / "main").write_text("0" * 40 + "\n")  # no such commit
    (app / ".git" / "objects" / "info").mkdir(parents=True)
    (app / ".git" / "objects" / "info" / "alternates").write_text("/somewhere/else\n")
    assert history.migrate(app)
    log = history.log(app)
    assert [c.message for c in log] == ["History started (the earlier history could not be read)"]
    assert not (app / ".git").exists()


def register(project_dir: Path) -> None:
    """Make ``project_dir`` (with its ``app/``) a project of the store, as an import does."""
    meta = {"id": project_dir.name, "name": project_dir.name, "framework": "vite",
            "package_manager": "npm", "created": time.time()}  # fmt: skip
    (project_dir / "project.json").write_text(json.dumps(meta))


def start_server_and_get(request, *path: str):
    """Start the Jupyter server only now (after the test laid out its projects) and GET
    ``path`` from it."""
    jp_fetch = request.getfixturevalue("jp_fetch")
    loop = request.getfixturevalue("jp_asyncio_loop")
    return loop.run_until_complete(jp_fetch(*path))


def test_a_server_migrates_older_projects_at_its_start(request, projects_dir, tmp_path):
    mark = tmp_path / "ran"
    app, shas = old_project(projects_dir / "shop", mark)
    os.rename(projects_dir / "shop" / "p" / "app", projects_dir / "shop" / "app")
    app = projects_dir / "shop" / "app"
    register(projects_dir / "shop")
    r = start_server_and_get(request, "reactbox", "api", "projects", "shop", "history")
    assert [c["sha"] for c in json.loads(r.body)["commits"]] == [shas[1], shas[0]]
    assert not (app / ".git").exists() and (projects_dir / "shop" / "history.git").is_dir()
    assert not mark.exists()


# -- the work tree as data ---------------------------------------------------------------


def test_reads_refuse_links_fifos_devices_and_size(tmp_path):
    root = tmp_path / "app"
    (root / "src").mkdir(parents=True)
    (root / "src" / "ok.txt").write_text("ok")
    os.mkfifo(root / "package.json")
    os.symlink("/dev/zero", root / "zero")
    os.symlink("/etc", root / "etc")
    (root / "big").write_bytes(b"x" * 2048)
    assert worktree.read_bytes(root, "src/ok.txt", 10) == b"ok"
    assert worktree.read_bytes(root, "missing", 10) is None
    done = threading.Event()

    def read_fifo():
        with pytest.raises(worktree.NotAFile):
            worktree.read_bytes(root, "package.json", 10)
        done.set()

    threading.Thread(target=read_fifo, daemon=True).start()
    assert done.wait(5), "reading a FIFO hung"
    for rel in ("zero", "etc/passwd", "big"):
        with pytest.raises(worktree.NotAFile):
            worktree.read_bytes(root, rel, 1024)
    with pytest.raises(worktree.NotAFile):
        worktree.read_bytes(root, "../app/src/ok.txt", 10)
    assert [e.path for e in worktree.walk(root, lambda rel: False)] == ["big", "src/ok.txt"]
    with pytest.raises(worktree.TooManyFiles):
        list(worktree.walk(root, lambda rel: False, max_files=1))


def test_writes_of_one_file_are_spaced_for_the_dev_servers_watcher(tmp_path, monkeypatch):
    """Vite's watcher drops a change within 50 ms of the last: every write of a file,
    from any thread, begins WATCH_GAP after the one before it ended; other files wait
    for nothing."""
    root = tmp_path / "app"
    root.mkdir()
    spans: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}
    real = worktree.replace_in

    def timed(dfd, name, data, **kw):
        began = time.monotonic()
        time.sleep(0.05 if name == "a" else 0)  # a slow write, that others must wait for
        real(dfd, name, data, **kw)
        spans[name].append((began, time.monotonic()))

    monkeypatch.setattr(worktree, "replace_in", timed)
    writers = [
        threading.Thread(target=worktree.write_bytes, args=(root, "a", str(n).encode()))
        for n in range(4)
    ]
    for t in writers:
        t.start()
    worktree.write_bytes(root, "b", b"other")
    for t in writers:
        t.join()
    a = sorted(spans["a"])
    assert len(a) == 4 and (root / "a").read_text() in "0123"
    for (_, ended), (began, _) in itertools.pairwise(a):
        assert began - ended >= worktree.WATCH_GAP
    assert spans["b"][0][1] < a[-1][0]  # not behind the writes of "a"


def test_writes_replace_a_planted_link_and_never_write_through_one(tmp_path):
    root, outside = tmp_path / "app", tmp_path / "outside"
    (root / "src").mkdir(parents=True)
    outside.mkdir()
    (outside / "victim").write_text("root's")
    os.symlink(outside / "victim", root / "src" / "victim")
    os.symlink(outside, root / "src" / "data")
    worktree.write_bytes(root, "src/victim", b"new")  # the link itself is replaced
    assert (root / "src" / "victim").read_text() == "new" and not (root / "src/victim").is_symlink()
    with pytest.raises(worktree.NotAFile):
        worktree.write_bytes(root, "src/data/x.json", b"[]")
    with pytest.raises(worktree.NotAFile):
        worktree.write_bytes(root, "src/data/new/x.json", b"[]")
    assert not worktree.remove(root, "src/data/victim")
    assert (
        sorted(os.listdir(outside)) == ["victim"] and (outside / "victim").read_text() == "root's"
    )
    worktree.write_bytes(root, "a/b/c.txt", b"deep")
    assert worktree.remove(root, "a/b/c.txt") and not (root / "a").exists()
    assert not [n for n in os.listdir(root / "src") if worktree.TEMP_RE.match(n)]


# -- one writer at a time -------------------------------------------------------------------


@pytest.mark.docker
async def test_parallel_hand_edits_are_all_committed(jp_fetch, runtime):
    project = runtime.store.import_zip(zip_dir(FIXTURES / "vite-react"), "shop")

    async def put(i: int):
        return await jp_fetch(
            "reactbox", "api", "projects", "shop", "files", "src", f"Part{i}.jsx",
            method="PUT", body=f"export const Part{i} = () => <p>{i}</p>;\n",
        )  # fmt: skip

    replies = await asyncio.gather(*(put(i) for i in range(8)))
    commits = {json.loads(r.body)["commit"] for r in replies}
    assert all(r.code == 200 for r in replies) and len(commits) == 8
    on_main = {c.sha for c in history.log(project.app_dir)}
    assert commits <= on_main
    for i in range(8):
        assert (project.app_dir / "src" / f"Part{i}.jsx").read_text().startswith("export")
    assert history.diff(project.app_dir, "HEAD") == ""


def test_a_repair_the_work_tree_blocks_waits_and_says_so(request, projects_dir, tmp_path):
    """The server died during a change; meanwhile the preview put a folder where a file
    must go back. The server starts all the same, and the repair waits for the next."""
    store_app = projects_dir / "shop" / "app"
    (store_app / "src").mkdir(parents=True)
    (store_app / "src" / "App.jsx").write_text("one\n")
    (store_app / "package.json").write_text("{}\n")
    register(projects_dir / "shop")
    first = history.create(store_app)
    (store_app / "src" / "App.jsx").unlink()
    history.commit_all(store_app, "removed")
    history.begin(store_app, first, "AI edit: put it back")
    (store_app / "src" / "App.jsx").mkdir()  # a folder where the file must go back
    r = start_server_and_get(request, "reactbox", "api", "projects")
    assert [p["id"] for p in json.loads(r.body)["projects"]] == ["shop"]
    assert history.pending(store_app) is not None  # still to do, at the next start
