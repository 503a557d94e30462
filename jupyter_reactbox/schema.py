"""The JSON the server sends, defined once: the project (``GET
reactbox/api/projects/<id>``), an AI edit's result (``POST .../edits``) and the
events of a running edit (``GET .../edits/events``), with the words people read
for each step of an edit.

The kernel's client (``kernel/client.py``), the widget and the JupyterLab
extension read these.  The extension's types are generated from this module
(``python -m jupyter_reactbox.schema > labextension/src/schema.ts``), and
``tests/test_state.py`` fails when that file is not what this module generates,
when the server sends a field not named here, or when the kernel's client reads
one that is not.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import re
import sys
import types
import typing
from typing import Literal, TypedDict, Union

BRIDGE_NAME = re.compile(r"^[A-Za-z_$][\w$.\-:]{0,99}$")
"""A name on an app's bridge to its notebook: a function, an event, a state key."""

Status = Literal["installing", "starting", "running", "stopped", "failed", "deleted"]


class Progress(TypedDict):
    done: int
    total: int


Line = Literal["install", "start", "edit"]
"""The server's lines of work that wait their turn (``admission.py``)."""


class Queue(TypedDict):
    """A place in line (``admission.py``)."""

    kind: Line
    position: int
    """1: next."""
    waiting: int


class _PageError(TypedDict):
    kind: str
    message: str
    count: int
    """Times it was reported in a row."""
    time: float


class PageError(_PageError, total=False):
    """What a preview page reported (an uncaught error, a failed module, ...)."""

    source: str
    stack: str


class Selection(TypedDict):
    """An element picked in the preview: where it is written, what it looks like."""

    file: str
    line: int
    column: int
    tag: str
    text: str
    classes: str


BuildStatus = Literal["building", "ready", "failed"]


class BuildInfo(TypedDict):
    """A production build of the app (``builds.py``)."""

    id: str
    project: str
    base: str
    """The path it is built to be served under."""
    status: BuildStatus
    created: float
    finished: float | None
    error: str | None
    """Why it failed, its first error line first."""
    files: int
    bytes: int
    share: str | None
    """The share link it was built for, if any."""


ShareStatus = Literal["building", "live", "failed", "expired"]


class ShareInfo(TypedDict):
    """A published snapshot at a link that expires (``shares.py``)."""

    id: str
    project: str
    build: str
    url: str
    """Where it is served: a path on this server."""
    created: float
    expires: float
    last_access: float | None
    status: ShareStatus
    error: str | None
    owner: str
    """Under JupyterHub: the hub user whose share it is ('' on a single-user server)."""
    users: list[str]
    """Under JupyterHub: the hub users whose login opens its pages."""
    groups: list[str]
    """Under JupyterHub: the hub groups whose members' login opens its pages."""
    public: bool
    """Under JupyterHub, if the admin allows: its pages open for anyone with the link."""


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
    export_url: str
    """The app's source as a ZIP (a path on this server; the user's login opens it)."""
    build: BuildInfo | None
    """Its newest production build this server ran, if any."""
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


# -- AI edits ---------------------------------------------------------------------

EditStatus = Literal["running", "applied", "failed", "rejected", "proposed", "discarded"]
"""running; applied (written, one change); failed (nothing changed); rejected (the
model's answer could not be used); proposed (a reviewed edit's change, written
only once accepted); discarded (a proposal let go)."""


class _Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Usage(_Usage, total=False):
    """Tokens one edit used (every try); with a daily cap, the user's day so far."""

    spent_today: int
    daily_limit: int | None


class EditResult(TypedDict):
    """An AI edit: what ``POST .../edits`` answers, and each of ``GET .../edits``."""

    id: str
    instruction: str
    paths: list[str] | None
    at: Selection | None
    """The element or line the instruction is about."""
    images: int
    """Images the model was shown: attached ones, and the screenshot."""
    notes: list[str]
    """What the user should know that did not stop the edit (an image not sent)."""
    review: bool
    """Propose the change (status ``proposed``, with its diff) and write nothing."""
    agent: bool
    """Made in steps, with tools (agent mode)."""
    status: EditStatus
    files: list[str]
    diff: str
    message: str
    attempts: int
    usage: Usage
    created: float
    finished: float | None
    commit: str | None
    """The change it made, where it made one."""


