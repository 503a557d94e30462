"""Parse checks before anything is written.

tree-sitter for JS/JSX/TS/TSX and CSS, libcst for Python, ``json`` for JSON.
A change is refused only when it adds syntax errors: a file that was already
broken may be edited as long as it does not get worse.
"""

from __future__ import annotations

import functools
import json
from pathlib import PurePosixPath

import libcst
import tree_sitter
import tree_sitter_css
import tree_sitter_javascript
import tree_sitter_typescript

_GRAMMARS = {
    ".js": tree_sitter_javascript.language,
    ".jsx": tree_sitter_javascript.language,
    ".mjs": tree_sitter_javascript.language,
    ".cjs": tree_sitter_javascript.language,
    ".ts": tree_sitter_typescript.language_typescript,
    ".mts": tree_sitter_typescript.language_typescript,
    ".tsx": tree_sitter_typescript.language_tsx,
    ".css": tree_sitter_css.language,
}


@functools.cache
def parser_for(suffix: str) -> tree_sitter.Parser | None:
    grammar = _GRAMMARS.get(suffix)
    return tree_sitter.Parser(tree_sitter.Language(grammar())) if grammar else None


def _first_error(node: tree_sitter.Node) -> tree_sitter.Node | None:
    if node.is_error or node.is_missing:
        return node
    if not node.has_error:
        return None
    for child in node.children:
        found = _first_error(child)
        if found is not None:
            return found
    return node


def _count_errors(node: tree_sitter.Node) -> int:
    if not node.has_error:
        return 0
    own = 1 if (node.is_error or node.is_missing) else 0
    return own + sum(_count_errors(c) for c in node.children)


def _jsx_mismatches(node: tree_sitter.Node, found: list[tree_sitter.Node]) -> None:
    """JSX elements whose closing tag names another element (the grammar allows it)."""
    if node.type == "jsx_element":
        opening = node.child_by_field_name("open_tag")
        closing = node.child_by_field_name("close_tag")
        if opening is not None and closing is not None:
            a, b = opening.child_by_field_name("name"), closing.child_by_field_name("name")
            if a is not None and b is not None and a.text != b.text:
                found.append(closing)
    for child in node.children:
        _jsx_mismatches(child, found)


def syntax_errors(path: str, content: str) -> tuple[int, str | None]:
    """(number of errors, a message for the first) for a file's content."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix == ".json":
        try:
            json.loads(content)
            return 0, None
        except ValueError as exc:
            return 1, f"{path}: invalid JSON: {exc}"
    if suffix == ".py":
        try:
            libcst.parse_module(content)
            return 0, None
        except libcst.ParserSyntaxError as exc:
            return 1, f"{path}:{exc.raw_line}:{exc.raw_column}: {exc.message}"
    parser = parser_for(suffix)
    if parser is None:
        return 0, None
    tree = parser.parse(content.encode())
    if not tree.root_node.has_error:
        mismatched: list[tree_sitter.Node] = []
        if suffix in (".jsx", ".tsx", ".js"):
            _jsx_mismatches(tree.root_node, mismatched)
        if not mismatched:
            return 0, None
        closing = mismatched[0]
        line, col = closing.start_point
        text = (closing.text or b"").decode(errors="replace")
        return len(mismatched), f"{path}:{line + 1}:{col + 1}: mismatched closing tag {text}"
    node = _first_error(tree.root_node)
    assert node is not None
    line, col = node.start_point
    what = f"missing {node.type}" if node.is_missing else "syntax error"
    lines = content.splitlines()
    snippet = lines[line].strip()[:120] if line < len(lines) else ""
    message = f"{path}:{line + 1}:{col + 1}: {what} near: {snippet}"
    return _count_errors(tree.root_node) or 1, message


def check(path: str, old: str | None, new: str) -> str | None:
    """Why ``new`` must not replace ``old`` (it adds syntax errors), or None."""
    errors, message = syntax_errors(path, new)
    if not errors:
        return None
    before = syntax_errors(path, old)[0] if old is not None else 0
    return message if errors > before else None
