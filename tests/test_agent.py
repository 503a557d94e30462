"""Agent mode: an AI edit in steps with tools, through the REST API, the real
openai client against the scripted model (tool calls and all).  The loop and the
switch need no engine; the plan, the broken build and its fix run a real Vite
dev server in Docker."""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURES, app_of, zip_dir
from tornado.httpclient import HTTPClientError

from jupyter_reactbox import history


@pytest.fixture
def editor_config():
    return {"agent_steps": 4}


@pytest.fixture
def project(runtime):
    """An imported (not started) Vite project."""
    return runtime.store.import_zip(zip_dir(FIXTURES / "vite-react"), "shop")


async def agent_edit(jp_fetch, instruction: str, **body) -> dict:
    r = await jp_fetch(
        "reactbox", "api", "projects", "shop", "edits", method="POST",
        body=json.dumps({"instruction": instruction, "agent": True, **body}),
    )  # fmt: skip
    return json.loads(r.body)


def editor_of(jp_serverapp):
    return jp_serverapp.web_app.settings["reactbox_spaces"].space.editor


async def test_the_step_budget_stops_a_model_that_loops(jp_fetch, jp_serverapp, llm, project):
    app = project.app_dir
    before, text = history.head(app), (app / "src/App.jsx").read_text()
    for n in range(10):  # more than its 4 steps: it would go on
        llm.call(("search", {"text": "Get started"}), ("write_file", {
            "path": "src/App.jsx", "content": text.replace("Get started", f"Loop {n}")}))  # fmt: skip
    result = await agent_edit(jp_fetch, "Polish the title")
    assert result["status"] == "failed", result
    assert "did not finish within its 4 steps" in result["message"]
    assert "rolled back" in result["message"]
    assert len(llm.requests) == 4 and result["attempts"] == 4
    # Nothing it wrote is left: the same commit, the same file.
    assert history.head(app) == before
    assert (app / "src/App.jsx").read_text() == text
    # Its steps were streamed as they went.
    steps = [e for e in editor_of(jp_serverapp).progress["shop"].events if e["stage"] == "step"]
    assert [(e["step"], e["tool"]) for e in steps[:3]] == [
        (1, "search"),
        (1, "write_file"),
        (2, "search"),
    ]
    assert steps[0]["message"] == "search Get started"
    # The tools' answers went back to the model as tool messages.
    second = llm.requests[1]["body"]["messages"]
    found = [m["content"] for m in second if m["role"] == "tool"]
    assert found[0].startswith("src/App.jsx:") and found[1] == "Wrote src/App.jsx."
    assert llm.requests[0]["body"]["tools"][0]["function"]["name"] == "read_file"


async def test_the_token_budget_stops_it_too(jp_fetch, llm, project, jp_serverapp):
    editor_of(jp_serverapp).agent_tokens = 300  # each scripted answer costs 120
    for _ in range(4):
        llm.call(("read_file", {"path": "src/App.jsx"}))
    result = await agent_edit(jp_fetch, "Look around")
    assert result["status"] == "failed" and "used its 300 tokens" in result["message"]
    assert len(llm.requests) == 3


async def test_a_step_out_of_the_project_is_refused_to_the_model(jp_fetch, llm, project, tmp_path):
    llm.call(("write_file", {"path": "../../escaped.js", "content": "x"}),
             ("read_file", {"path": "/etc/passwd"}))  # fmt: skip
    llm.call(("finish", {"summary": "nothing"}))
    result = await agent_edit(jp_fetch, "Escape")
    answers = [m["content"] for m in llm.requests[1]["body"]["messages"] if m["role"] == "tool"]
    assert all(a.startswith("Refused") for a in answers), answers
    assert "root:" not in json.dumps(llm.requests[1]["body"])
    assert result["status"] == "rejected" and result["message"] == "The agent changed nothing."
    assert not list(project.app_dir.parent.parent.rglob("escaped.js"))


