"""SEARCH/REPLACE edit blocks: parsing a model's answer and applying it.

The format is the conventional one::

    src/App.jsx
    ```jsx
    <<<<<<< SEARCH
    <button>Count is {count}</button>
    =======
    <button>Join Now</button>
    >>>>>>> REPLACE
    ```

Models vary it: the path in backticks, bold, after "File:", or on the fence
line; fences or none; 5 to 9 marker characters; re-indented SEARCH text.  The
parser and matcher accept those variations and nothing looser: a SEARCH that
matches no place, or more than one, is refused rather than guessed.  An empty
SEARCH creates a file.  A path-line followed by a fenced block with no markers
is a whole-file answer (accepted for new or small files, or when asked for).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..errors import EditError, UnsafePath

SEARCH_RE = re.compile(r"^\s*<{5,9}\s*SEARCH\s*$")
DIVIDER_RE = re.compile(r"^\s*={5,9}\s*$")
REPLACE_RE = re.compile(r"^\s*>{5,9}\s*REPLACE\s*$")
FENCE_RE = re.compile(r"^\s*(```|~~~)")
_PATH_CHARS_RE = re.compile(r"^[\w@./+-]+$")
FORBIDDEN_DIRS = {".git", "node_modules"}


@dataclass(frozen=True)
class Edit:
    path: str
    search: str | None
    """None for a whole-file answer."""
    replace: str


def clean_path(line: str) -> str | None:
    """The file path a line names, if it names one (``src/App.jsx``, `**src/App.jsx**:` ...)."""
    text = line.strip()
    if FENCE_RE.match(text):
        text = FENCE_RE.sub("", text).strip()
        # "```jsx src/App.jsx" or "```src/App.jsx"
        parts = text.split()
        text = parts[-1] if parts else ""
    text = re.sub(r"^(?:#+\s*|[-*]\s+)?(?:file(?:name)?\s*:\s*)?", "", text, flags=re.I)
    text = text.strip("*`'\" :")
    if not text or not _PATH_CHARS_RE.match(text) or ("/" not in text and "." not in text):
        return None
    return text


def safe_path(path: str) -> str:
    """``path`` normalised, or UnsafePath if it leaves the project."""
    if "\x00" in path or "\\" in path or path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise UnsafePath(f"Refused the path {path!r}: only paths inside the project are allowed.")
    parts = [p for p in PurePosixPath(path).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UnsafePath(f"Refused the path {path!r}: only paths inside the project are allowed.")
    if FORBIDDEN_DIRS.intersection(parts):
        raise UnsafePath(f"Refused the path {path!r}: .git and node_modules are not editable.")
    return "/".join(parts)


def _find_path(lines: list[str], before: int) -> str | None:
    """The path named on the nearest non-empty lines above line ``before``."""
    i = before - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    for _ in range(2):  # the line above may be the opening fence
        if i < 0:
            return None
        path = clean_path(lines[i])
        if path:
            return path
        if not FENCE_RE.match(lines[i]):
            return None
        i -= 1
    return None


def parse(answer: str) -> list[Edit]:
    """All edit blocks in a model's answer, in order."""
    lines = answer.splitlines()
    edits: list[Edit] = []
    last_path: str | None = None
    i = 0
    while i < len(lines):
        if not SEARCH_RE.match(lines[i]):
            i += 1
            continue
        path = _find_path(lines, i) or last_path
        if path is None:
            raise EditError("A SEARCH block has no file path on the line before it.")
        j = i + 1
        while j < len(lines) and not DIVIDER_RE.match(lines[j]):
            j += 1
        k = j + 1
        while k < len(lines) and not REPLACE_RE.match(lines[k]):
            k += 1
        if j >= len(lines) or k >= len(lines):
            raise EditError(
                f"The edit block for {path} is not closed with ======= and >>>>>>> REPLACE."
            )
        search = "\n".join(lines[i + 1 : j])
        replace = "\n".join(lines[j + 1 : k])
        edits.append(Edit(path, search, replace))
        last_path = path
        i = k + 1
    if not edits:
        edits = _whole_files(lines)
    if not edits:
        raise EditError(
            "The answer has no edit blocks. Answer with SEARCH/REPLACE blocks as instructed."
        )
    return edits


def _whole_files(lines: list[str]) -> list[Edit]:
    """Path line + fenced block (no markers): whole-file answers."""
    edits = []
    i = 0
    while i < len(lines):
        if FENCE_RE.match(lines[i]):
            path = clean_path(lines[i]) or _find_path(lines, i)
            fence = lines[i].strip()[:3]
            j = i + 1
            while j < len(lines) and lines[j].strip() != fence:
                j += 1
            if path and j < len(lines):
                edits.append(Edit(path, None, "\n".join(lines[i + 1 : j]) + "\n"))
            i = j + 1
        else:
            i += 1
    return edits


def _strip_blank_edges(lines: list[str]) -> list[str]:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def apply(content: str | None, edit: Edit) -> str:
    """The file's new content; EditError when the SEARCH text is not found exactly once."""
    if edit.search is None:
        return edit.replace
    if not edit.search.strip():
        if content:
            raise EditError(
                f"{edit.path} exists; an empty SEARCH only creates new files. "
                "Quote the lines to change in SEARCH."
            )
        return _with_newline(edit.replace)
    if content is None:
        raise EditError(f"{edit.path} does not exist; to create it, leave SEARCH empty.")

    # 1. Exactly as written.
    search = edit.search
    count = content.count(search)
    if count == 1:
        return content.replace(search, edit.replace, 1)
    if count > 1:
        raise EditError(f"The SEARCH text matches {count} places in {edit.path}; quote more lines.")

    # 2. Line by line, ignoring indentation and blank edges; re-indent REPLACE.
    file_lines = content.splitlines()
    want = _strip_blank_edges(search.splitlines())
    keys = [line.strip() for line in want]
    hits = [
        i
        for i in range(len(file_lines) - len(keys) + 1)
        if [line.strip() for line in file_lines[i : i + len(keys)]] == keys
    ]
    if len(hits) > 1:
        raise EditError(
            f"The SEARCH text matches {len(hits)} places in {edit.path}; quote more lines."
        )
    if not hits:
        raise EditError(
            f"The SEARCH text does not match {edit.path}. Quote the current lines exactly."
        )
    at = hits[0]
    first = next(k for k, line in enumerate(want) if line.strip())
    have, had = _indent(file_lines[at + first]), _indent(want[first])
    new_lines = []
    for line in _strip_blank_edges(edit.replace.splitlines()):
        if line.startswith(had):
            line = have + line[len(had) :]
        new_lines.append(line if line.strip() else "")
    merged = file_lines[:at] + new_lines + file_lines[at + len(keys) :]
    return "\n".join(merged) + ("\n" if content.endswith("\n") else "")


def _with_newline(text: str) -> str:
    return text if text.endswith("\n") or not text else text + "\n"
