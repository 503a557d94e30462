"""Model answers with the flaws models really produce, and what each must become.

Used by ``test_edit_format.py`` (every case must end as expected) and by
``benchmarks/edit_apply.py`` (the share applied correctly, and never wrongly).
``expected`` is the file's new content, or None where the answer must be refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jupyter_reactbox.ai.editor import _apply_answer
from jupyter_reactbox.ai.edits import EditError

APP = """\
import { useState } from 'react'

export default function App() {
  const [count, setCount] = useState(0)
  return (
    <main>
      <h1>Shop</h1>
      <button onClick={() => setCount((c) => c + 1)}>
        Count is {count}
      </button>
      <p>Total</p>
      <p>Total</p>
    </main>
  )
}
"""
JOINED = APP.replace("Count is {count}", "Join Now")
PATH = "src/App.jsx"


@dataclass(frozen=True)
class Case:
    name: str
    answer: str
    expected: str | None
    path: str = PATH
    original: str | None = APP


def _block(search: str, replace: str, head: str = f"{PATH}\n```jsx\n", tail: str = "\n```") -> str:
    return f"{head}<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE{tail}"


S = "        Count is {count}"
R = "        Join Now"

CASES = [
    Case("clean", _block(S, R), JOINED),
    Case("no fence", _block(S, R, head=f"{PATH}\n", tail=""), JOINED),
    Case("path on the fence line", _block(S, R, head=f"```jsx {PATH}\n"), JOINED),
    Case("path in backticks", _block(S, R, head=f"`{PATH}`\n```jsx\n"), JOINED),
    Case("bold path with colon", _block(S, R, head=f"**{PATH}**:\n```jsx\n"), JOINED),
    Case("File: prefix", _block(S, R, head=f"File: {PATH}\n```\n"), JOINED),
    Case("markdown heading path", _block(S, R, head=f"### {PATH}\n```jsx\n"), JOINED),
    Case("dedented search", _block("Count is {count}", "Join Now"), JOINED),
    Case(
        "over-indented search",
        _block("            Count is {count}", "            Join Now"),
        JOINED,
    ),
    Case("blank lines around search", _block(f"\n{S}\n\n", R), JOINED),
    Case("trailing spaces in search", _block(S + "   ", R), JOINED),
    Case("tabs instead of spaces", _block("\t\tCount is {count}", "\t\tJoin Now"), JOINED),
    Case(
        "long markers",
        f"{PATH}\n````\n<<<<<<<<< SEARCH\n{S}\n=========\n{R}\n>>>>>>>>> REPLACE\n````",
        JOINED,
    ),
    Case("short markers", f"{PATH}\n<<<<< SEARCH\n{S}\n=====\n{R}\n>>>>> REPLACE\n", JOINED),
    Case("CRLF line endings", _block(S, R).replace("\n", "\r\n"), JOINED),
    Case(
        "prose around the block",
        "Sure! Here is the change you asked for:\n\n" + _block(S, R) + "\n\nThat's it.",
        JOINED,
    ),
    Case(
        "two blocks, one file",
        _block(S, R) + "\n\n" + _block("      <h1>Shop</h1>", "      <h1>Our shop</h1>"),
        JOINED.replace("<h1>Shop</h1>", "<h1>Our shop</h1>"),
    ),
    Case(
        "second block without a path",
        _block(S, R)
        + "\n<<<<<<< SEARCH\n      <h1>Shop</h1>\n=======\n      <h1>Hi</h1>\n>>>>>>> REPLACE\n",
        JOINED.replace("<h1>Shop</h1>", "<h1>Hi</h1>"),
    ),
    Case(
        "whole small file",
        f"{PATH}\n```jsx\n{JOINED}```\n",
        JOINED,
    ),
    Case(
        "new file",
        _block("", "export const price = 3\n", head="src/price.js\n```js\n"),
        "export const price = 3\n",
        path="src/price.js",
        original=None,
    ),
    # Answers that must be refused, never guessed at.
    Case("hallucinated search", _block("        Count: {count}", R), None),
    Case("ambiguous search", _block("      <p>Total</p>", "      <p>Sum</p>"), None),
    Case("no path anywhere", f"<<<<<<< SEARCH\n{S}\n=======\n{R}\n>>>>>>> REPLACE\n", None),
    Case("unclosed block", f"{PATH}\n<<<<<<< SEARCH\n{S}\n=======\n{R}\n", None),
    Case("no blocks at all", "I changed the button for you.", None),
    Case("path outside the project", _block(S, R, head="../../etc/App.jsx\n```\n"), None),
    Case("path into node_modules", _block(S, R, head="node_modules/react/index.js\n```\n"), None),
    Case(
        "empty search on an existing file",
        _block("", "export default 1"),
        None,
    ),
]


def outcome(case: Case, workdir: Path) -> tuple[str, str | None]:
    """('applied', new content of case.path) or ('refused', why), through the editor's
    own in-memory apply step on a scratch copy of the project."""
    app = workdir / "app"
    (app / "src").mkdir(parents=True)
    if case.original is not None:
        (app / case.path).write_text(case.original)
    try:
        changes = _apply_answer(app, case.answer, whole_files_ok=False)
    except EditError as exc:
        return "refused", str(exc)
    if set(changes) - {case.path}:
        return "applied", f"wrong files changed: {sorted(changes)}"
    return "applied", changes.get(case.path, case.original)