EditStage = Literal[
    "queued", "looking", "asking", "step", "applying", "compiling", "checking", "done"
]

EDIT_STAGES: dict[EditStage, str] = {
    "queued": "Waiting for a turn",
    "looking": "Taking a screenshot of the page",
    "asking": "Asking the model",
    "step": "The agent works",
    "applying": "Checking and applying the answer",
    "compiling": "Checking that it compiles",
    "checking": "Watching the page for errors",
    "done": "Done",
}
"""Each step of an edit as people read it, in the widget, the magics and Lab."""


class _EditEvent(TypedDict):
    stage: EditStage


class EditEvent(_EditEvent, total=False):
    """One step of a running edit (``GET .../edits/events``)."""

    time: float
    attempt: int
    """Which try at the change (1, 2, ...)."""
    tokens: int
    """Tokens spent so far."""
    message: str
    files: list[str]
    """compiling: the files changed."""
    headless: bool
    """checking: the server's own browser looks at the page (no page was open)."""
    status: EditStatus
    """done: how it ended."""
    kind: Line
    """queued: the line it waits in."""
    position: int
    """queued: its place in line (1: next)."""
    waiting: int
    step: int
    """step: an agent's step (1, 2, ...)."""
    tool: str
    """step: the tool the agent calls (read_file, write_file, check_compile...)."""


# -- the Lab extension's types, generated -------------------------------------------

TYPESCRIPT = ("ProjectInfo", "ShareInfo", "EditResult", "EditEvent", "EDIT_STAGES")
"""What ``labextension/src/schema.ts`` gets (with every type they use)."""


def typescript() -> str:
    """This module as TypeScript declarations (``labextension/src/schema.ts``)."""
    module, docs, aliases = _read_myself()
    emitted: dict[str, str] = {}

    def ts(t: object) -> str:
        for name, alias in aliases.items():
            if t == alias:
                emit_alias(name)
                return name
        origin, args = typing.get_origin(t), typing.get_args(t)
        if t is type(None):
            return "null"
        if t in (str, int, float, bool):
            return {str: "string", int: "number", float: "number", bool: "boolean"}[t]
        if origin is Literal:
            return " | ".join(f"'{a}'" for a in args)
        if origin in (Union, types.UnionType):
            return " | ".join(ts(a) for a in args)
        if origin is list:
            inner = ts(args[0])
            return f"({inner})[]" if "|" in inner else f"{inner}[]"
        if origin is dict:
            return f"Record<{ts(args[0])}, {ts(args[1])}>"
        if typing.is_typeddict(t):
            emit_interface(t)
            return t.__name__.lstrip("_")
        raise TypeError(f"No TypeScript for {t!r}")

    def comment(doc: str | None, indent: str = "") -> str:
        if not doc:
            return ""
        lines = " ".join(doc.split())
        return f"{indent}/** {lines} */\n"

    def emit_alias(name: str) -> None:
        if name not in emitted:
            words = " | ".join(f"'{a}'" for a in typing.get_args(aliases[name]))
            emitted[name] = f"{comment(docs.get(name))}export type {name} = {words};\n"

    def emit_interface(t: type) -> None:
        name = t.__name__.lstrip("_")
        if name in emitted:
            return
        emitted[name] = ""
        hints = typing.get_type_hints(t)
        fields = []
        for field, hint in hints.items():
            optional = "?" if field in t.__optional_keys__ else ""
            fields.append(
                f"{comment(docs.get(f'{_owner(t, field)}.{field}'), '  ')}"
                f"  {field}{optional}: {ts(hint)};"
            )
        body = "\n".join(fields)
        emitted[name] = f"{comment(t.__doc__)}export interface {name} {{\n{body}\n}}\n"

    for name in TYPESCRIPT:
        value = getattr(module, name)
        if typing.is_typeddict(value):
            emit_interface(value)
        else:  # a constant
            kind = ts(typing.get_type_hints(module)[name])
            entries = "\n".join(f"  {k}: {_js(v)}," for k, v in value.items())
            emitted[name] = (
                f"{comment(docs.get(name))}export const {name}: {kind} = {{\n{entries}\n}};\n"
            )
    head = (
        "// Generated from jupyter_reactbox/schema.py by `python -m jupyter_reactbox.schema`:\n"
        "// edit that module, not this file (tests/test_state.py checks they agree).\n"
    )
    return head + "".join(f"\n{text}" for text in emitted.values())


