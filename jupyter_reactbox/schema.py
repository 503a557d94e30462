"""The project JSON, defined once: what ``GET reactbox/api/projects/<id>`` answers.

The kernel's client (``kernel/client.py``), the widget and the JupyterLab
extension (``labextension/src/api.ts``) read these fields; ``tests/test_schema.py``
checks that each of them reads only fields named here, and that the Lab
extension's ``ProjectInfo`` has exactly these.
"""

from __future__ import annotations

import re
from typing import Literal, TypedDict

BRIDGE_NAME = re.compile(r"^[A-Za-z_$][\w$.\-:]{0,99}$")
"""A name on an app's bridge to its notebook: a function, an event, a state key."""

Status = Literal["installing", "starting", "running", "stopped", "failed", "deleted"]


class Progress(TypedDict):
    done: int
    total: int


class Queue(TypedDict):
    """A place in line (``admission.py``)."""

    kind: Literal["install", "start", "edit"]
    position: int
    """1: next."""
    waiting: int


class PageError(TypedDict, total=False):
    kind: str
    message: str
    source: str
    stack: str
    count: int
    time: float


class Selection(TypedDict):
    """An element picked in the preview: where it is written, what it looks like."""

    file: str
    line: int
    column: int
    tag: str
    text: str
    classes: str


class PreviewMode(TypedDict):
    mode: Literal["separate", "path"]
    """'separate': the preview at / of an origin of its own; 'path': under Jupyter's
    path, in a CSP sandbox (an opaque origin)."""
    why: str
    """In a line: why this mode (a local server, a setting, behind a proxy)."""


class ProjectInfo(TypedDict):
    id: str
    name: str
    framework: str
    """'vite', 'cra', 'next', or another framework plugin's name."""
    package_manager: str
    created: float
    member: str
    """The app's folder in its workspace (a monorepo's ``apps/web``), '' for the top."""
    status: Status
    error: str | None
    """Why it failed (the first useful line first)."""
    detail: str | None
    """What it is doing, or why it stopped."""
    progress: Progress | None
    """Packages installed so far, during an install."""
    restarts: int
    frozen: bool
    """Running, but frozen while nobody uses it; any use wakes it in a moment."""
    preview_url: str | None
    """The page to load: a path on this server, or a URL on the preview's own origin."""
    errors: list[PageError]
    """What the preview page reported since it was last loaded."""
    selection: Selection | None
    """The element picked in the preview (alt-click, or select mode) for the next edit."""
    notes: list[str]
    """What the server changed to run it (a patched Vite release, ...)."""
    queue: Queue | None
    """Its place in line while its install or start waits for one (``detail`` says it
    in words)."""
    backend: str
    """Where its dev server runs: 'docker', 'local', ..."""
    sandboxed: bool
    """False: the dev server runs with no sandbox (say so wherever it shows)."""
    isolation: str
    """In a line: what isolates the dev server, or why nothing does."""
    preview_mode: PreviewMode
    """Where its previews are served, and why."""