@pytest.mark.parametrize("editor_config", [{"agent_steps": 2, "agent_by_default": True}])
async def test_an_admin_can_make_it_every_edits_way(jp_fetch, llm, project):
    """The panel and the widget send no "agent": the admin's default decides."""
    llm.call(("finish", {"summary": "nothing to do"}))
    r = await jp_fetch(
        "reactbox", "api", "projects", "shop", "edits", method="POST",
        body=json.dumps({"instruction": "Tidy up"}),
    )  # fmt: skip
    result = json.loads(r.body)
    assert result["agent"] and result["status"] == "rejected", result
    assert llm.requests[0]["body"]["tools"], "the model was given its tools"


@pytest.mark.parametrize("editor_config", [{}])
async def test_agent_mode_is_off_unless_an_admin_turns_it_on(jp_fetch, llm, project):
    with pytest.raises(HTTPClientError) as err:
        await agent_edit(jp_fetch, "Do it in steps")
    assert err.value.code == 422
    assert "c.AIEditor.agent_steps" in json.loads(err.value.response.body)["message"]
    assert llm.requests == []


@pytest.mark.docker
async def test_a_plan_in_steps_is_one_change_and_a_broken_build_is_fixed_or_rolled_back(
    api, jp_fetch, llm, projects_dir
):
    await api.upload_running()
    app = app_of(projects_dir, "shop")
    text = (app / "src/App.jsx").read_text()

    # Read; write two files; check the compile and the page; finish: one commit.
    before = history.head(app)
    llm.call(("read_file", {"path": "src/App.jsx"}))
    llm.call(
        ("write_file", {"path": "src/Note.jsx",
                        "content": "export default function Note() {\n  return <p>Planned</p>\n}\n"}),
        ("write_file", {"path": "src/App.jsx", "content": text.replace(
            "import './App.css'", "import './App.css'\nimport Note from './Note.jsx'").replace(
            "<h1>Get started</h1>", "<h1>Get started</h1><Note />")}),
    )  # fmt: skip
    llm.call(("check_compile", {}), ("look_at_page", {}))
    llm.call(("finish", {"summary": "A note under the title"}))
    result = await agent_edit(jp_fetch, "Add a note under the title")
    assert result["status"] == "applied", result
    assert result["agent"] and result["files"] == ["src/App.jsx", "src/Note.jsx"]
    assert history.git(app, "rev-parse", "HEAD~1").strip() == before
    tools = [m["content"] for m in llm.requests[3]["body"]["messages"] if m["role"] == "tool"]
    assert tools[-2:] == ["It compiles.", "The page loads and reports no new error."], tools
    r = await jp_fetch("reactbox", "api", "projects", "shop", "undo", method="POST", body=b"")
    assert history.head(app) == before and not (app / "src/Note.jsx").exists()

    # A step breaks the build (it parses, but imports what is not there): the model
    # is told at the end, fixes it, and the edit is one change.
    missing = text.replace(
        "import './App.css'", "import './App.css'\nimport Gone from './Gone.jsx'"
    )
    fixed = text.replace("<h1>Get started</h1>", "<h1>Fixed in steps</h1>")
    llm.call(("write_file", {"path": "src/App.jsx", "content": missing}), ("finish", {}))
    llm.call(("write_file", {"path": "src/App.jsx", "content": fixed}), ("finish", {}))
    result = await agent_edit(jp_fetch, "Use Gone")
    assert result["status"] == "applied", result
    told = llm.requests[-1]["body"]["messages"][-1]["content"]
    assert "cannot compile" in told and "Gone.jsx" in told, told
    assert (app / "src/App.jsx").read_text() == fixed
    assert history.git(app, "rev-parse", "HEAD~1").strip() == before

    # Not fixed within its steps: everything it wrote is rolled back.
    head = history.head(app)
    for _ in range(4):
        llm.call(("write_file", {"path": "src/App.jsx", "content": missing}), ("finish", {}))
    result = await agent_edit(jp_fetch, "Use Gone again")
    assert result["status"] == "failed" and "rolled back" in result["message"], result
    assert history.head(app) == head and (app / "src/App.jsx").read_text() == fixed
    assert r.code == 200