OPENAPI = ("ProjectInfo", "ShareInfo", "EditResult", "EditEvent")
"""What ``docs/openapi.yaml``'s ``components.schemas`` has (with every type they use)."""


def openapi_schemas() -> dict[str, dict]:
    """This module as the OpenAPI document's component schemas (JSON Schema)."""
    module, docs, aliases = _read_myself()
    schemas: dict[str, dict] = {}

    def described(schema: dict, doc: str | None) -> dict:
        return {**schema, "description": " ".join(doc.split())} if doc else schema

    def js(t: object) -> dict:
        for name, alias in aliases.items():
            if t == alias:
                if name not in schemas:
                    words = {"type": "string", "enum": list(typing.get_args(alias))}
                    schemas[name] = described(words, docs.get(name))
                return {"$ref": f"#/components/schemas/{name}"}
        origin, args = typing.get_origin(t), typing.get_args(t)
        if t is type(None):
            return {"type": "null"}
        if t in (str, int, float, bool):
            return {"type": {str: "string", int: "integer", float: "number", bool: "boolean"}[t]}
        if origin is Literal:
            return {"type": "string", "enum": list(args)}
        if origin in (Union, types.UnionType):
            return {"anyOf": [js(a) for a in args]}
        if origin is list:
            return {"type": "array", "items": js(args[0])}
        if origin is dict:
            return {"type": "object", "additionalProperties": js(args[1])}
        if typing.is_typeddict(t):
            name = t.__name__.lstrip("_")
            if name not in schemas:
                schemas[name] = {}  # before its parts: no cycle
                properties = {
                    field: described(js(hint), docs.get(f"{_owner(t, field)}.{field}"))
                    for field, hint in typing.get_type_hints(t).items()
                }
                body = {
                    "type": "object",
                    "required": sorted(t.__required_keys__),
                    "properties": properties,
                }
                schemas[name] = described(body, t.__doc__)
            return {"$ref": f"#/components/schemas/{name}"}
        raise TypeError(f"No JSON Schema for {t!r}")

    for name in OPENAPI:
        js(getattr(module, name))
    return dict(sorted(schemas.items()))


def _read_myself() -> tuple[types.ModuleType, dict[str, str], dict[str, object]]:
    """(this module, the docstrings under its names and fields, its Literal aliases by
    name): what both generators start from."""
    module = sys.modules[__name__]
    aliases = {
        name: value
        for name, value in vars(module).items()
        if typing.get_origin(value) is Literal and not name.startswith("_")
    }
    return module, _docs(inspect.getsource(module)), aliases


def _owner(t: type, field: str) -> str:
    """The class (of ``t`` and its bases) that declares ``field``."""
    for base in t.__mro__:
        if field in getattr(base, "__annotations__", {}):
            return base.__name__
    return t.__name__


def _docs(source: str) -> dict[str, str]:
    """Docstrings written under module names and class fields: ``{"Line": ...,
    "ProjectInfo.framework": ...}``."""
    found: dict[str, str] = {}

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for before, node in itertools.pairwise(body):
            is_doc = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            if is_doc and isinstance(node.value.value, str):
                target = getattr(before, "target", None) or (
                    before.targets[0] if isinstance(before, ast.Assign) else None
                )
                if isinstance(target, ast.Name):
                    found[prefix + target.id] = node.value.value
        for node in body:
            if isinstance(node, ast.ClassDef):
                walk(node.body, f"{node.name}.")

    walk(ast.parse(source).body, "")
    return found


def _js(value: object) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


if __name__ == "__main__":
    if sys.argv[1:] == ["--openapi"]:  # the component schemas, as docs/openapi.yaml has them
        import yaml

        sys.stdout.write(yaml.safe_dump({"schemas": openapi_schemas()}, sort_keys=False, width=88))
    else:
        sys.stdout.write(typescript())
