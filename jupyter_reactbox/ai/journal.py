"""Each project's journal of AI edits (``edits.jsonl`` beside its app): one line
per edit that ended, applied or not, as ``schema.EditResult``."""

from __future__ import annotations

import json
import time

from ..store import Project

INTERRUPTED = "The server stopped during this edit; the project was put back as it was before it."


def _journal(project: Project):
    return project.path / "edits.jsonl"


def past_edits(project: Project) -> list[dict]:
    """The project's edits, oldest first."""
    try:
        lines = _journal(project).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def append(project: Project, record: dict) -> None:
    with open(_journal(project), "a") as f:
        f.write(json.dumps(record) + "\n")


def record_interrupted(project: Project, record: dict) -> None:
    """Journal an edit the server died during (``history.repair`` undid it)."""
    append(project, {**record, "status": "failed", "message": INTERRUPTED, "finished": time.time()})
