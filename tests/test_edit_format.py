"""The edit format: every recorded flaw ends as expected, and nothing is guessed."""

from __future__ import annotations

import pytest
from edit_corpus import CASES, outcome

from jupyter_reactbox.ai import edits, validate


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case(case, tmp_path):
    kind, result = outcome(case, tmp_path)
    if case.expected is None:
        assert kind == "refused", result
    else:
        assert (kind, result) == ("applied", case.expected)


def test_refusals_say_why():
    app = "a\nb\na\n"
    with pytest.raises(edits.EditError, match="matches 2 places"):
        edits.apply(app, edits.Edit("x.js", "a", "c"))
    with pytest.raises(edits.EditError, match=r"does not match x\.js"):
        edits.apply(app, edits.Edit("x.js", "z", "c"))
    with pytest.raises(edits.EditError, match="does not exist"):
        edits.apply(None, edits.Edit("x.js", "a", "c"))
    with pytest.raises(edits.EditError, match="no edit blocks"):
        edits.parse("Done!")


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "../x.js",
        "src/../../x.js",
        "C:/x.js",
        "a\\b.js",
        ".git/config",
        "node_modules/x/index.js",
        "src/\x00.js",
        "",
    ],
)
def test_unsafe_paths(path):
    with pytest.raises(edits.UnsafePath):
        edits.safe_path(path)


def test_safe_paths_are_normalised():
    assert edits.safe_path("./src//App.jsx") == "src/App.jsx"


@pytest.mark.parametrize(
    "path, content, error",
    [
        ("a.jsx", "export default () => <div>hi</div>\n", None),
        ("a.jsx", "export default () => <div>hi</div\n", "syntax error"),
        ("a.jsx", "export default () => <div><b>x</b></dvi>\n", "mismatched closing tag </dvi>"),
        ("a.tsx", "const x: number = 1;\nexport const A = () => <b>{x}</b>;\n", None),
        ("a.ts", "const x: = 1;\n", "error"),
        ("a.css", "body { color: red; \n", "missing }"),
        ("a.css", "body { color: red; }\n", None),
        ("a.json", '{"a": 1,}', "invalid JSON"),
        ("a.py", "def f(:\n", "a.py:1"),
        ("a.py", "def f():\n    return 1\n", None),
        ("README.md", "# anything { goes\n", None),
    ],
)
def test_syntax_checks(path, content, error):
    problem = validate.check(path, None, content)
    if error is None:
        assert problem is None
    else:
        assert problem is not None and error in problem


def test_an_already_broken_file_may_be_edited_if_it_gets_no_worse():
    broken = "export default () => <div>hi</div\n"
    assert validate.check("a.jsx", broken, broken.replace("hi", "hello")) is None
    assert validate.check("a.jsx", None, broken) is not None


def test_emptying_a_file_deletes_it_and_new_files_may_be_nested(tmp_path):
    from jupyter_reactbox.ai.editor import _apply_answer, _write_atomically

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "old.css").write_text("body { color: red; }\n")
    answer = (
        "src/old.css\n```css\n<<<<<<< SEARCH\nbody { color: red; }\n=======\n>>>>>>> REPLACE\n```\n"
        "src/components/Badge.jsx\n```jsx\n<<<<<<< SEARCH\n=======\n"
        "export const Badge = () => <b>new</b>\n>>>>>>> REPLACE\n```\n"
    )
    changes = _apply_answer(tmp_path, answer, whole_files_ok=False)
    assert changes == {
        "src/old.css": None,
        "src/components/Badge.jsx": "export const Badge = () => <b>new</b>\n",
    }
    _write_atomically(tmp_path, changes)
    assert not (tmp_path / "src" / "old.css").exists()
    assert (tmp_path / "src" / "components" / "Badge.jsx").read_text().startswith("export")
    assert [p.name for p in (tmp_path / "src" / "components").iterdir()] == ["Badge.jsx"]
    # An empty whole-file answer deletes too.
    (tmp_path / "src" / "old.css").write_text("body { color: red; }\n")
    assert _apply_answer(tmp_path, "src/old.css\n```css\n```\n", False) == {"src/old.css": None}
