"""What the model sees: a compact map of the project and the files that matter.

The map is the file tree with each source file's top-level symbols (from
tree-sitter).  Without explicit paths, files are ranked by how many words of
the instruction they mention (in their path or text), the app's entry
component first, and taken while they fit the size budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import worktree
from .edits import safe_path
from .validate import parser_for

SKIP_DIRS = {"node_modules", ".git", "dist", "build", ".vite", "coverage"}
TEXT_SUFFIXES = {
    ".js",
    ".jsx",
    ".mjs",
    ".cjs",
    ".ts",
    ".tsx",
    ".mts",
    ".css",
    ".scss",
    ".html",
    ".json",
    ".md",
    ".svg",
    ".py",
    ".txt",
    ".yml",
    ".yaml",
    ".env.example",
}
ENTRY_NAMES = ("src/App.jsx", "src/App.tsx", "src/App.js", "src/App.ts")
"""Shown first when the framework names none (its ``entry_files``)."""
_SYMBOL_TYPES = {
    "function_declaration",
    "class_declaration",
    "lexical_declaration",
    "variable_declaration",
    "interface_declaration",
    "type_alias_declaration",
    "enum_declaration",
}
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{2,}")
_STOP = {
    "the",
    "and",
    "for",
    "with",
    "make",
    "change",
    "add",
    "use",
    "into",
    "from",
    "that",
    "this",
    "say",
    "should",
    "please",
    "button",
    "text",
    "color",
    "colour",
}


@dataclass(frozen=True)
class Context:
    project_map: str
    files: dict[str, str]


MAX_FILE_BYTES = 1 << 20
"""Larger files are listed in the project map but never read into the context."""


def _skipped(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name in SKIP_DIRS or name.startswith(".")


def project_files(app_dir: Path) -> list[str]:
    return [entry.path for entry in worktree.walk(app_dir, _skipped)]


def read_text(app_dir: Path, rel: str) -> str | None:
    """A text file of the project, read as data (no link followed, size-capped)."""
    try:
        data = worktree.read_bytes(app_dir, rel, MAX_FILE_BYTES)
        return None if data is None else data.decode("utf-8")
    except (worktree.NotAFile, UnicodeDecodeError, OSError):
        return None


def is_text(path: str) -> bool:
    return any(path.endswith(s) for s in TEXT_SUFFIXES) or "." not in path.rsplit("/", 1)[-1]


def symbols(path: str, content: str) -> list[str]:
    parser = parser_for(Path(path).suffix.lower())
    if parser is None or path.endswith(".css"):
        return []
    names = []
    for node in parser.parse(content.encode()).root_node.children:
        target = node
        if node.type == "export_statement":
            target = node.child_by_field_name("declaration") or node
        if target.type in _SYMBOL_TYPES:
            name = target.child_by_field_name("name")
            if name is None:  # const X = ..., let a = ...
                declarator = next((c for c in target.children if "declarator" in c.type), None)
                name = declarator.child_by_field_name("name") if declarator else None
            if name is not None and name.text:
                names.append(name.text.decode())
        elif node.type == "export_statement" and b"default" in (node.text or b"")[:20]:
            names.append("default")
    return names


_LOCKFILES = frozenset({"package-lock.json", "yarn.lock", "pnpm-lock.yaml", "bun.lock"})


def build(
    app_dir: Path,
    instruction: str,
    paths: list[str] | None,
    budget: int,
    entry_files: tuple[str, ...] = ENTRY_NAMES,
    *,
    first: tuple[str, ...] = (),
    src: str = "src/",
) -> Context:
    """The map and the files for ``instruction``: ``paths`` if given (else the
    best-ranked files, those under ``src`` before others), after the files in
    ``first`` (the one the user pointed at)."""
    files = project_files(app_dir)
    lines = []
    texts: dict[str, str] = {}
    for rel in files:
        if not is_text(rel):
            lines.append(rel)
            continue
        text = read_text(app_dir, rel)
        if text is None:
            lines.append(rel)
            continue
        if rel.rpartition("/")[2] not in _LOCKFILES:
            texts[rel] = text
        names = symbols(rel, text)
        lines.append(f"{rel}: {', '.join(names)}" if names else rel)
    project_map = "\n".join(lines)

    if paths:
        wanted = [safe_path(p) for p in paths]
    else:
        words = {w.lower() for w in _WORD_RE.findall(instruction)} - _STOP

        def score(rel: str) -> tuple:
            text = texts[rel].lower()
            hits = sum(1 for w in words if w in rel.lower() or w in text)
            return (rel in entry_files, hits, rel.startswith(src), -len(texts[rel]))

        wanted = sorted(
            (r for r in texts if not r.endswith((".svg", ".md", ".json"))), key=score, reverse=True
        )
    wanted = [*first, *(r for r in wanted if r not in first)]
    chosen: dict[str, str] = {}
    used = 0
    for rel in wanted:
        if rel not in texts:
            if paths:  # a file the user named that does not exist yet: the model may create it
                chosen[rel] = ""
            continue
        text = texts[rel]
        if used + len(text) > budget and chosen:
            if paths:
                continue
            break
        chosen[rel] = text
        used += len(text)
    return Context(project_map, chosen)
