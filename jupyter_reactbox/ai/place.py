"""Where the user pointed: an element picked in the preview's select mode, or a
file and line given by hand (``%reactbox edit NAME --at src/App.jsx:42``).

An edit with a place puts the place's file first in the model's context and
tells the model the element (tag, text, classes), its location, the component
it is written in, and the lines around it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from ..errors import PlaceError, PlaceGone
from .edits import safe_path
from .validate import parser_for

_TAG_RE = re.compile(r"[A-Za-z][A-Za-z0-9.:_-]{0,63}")
_TEXT_RE = re.compile(r"^(.+?):(\d+)(?::(\d+))?$")
USAGE = (
    'Say where with "at": {"file": "src/App.jsx", "line": 42} (column, tag, text and '
    'classes optional), or "src/App.jsx:42".'
)


@dataclass(frozen=True)
class Place:
    file: str
    line: int
    column: int = 0
    tag: str = ""
    text: str = ""
    classes: str = ""

    @classmethod
    def parse(cls, value: object) -> Place:
        """From an API body's ``at``: an object, or ``"file:line[:column]"``."""
        if isinstance(value, str):
            match = _TEXT_RE.match(value.strip())
            if not match:
                raise PlaceError(f"Not a place: {value[:80]!r}. {USAGE}")
            file, line, column = match.groups()
            value = {"file": file, "line": int(line), "column": int(column or 0)}
        if not isinstance(value, dict) or not isinstance(value.get("file"), str):
            raise PlaceError(USAGE)
        line, column = value.get("line"), value.get("column", 0)
        numbers_ok = all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 10_000_000
            for n in (line, column)
        )
        if not numbers_ok or line < 1:
            raise PlaceError(f"The line must be a number from 1, the column from 0. {USAGE}")
        text = {k: value.get(k, "") for k in ("tag", "text", "classes")}
        if not all(isinstance(v, str) for v in text.values()):
            raise PlaceError(f"tag, text and classes are strings. {USAGE}")
        tag = text["tag"] if _TAG_RE.fullmatch(text["tag"]) else ""
        return cls(
            file=safe_path(value["file"]),  # 422 for a path outside the project
            line=line,
            column=column,
            tag=tag,
            text=" ".join(text["text"].split())[:120],
            classes=" ".join(text["classes"].split())[:200],
        )

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}" + (f":{self.column}" if self.column else "")

    def element(self) -> str:
        """``<button class="counter"> "Count is 0"``, or "" when only a line is known."""
        if not self.tag:
            return ""
        classes = f' class="{self.classes}"' if self.classes else ""
        text = f' "{self.text}"' if self.text else ""
        return f"<{self.tag}{classes}>{text}"

    def to_json(self) -> dict:
        return asdict(self)

    def check(self, source: str | None) -> None:
        """The place must be in the file as it is now."""
        if source is None:
            raise PlaceGone(
                f"{self.file} is not a file of the project (any more): select the element "
                "again, or give a file that exists."
            )
        lines = source.count("\n") + (0 if source.endswith("\n") else 1)
        if self.line > lines:
            raise PlaceGone(
                f"{self.file} has {lines} lines, so line {self.line} is not in it: it changed "
                "since the element was selected. Select it again."
            )

    def describe(self, source: str) -> str:
        """The place as the model reads it: what, where, in which component, and
        the lines around it (the pointed line marked)."""
        component = enclosing_component(self.file, source, self.line)
        element = self.element()
        if element:
            head = f"The user selected {element} in the preview, written at {self.location}"
        else:
            head = f"The user pointed at the code at {self.location}"
        head += f", in the component {component}." if component else "."
        lines = source.splitlines()
        first, last = max(1, self.line - 3), min(len(lines), self.line + 6)
        around = [
            f"{'>' if n == self.line else ' '} {n:>4} | {lines[n - 1]}"
            for n in range(first, last + 1)
        ]
        tail = "The instruction is about that place: change it, and only what it needs."
        return "\n".join([head, "```", *around, "```", tail])


_FUNCTIONS = {"function_declaration", "class_declaration", "function", "function_expression"}


def enclosing_component(path: str, source: str, line: int) -> str | None:
    """The name of the innermost capitalised function, arrow function or class
    (a React component) around ``line`` (1-based), if the file parses."""
    suffix = "." + path.rsplit(".", 1)[-1] if "." in path else ""
    parser = parser_for(suffix.lower())
    if parser is None or suffix == ".css":
        return None
    row = line - 1
    node = parser.parse(source.encode()).root_node
    found = None
    while True:
        name = None
        if node.type in _FUNCTIONS:
            name = node.child_by_field_name("name")
        elif node.type == "variable_declarator":
            name = node.child_by_field_name("name")  # const Card = (...) => ..., memo(...)
        if name is not None and name.text and name.text[:1].isupper():
            found = name.text.decode()
        inner = next(
            (c for c in node.named_children if c.start_point[0] <= row <= c.end_point[0]), None
        )
        if inner is None:
            return found
        node = inner
