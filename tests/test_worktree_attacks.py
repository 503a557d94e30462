"""The work tree is attacker-written: code in a running preview plants every way we know
to make a host-side program run a command, or write outside the project, through the
project folder; then every API path that touches history or files is driven.  Nothing
may run on the host, no file outside the project may change, and no other project's
history may change.

Each plant first shows that it can tell: the same script, run in a copy of the folder,
does make git run it (or makes a plain write land outside) when the server works the way
it did before the history moved out of the work tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import FIXTURES, engine_name, zip_dir
from test_edits import BUTTON, JOIN_NOW, block
from tornado.httpclient import HTTPClientError

from jupyter_reactbox import history

pytestmark = pytest.mark.docker

# The configuration an older server used for git on the work tree: hooks and fsmonitor
# off, nothing else.
OLD_GIT = ["git", "-c", "safe.directory=*", "-c", "core.hooksPath=/dev/null",
           "-c", "core.fsmonitor=false", "-c", "commit.gpgsign=false",
           "-c", "user.name=old", "-c", "user.email=old@localhost"]  # fmt: skip


def git_plants(mark: str) -> str:
    """A shell script, run at the project's top: every way its own git folder, its
    attributes or a nested repository can name a program for git to run.  Each program
    appends its name to ``mark``."""
    evil = f'#!/bin/sh\necho "$1" >> {mark}\ncat "${{2:-/dev/stdin}}" 2>/dev/null\nexit 0\n'
    hook = f'#!/bin/sh\necho "hook $(basename $0)" >> {mark}\n'
    config = (
        '[filter "x"]\n\tclean = sh .git/evil.sh filter\n\tsmudge = sh .git/evil.sh smudge\n'
        "\trequired = false\n"
        '[diff "x"]\n\ttextconv = sh .git/evil.sh textconv\n\tcommand = sh .git/evil.sh diff\n'
        '[merge "x"]\n\tdriver = sh .git/evil.sh merge\n'
        "[core]\n\tfsmonitor = sh .git/evil.sh fsmonitor\n\tpager = sh .git/evil.sh pager\n"
        "\thooksPath = .git/hooks\n"
        "[include]\n\tpath = extra.config\n"
    )
    extra = "[gc]\n\tauto = 1\n[alias]\n\tstatus = !sh .git/evil.sh alias\n"
    lines = [
        "set -e",
        "rm -rf .git && mkdir -p .git/hooks .git/objects .git/refs/heads nested/.git",
        "echo 'ref: refs/heads/main' > .git/HEAD",
        f"printf '%s' {_q(evil)} > .git/evil.sh",
        f"printf '%s' {_q(config)} > .git/config",
        f"printf '%s' {_q(extra)} > .git/extra.config",
        "echo '* filter=x diff=x merge=x' > .gitattributes",
        f"printf '%s' {_q(config.replace('.git/evil.sh', '../.git/evil.sh'))} > nested/.git/config",
        'printf \'[submodule "nested"]\\n\\tpath = nested\\n\\turl = ./nested\\n'
        "\\tupdate = !sh .git/evil.sh submodule\\n' > .gitmodules",
    ]
    for name in ("pre-commit", "post-commit", "post-checkout", "reference-transaction",
                 "pre-auto-gc", "post-index-change", "post-rewrite"):  # fmt: skip
        lines += [f"printf '%s' {_q(hook)} > .git/hooks/{name}", f"chmod +x .git/hooks/{name}"]
    return "\n".join(lines)


def redirect_plants(other_history: str, other_src: str, outside: str) -> str:
    """A shell script: the project's git folder becomes a pointer to another project's
    history, and folders the server writes into become links to another project's
    sources and to a folder outside every project."""
    return "\n".join(
        [
            "set -e",
            "rm -rf .git nested .gitmodules .gitattributes src/components src/reactbox-data",
            f"echo 'gitdir: {other_history}' > .git",
            f"ln -sfn {other_src} src/components",
            f"ln -sfn {outside} src/reactbox-data",
            f"ln -sfn {outside}/victim.txt src/victim.txt",
        ]
    )


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def run_in_container(container, script: str) -> None:
    result = container.exec_run(["sh", "-c", f"cd /project && {script}"])
    assert result.exit_code == 0, result.output.decode(errors="replace")


def run_here(folder: Path, script: str) -> None:
    subprocess.run(["sh", "-c", script], cwd=folder, check=True)


def tree_state(path: Path) -> dict[str, tuple]:
    """Every file and link under ``path`` with its bytes, mode and owner."""
    state = {}
    for folder, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if d != "node_modules"]
        for name in dirs + names:
            p = Path(folder, name)
            st = p.lstat()
            body = os.readlink(p) if p.is_symlink() else (p.read_bytes() if p.is_file() else b"")
            state[str(p.relative_to(path))] = (body, st.st_mode, st.st_uid, st.st_gid)
    return state


def history_state(app: Path) -> tuple:
    return history.head(app), [c.sha for c in history.log(app)], history.diff(app, "HEAD")


def control_git(app: Path, control: Path, script: str, mark: Path) -> set[str]:
    """What the plants made git run in a copy of ``app`` (a real repository), with
    the older server's git commands and then with a plain git's."""
    shutil.copytree(app, control, ignore=shutil.ignore_patterns("node_modules"))
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=control, check=True)
    subprocess.run([*OLD_GIT, "commit", "-q", "--allow-empty", "-m", "0"], cwd=control, check=True)
    keep_repo = script.replace("rm -rf .git && ", "").replace(
        "echo 'ref: refs/heads/main' > .git/HEAD", "true"
    )
    run_here(control, keep_repo)
    (control / "src" / "App.jsx").write_text("// changed\n")
    for args in (["add", "--all"], ["status", "--porcelain"], ["commit", "-qm", "x"],
                 ["diff", "--no-color", "--no-ext-diff", "HEAD~1", "HEAD", "--"],
                 ["reset", "--quiet", "--hard", "HEAD~1"]):  # fmt: skip
        subprocess.run([*OLD_GIT, *args], cwd=control, capture_output=True)
    for args in (["status"], ["commit", "-q", "--allow-empty", "-m", "y"]):
        subprocess.run(["git", "-c", "user.name=a", "-c", "user.email=b", *args],
                       cwd=control, capture_output=True)  # fmt: skip
    ran = {line.split()[0] for line in mark.read_text().splitlines()} if mark.exists() else set()
    mark.unlink(missing_ok=True)
    return ran


def control_redirects(app: Path, tmp_path: Path) -> None:
    """The redirect plants in a copy of ``app``, aimed at stand-ins: an older server's
    commit lands in the history the ``.git`` file names, and plain writes through the
    links (as data publish made them) land outside."""
    scratch = tmp_path / "scratch"
    (scratch / "src").mkdir(parents=True)
    (scratch / "out").mkdir()
    (scratch / "out" / "victim.txt").write_text("x")
    subprocess.run(["git", "init", "-q", "-b", "main", str(scratch / "h")], check=True)
    repo = scratch / "h" / ".git"
    control = tmp_path / "control2"
    shutil.copytree(app, control, ignore=shutil.ignore_patterns("node_modules", ".git*", "nested"))
    run_here(control, redirect_plants(str(repo), str(scratch / "src"), str(scratch / "out")))
    subprocess.run([*OLD_GIT, "add", "--all"], cwd=control, capture_output=True)
    subprocess.run([*OLD_GIT, "commit", "-qm", "x"], cwd=control, capture_output=True)
    (control / "src/reactbox-data/sales.json").write_text("[]")
    (control / "src/components/Evil.jsx").write_text("x")
    log = subprocess.run(["git", "--git-dir", repo, "log", "--oneline"], capture_output=True)
    assert log.stdout, "the control's commit did not land in the other history"
    assert (scratch / "out/sales.json").exists() and (scratch / "src/Evil.jsx").exists()


async def test_the_work_tree_cannot_steer_host_programs(
    api,
    jp_fetch,
    runtime,
    docker_client,
    owner,
    tmp_path,
    llm,
    projects_dir,
):
    mark = tmp_path / "ran-on-the-host"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("root's file\n")
    outside_before = tree_state(outside)

    other = runtime.store.import_zip(zip_dir(FIXTURES / "vite-react"), "other")
    other_before = (history_state(other.app_dir), tree_state(other.app_dir))

    def nothing_escaped(step: str) -> None:
        ran = mark.read_text() if mark.exists() else ""
        assert not ran, f"{step}: the host ran {ran!r}"
        assert tree_state(outside) == outside_before, f"{step}: a file outside changed"
        now = (history_state(other.app_dir), tree_state(other.app_dir))
        assert now == other_before, f"{step}: the other project changed"

    info = await api.upload_running()
    app = runtime.store.get("shop").app_dir
    name = engine_name(owner, projects_dir, "shop")

    # -- 1. git's configuration, hooks, attributes and a nested repository ---------------
    script = git_plants(str(mark))
    ran = control_git(app, tmp_path / "control", script, mark)
    assert {"filter", "smudge", "textconv", "fsmonitor", "hook"} <= ran, ran
    run_in_container(docker_client.containers.get(name), script)
    assert (app / ".git" / "evil.sh").exists()  # planted, as the preview's own user
    await drive(jp_fetch, api, llm, "shop", nothing_escaped,
                edit=(BUTTON, JOIN_NOW), data_refused=False)  # fmt: skip

    # -- 2. the git folder redirected, and links where the server writes ------------------
    control_redirects(app, tmp_path)
    other_history = history.git_dir(other.app_dir)
    run_in_container(  # in the container the restart made
        docker_client.containers.get(name),
        redirect_plants(str(other_history), str(other.app_dir / "src"), str(outside)),
    )
    await drive(jp_fetch, api, llm, "shop", nothing_escaped,
                edit=(JOIN_NOW, BUTTON), data_refused=True)  # fmt: skip
    for path, body in (("src/components/Evil.jsx", b"export default 1\n"),
                       ("src/victim.txt", b"owned\n")):  # fmt: skip
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("reactbox", "api", "projects", "shop", "files", *path.split("/"),
                           method="PUT", body=body)  # fmt: skip
        assert err.value.code == 422, path
        nothing_escaped(f"PUT {path}")
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("reactbox", "api", "projects", "shop", "files", "src", "victim.txt")
    assert err.value.code == 415  # a link is not shown, its target not read
    llm.answer(block("src/components/Evil.jsx", "", "export default 1"))
    r = await jp_fetch("reactbox", "api", "projects", "shop", "edits", method="POST",
                       body=json.dumps({"instruction": "Add Evil"}))  # fmt: skip
    assert json.loads(r.body)["status"] == "rejected"
    nothing_escaped("an AI edit into a link")

    # -- delete and upload again: nothing of the plants survives or runs ------------------
    await jp_fetch("reactbox", "api", "projects", "shop", method="DELETE")
    nothing_escaped("delete")
    again = await api.upload_running()
    assert again["id"] == "shop" and again["preview_url"] != info["preview_url"]
    new_app = runtime.store.get("shop").app_dir
    assert not (new_app / ".git").exists() and not (new_app / ".gitattributes").exists()
    assert len(history.log(new_app)) == 1
    nothing_escaped("upload again")


async def drive(jp_fetch, api, llm, project_id: str, check, *, edit, data_refused) -> None:
    """Every API path that reads or writes the project's files or history, each
    followed by ``check``; ``edit`` is the AI edit's (search, replace)."""

    async def call(*path: str, method: str = "GET", body: bytes | str | None = None):
        return await jp_fetch("reactbox", "api", "projects", project_id, *path,
                              method=method, body=body)  # fmt: skip

    app_jsx = (await call("files", "src", "App.jsx")).body.decode()
    check("read a file")
    await call("files")
    check("list files")
    hand = app_jsx.replace("</h1>", "</h1>\n      <p>by hand</p>", 1)
    r = await call("files", "src", "App.jsx", method="PUT", body=hand)
    assert json.loads(r.body)["commit"]
    check("hand edit")
    llm.answer(block("src/App.jsx", *edit))
    r = await call("edits", method="POST", body=json.dumps({"instruction": "Change it"}))
    assert json.loads(r.body)["status"] == "applied", r.body
    check("AI edit")
    if data_refused:
        with pytest.raises(HTTPClientError) as err:
            await call("data", "sales", method="PUT", body=b'[{"units": 1}]')
        assert err.value.code == 422
    else:
        await call("data", "sales", method="PUT", body=b'[{"units": 1}]')
    check("data publish")
    assert json.loads((await call("diff")).body)["diff"]
    check("diff")
    assert len(json.loads((await call("history")).body)["commits"]) >= 3
    check("history")
    await call("undo", method="POST", body=b"")
    check("undo")
    await call("redo", method="POST", body=b"")
    check("redo")
    await call("restart", method="POST", body=b"")
    await api.wait(project_id)
    check("restart")
