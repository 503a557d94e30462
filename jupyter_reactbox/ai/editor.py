"""Instruction -> validated, transactional code change -> hot-reloaded preview.

One edit, under the project's edit lock (a second one gets 409):

1. commit the user's own uncommitted changes ("Manual changes"): never lost;
2. build the context (project map + relevant files; with ``at``, the element the
   user pointed at: its file first, and what and where it is, ``ai/place.py``)
   and ask the model;
3. parse its SEARCH/REPLACE blocks and apply them in memory; refuse paths
   outside the project; parse-check every changed file; on a miss or a syntax
   error, tell the model why and ask again (bounded attempts; after a miss the
   model may answer with whole files);
4. write the files atomically and commit;
5. ask the running dev server to compile the changed modules; on an error,
   feed it back for a fix; if none works, roll back to the commit before the
   edit and report why;
6. when a page of the preview is open (or was a moment ago: it may be
   reloading), wait a few seconds for an error it reports that it had not
   reported before the edit (an uncaught error, a rejection, Vite's overlay),
   from the write or from the page's reload if the change made it reload; when
   none is open, load the page once in the server's own headless browser
   (``headless.py``) and take an error that names a changed file, or any error
   of a page left blank.  Fed back like a compile error, and rolled back like
   one if no try is free of it.  Errors an edit caused are forgotten when it
   ends (fixed or rolled back), so the same error later is news again;
7. an applied edit is one commit, however many tries it took: its ``files``
   and ``diff`` cover all of them, and undo and redo take all of it.

With ``review``, the edit stops after step 3: it is ``proposed``, with the
diff of every file, and nothing is written until the user accepts it
(``accept``: steps 4 to 6 for exactly that diff; a compile or page error then
rolls it back, since a change the user did not see is never written) or
discards it.  A project has at most one proposal; a new edit replaces it.

Statuses: ``applied``; ``rejected`` (the answer could not be applied safely:
nothing was written); ``failed`` (the model could not be asked, or the code
did not compile or broke the page: rolled back).

A "fix" edit takes its instruction from an error the page reported.  Page
reports are the app's own words (untrusted, like its code): they only ever
reach the model, whose answer is checked like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import os
import secrets
import time
import typing
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import openai
from traitlets import Bool, Float, Int, Unicode, default
from traitlets.config import LoggingConfigurable

from .. import frameworks, headless, history, schema, worktree
from ..admission import Place as AdmissionPlace
from ..errors import AgentOff, EditBusy, ModelError, NoProposal, ProposalStale, UserError
from ..store import Project
from . import context, edits, journal, validate
from .agent import Agent
from .budget import TokenBudget
from .chat import Chat
from .looks import Looks
from .place import Place
from .vision import Image, find_browser

SYSTEM_PROMPT = """\
You are an expert React developer editing an app in a live dev server.
Change the app exactly as the user asks, and nothing else.

Answer with SEARCH/REPLACE blocks, one per change, in this exact format:

path/to/file.jsx
```jsx
<<<<<<< SEARCH
the exact current lines to replace
=======
the new lines
>>>>>>> REPLACE
```

Rules:
- The path is relative to the project root, on its own line before the block.
- SEARCH must copy the current lines exactly, with enough of them to be unique.
- To create a file, leave SEARCH empty. To delete a file, replace all of it with nothing.
- Only edit files inside the project; never node_modules or .git.
- Keep explanations short; the blocks are what counts.
"""

EditQueue = Callable[
    [str, Callable[[AdmissionPlace | None], None]], AbstractAsyncContextManager[None]
]
"""(project id, what its place in line is told) -> a place in the line of edits."""

WHOLE_FILE_LINES = 150
"""Files at most this long may be answered as a whole file without a SEARCH."""
MAX_EDITED_BYTES = 1 << 20
"""A file larger than this is not read for an edit."""
PAGE_SETTLE = 1.0
"""Seconds an open page gets to report on one try of an edit before the next is
written (a fast model answers before the page has seen the last change)."""


@dataclass
class EditResult:
    """An edit as it goes; its JSON is ``schema.EditResult``."""

    id: str
    instruction: str
    paths: list[str] | None
    at: dict | None = None
    """The element or line the user pointed at (``Place.to_json``)."""
    images: int = 0
    """Images the model was shown: attached ones, and the screenshot."""
    notes: list[str] = field(default_factory=list)
    """What the user should know that did not stop the edit (an image not sent)."""
    review: bool = False
    """Propose the change (status ``proposed``, with its diff) and write nothing."""
    agent: bool = False
    """Made in steps, with tools (agent mode)."""
    status: schema.EditStatus = "running"
    files: list[str] = field(default_factory=list)
    diff: str = ""
    message: str = ""
    attempts: int = 0
    usage: schema.Usage = field(
        default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    )
    """Tokens this edit used (every try), and the user's day so far."""
    created: float = field(default_factory=time.time)
    finished: float | None = None
    commit: str | None = None

    def to_json(self) -> schema.EditResult:
        return typing.cast(schema.EditResult, asdict(self))


@dataclass
class Progress:
    """Events of one project's current edit, for streaming to the widget."""

    events: list[dict] = field(default_factory=list)
    done: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def emit(self, **event) -> None:
        self.events.append({"time": time.time(), **event})
        self.changed.set()
        self.changed = asyncio.Event()


@dataclass
class Tried:
    """One write of a change and its checks."""

    written: float
    """When it was written (a page's report after it is about it)."""
    committed: bool
    problem: str | None = None
    """What went wrong, for the user; None: it compiles and the page is fine."""
    for_model: str = ""
    """What went wrong, for the model's next try."""


@dataclass
class Proposal:
    """A change the model proposed and the user has not accepted yet."""

    result: EditResult
    changes: dict[str, str | None]
    originals: dict[str, str | None]


CompileCheck = Callable[[str, list[str]], Awaitable[str | None]]
Screenshot = Callable[[str, str], Awaitable[Image]]
"""A picture of a project's running preview, taken with a browser (``Views.screenshot``)."""
LoadPage = Callable[[str, str], Awaitable["headless.Loaded"]]
"""One load of a project's running preview in a headless browser (``Views.load_page``)."""


class PageWatch(Protocol):
    """What the preview's open pages report (``previews.Previews``)."""

    def error_key(self, report: dict) -> tuple[str, str]: ...

    def error_keys(self, project_id: str) -> set[tuple[str, str]]: ...

    def watched(self, project_id: str) -> bool: ...

    async def new_error(
        self, project_id: str, known: set[tuple[str, str]], since: float, wait: float
    ) -> dict | None: ...

    def forget_errors(self, project_id: str, keys: set[tuple[str, str]]) -> None: ...

    def errors(self, project_id: str) -> list[dict]: ...

    def running(self, project_id: str) -> bool: ...


def describe_error(report: dict) -> str:
    """A page's error report as the model (and a person) reads it."""
    text = f"{report.get('kind', 'error')}: {report.get('message', '')}"
    if report.get("source"):
        text += f"\n  at {report['source']}"
    if report.get("stack"):
        text += f"\n{report['stack']}"
    return text[:4000]


class AIEditor(LoggingConfigurable):
    """AI edits of one owner's projects: ``c.AIEditor`` holds the model's settings
    (the app gives it what it works with: the compile check, the pages, the line)."""

    base_url = Unicode(
        help="""OpenAI-compatible endpoint for AI edits (OpenAI, Azure, vLLM, Ollama,
        LiteLLM, ...), e.g. 'http://localhost:11434/v1'. Defaults to $OPENAI_BASE_URL;
        empty with no key: AI edits are off (the API answers 503).""",
    ).tag(config=True)

    @default("base_url")
    def _default_base_url(self):
        return os.environ.get("OPENAI_BASE_URL", "")

    api_key = Unicode(
        help="""API key of the AI endpoint. Defaults to $OPENAI_API_KEY, which is then
        removed from the server's environment so kernels and terminals do not inherit
        it; never sent to browsers or containers, never logged. The server's initial
        environment (/proc/<pid>/environ) still holds it, and this user's kernels can
        read that: under JupyterHub, give the key to the hub service instead
        (docs/jupyterhub.md).""",
    ).tag(config=True)

    @default("api_key")
    def _default_api_key(self):
        return os.environ.get("OPENAI_API_KEY", "")

    model = Unicode("gpt-4o", help="Model name for AI edits.").tag(config=True)
    timeout = Float(120, help="Seconds to wait for one model answer.").tag(config=True)
    max_retries = Int(
        2, help="Retries (with backoff) on 429, 5xx, timeouts and dropped connections."
    ).tag(config=True)
    max_tokens = Int(4096, help="Most tokens the model may answer with.").tag(config=True)
    page_check_seconds = Float(
        3.0,
        help="""After an AI edit compiles, how long to wait for an error from an open
        page of the preview (an uncaught error, a rejection, Vite's overlay); a new
        one goes back to the model for a fix, or the edit is rolled back (0: no
        wait; without an open page there is none).""",
    ).tag(config=True)
    page_check_headless = Bool(
        True,
        help="""When no page of the preview is open, load it once in the server's own
        headless browser after an AI edit that compiles (shut in like the screenshot
        browser), so an error the app throws while rendering goes back to the model
        or rolls the edit back even then. Off, or with no browser on the server
        (screenshot_browser), only open pages are watched.""",
    ).tag(config=True)
    daily_tokens = Int(
        0,
        help="""Most tokens (asked and answered) one user's AI edits may use per day
        (UTC); an edit past it gets 429 with when it resets (0: no cap; tokens are
        counted and shown either way).""",
    ).tag(config=True)
    max_attempts = Int(
        3,
        help="""Model answers per edit: the first, plus fixes after a SEARCH that does
        not match, a syntax error or a compile error.""",
    ).tag(config=True)
    vision = Bool(
        False,
        help="""The model takes images: an edit may then show it a screenshot of the
        preview and images the user attaches (a sketch, a mock-up), as image content
        parts. Off: they are not sent, and the edit says so.""",
    ).tag(config=True)
    screenshot_browser = Unicode(
        "",
        help="""Chromium or Chrome for the server's headless loads of a preview:
        screenshots for the model, and the page check after an edit when no page is
        open (headless, shut in: it reaches only the preview). Default: the first of
        chromium, chromium-browser, google-chrome on PATH; none: edits say no
        screenshot was sent, and only open pages are checked.""",
    ).tag(config=True)
    context_chars = Int(
        60_000, help="Budget of file text sent to the model with an instruction."
    ).tag(config=True)
    agent_steps = Int(
        0,
        help="""Agent mode: most model answers an edit that asks for it ({"agent": true},
        %%reactbox edit --agent) may take, working in steps with tools (read, search,
        write, check the compile and the page), ending as one change or rolled back
        (0: agent mode is off). The model must support tool calls.""",
    ).tag(config=True)
    agent_by_default = Bool(
        False,
        help="""Agent mode for every edit that does not say (the Lab panel's, the
        widget's, the magic's without --agent), where agent_steps allows it.""",
    ).tag(config=True)
    agent_tokens = Int(
        200_000,
        help="""Agent mode: most tokens (asked and answered) one agent edit may use; past
        it the agent is stopped and its change rolled back.""",
    ).tag(config=True)
    max_answer_chars = Int(
        1_000_000, help="Longest model answer accepted; longer ones are refused whole."
    ).tag(config=True)

    @property
    def configured(self) -> bool:
        """An endpoint or a key is set: edits can run (else the API answers 503)."""
        return bool(self.base_url or self.api_key)

    def __init__(
        self,
        *,
        client: openai.AsyncOpenAI | None = None,
        budget_file: Path | None = None,
        compile_check: CompileCheck | None = None,
        pages: PageWatch | None = None,
        screenshot: Screenshot | None = None,
        load_page: LoadPage | None = None,
        queue: EditQueue | None = None,
        **kwargs,
    ):
        """``budget_file``: where the owner's tokens of the day are counted;
        ``screenshot`` and ``load_page`` are given the browser to use
        (``screenshot_browser``)."""
        super().__init__(**kwargs)
        self.client = client or openai.AsyncOpenAI(
            api_key=self.api_key or "not-needed",
            base_url=self.base_url or None,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )
        self.compile_check = compile_check
        self.budget = TokenBudget(budget_file, self.daily_tokens) if budget_file else None
        self.chat = Chat(
            self.client,
            model=self.model,
            max_tokens=self.max_tokens,
            max_answer_chars=self.max_answer_chars,
            budget=self.budget,
        )
        """One question to the model at a time, its tokens counted (``chat.py``)."""
        self.pages = pages
        self.screenshot = screenshot
        self.load_page = load_page if self.page_check_headless else None
        self.queue = queue
        """A place in the server's line of edits (``admission.py``), for the work."""
        self._locks: dict[str, asyncio.Lock] = {}
        self._blamed: dict[str, set[tuple[str, str]]] = {}
        """Per project, the page errors its running edit blamed on its own tries."""
        self.progress: dict[str, Progress] = {}
        self.proposals: dict[str, Proposal] = {}
        self.looks = Looks(
            vision=self.vision,
            page_check_seconds=self.page_check_seconds,
            browser=self.browser,
            pages=pages,
            screenshot=screenshot,
            load_page=self.load_page,
            log=self.log,
        )
        """The pictures an edit shows the model and the page checks after it."""

    def browser(self) -> str | None:
        """The headless browser for screenshots and page checks, or None."""
        return find_browser(self.screenshot_browser)

    # -- bookkeeping ---------------------------------------------------------

    def busy(self, project_id: str) -> bool:
        lock = self._locks.get(project_id)
        return lock is not None and lock.locked()

    def past_edits(self, project: Project) -> list[dict]:
        """The project's journal of edits (``journal.py``), oldest first."""
        return journal.past_edits(project)

    def _record(self, project: Project, result: EditResult) -> None:
        journal.append(project, result.to_json())

    # -- the edit --------------------------------------------------------------

    async def edit(
        self,
        project: Project,
        instruction: str,
        paths: list[str] | None,
        *,
        fixing: dict | None = None,
        at: Place | None = None,
        images: list[Image] | None = None,
        screenshot: bool = False,
        review: bool = False,
        agent: bool = False,
    ) -> EditResult:
        """Change the app as ``instruction`` says; ``fixing``: the page error it is
        to fix (a report of the preview): reported again after the change, it was
        not fixed; ``at``: the element or line the instruction is about;
        ``images`` (attached) and ``screenshot`` (of the preview as it is now) go
        to the model if it takes images, else the result says they did not;
        ``review``: propose the change and write nothing (``accept``, ``discard``);
        ``agent``: the model works in steps with tools (``agent.py``)."""
        instruction = instruction.strip()
        if agent and self.agent_steps <= 0:
            raise AgentOff(
                "Agent mode is off on this server: an admin turns it on with "
                "c.AIEditor.agent_steps."
            )
        if agent and review:
            raise UserError("An agent's edit cannot be reviewed first: ask for one or the other.")
        if fixing is not None:
            instruction = (
                "Fix the error the app's page reports in the browser:\n"
                + describe_error(fixing)
                + (f"\n\n{instruction}" if instruction else "")
            )
        if not instruction:
            raise UserError('Say what to change: {"instruction": "Make the header sticky"}.')
        if paths is not None:
            paths = [edits.safe_path(p) for p in paths]  # 422 for a path outside the project
        if at is not None:  # 422 for a place no longer in the file
            at.check(await asyncio.to_thread(context.read_text, project.app_dir, at.file))
        lock = self._lock(project.id)
        if self.budget is not None:
            await asyncio.to_thread(self.budget.check)  # 429 once today's tokens are spent
        async with lock:
            self.proposals.pop(project.id, None)  # a new edit replaces a proposal
            progress = self.progress[project.id] = Progress()
            result = EditResult(
                id=secrets.token_hex(6),
                instruction=instruction,
                paths=paths,
                at=at.to_json() if at is not None else None,
                review=review,
                agent=agent,
            )
            try:
                async with self._place(project.id, progress):
                    pictures = await self.looks.pictures(
                        project, result, progress, images, screenshot
                    )
                    # After the screenshot: what its page load reported is not the edit's.
                    known = self.pages.error_keys(project.id) if self.pages is not None else set()
                    if fixing is not None and self.pages is not None:
                        known.discard(self.pages.error_key(fixing))  # seen again: not fixed
                    if agent:
                        await self._run_agent(project, result, progress, known)
                    else:
                        await self._run(project, result, progress, known, pictures)
            finally:
                if result.notes:
                    result.message = " ".join([result.message, *result.notes])
                await self._finish(project, result, progress)
            return result

    def _place(self, project_id: str, progress: Progress) -> AbstractAsyncContextManager:
        """The edit's place in the server's line; while it waits, its place is streamed."""
        if self.queue is None:
            return contextlib.nullcontext()

        def tell(place: AdmissionPlace | None) -> None:
            if place is not None:
                progress.emit(stage="queued", message=str(place), **place.to_json())

        return self.queue(project_id, tell)

    def _lock(self, project_id: str) -> asyncio.Lock:
        """The project's edit lock, or 409 while an edit holds it."""
        lock = self._locks.setdefault(project_id, asyncio.Lock())
        if lock.locked():
            raise EditBusy(f"An edit of {project_id} is running; wait for it to finish.")
        return lock

    async def _finish(self, project: Project, result: EditResult, progress: Progress) -> None:
        """The edit's end: its outcome journaled (a proposal only once it is accepted
        or discarded) and streamed."""
        result.finished = time.time()
        blamed = self._blamed.pop(project.id, set())
        if self.pages is not None:  # fixed, or rolled back: over
            self.pages.forget_errors(project.id, blamed)
        if self.budget is not None:
            result.usage.update(await asyncio.to_thread(self.budget.to_json))
        if result.status == "running":
            result.status, result.message = "failed", "Interrupted."
        if result.status != "proposed":
            try:
                await asyncio.to_thread(self._record, project, result)
            except OSError as exc:  # a full disk: the edit's outcome still goes out
                self.log.warning("Could not record the edit of %s: %s", project.id, exc)
        progress.emit(
            stage="done",
            status=result.status,
            message=result.message,
            tokens=result.usage["total_tokens"],
        )
        progress.done = True

    # -- review: a proposal, accepted or discarded ------------------------------

    def proposal(self, project_id: str, edit_id: str | None = None) -> Proposal:
        """The project's proposal (``edit_id``: it must be that one)."""
        proposal = self.proposals.get(project_id)
        if proposal is None:
            raise NoProposal(f"No change of {project_id} waits for review.")
        if edit_id is not None and proposal.result.id != edit_id:
            raise ProposalStale(
                f"Change {edit_id} of {project_id} was replaced by a newer proposal, "
                f"{proposal.result.id}: review that one."
            )
        return proposal

    async def accept(self, project: Project, edit_id: str | None = None) -> EditResult:
        """Write the proposed change as reviewed, commit it, and check it compiles and
        the page reports no new error; if not, roll it back."""
        async with self._lock(project.id):
            proposal = self.proposal(project.id, edit_id)
            del self.proposals[project.id]
            app, result = project.app_dir, proposal.result
            await asyncio.to_thread(history.commit_all, app, "Manual changes")
            for path, before in proposal.originals.items():
                if await asyncio.to_thread(_read, app, path) != before:
                    raise ProposalStale(
                        f"{path} changed since the change was proposed, so it was not "
                        "written (the proposal is dropped): ask again."
                    )
            progress = self.progress[project.id] = Progress()
            result.status, result.message = "running", ""
            try:
                await self._write_reviewed(project, result, progress, proposal.changes)
            finally:
                await self._finish(project, result, progress)
            return result

    async def discard(self, project: Project, edit_id: str | None = None) -> EditResult:
        async with self._lock(project.id):
            result = self.proposal(project.id, edit_id).result
            del self.proposals[project.id]
            result.status, result.message = "discarded", "Discarded; nothing was written."
            result.finished = time.time()
            await asyncio.to_thread(self._record, project, result)
            return result

    async def _write_reviewed(
        self, project: Project, result: EditResult, progress: Progress, changes: dict
    ) -> None:
        app = project.app_dir
        base = await asyncio.to_thread(history.head, app)
        what = f"AI edit: {result.instruction[:72]}"
        await asyncio.to_thread(history.begin, app, base, what, result.to_json())
        try:
            known = self.pages.error_keys(project.id) if self.pages is not None else set()
            tried = await self._write_and_check(project, result, progress, changes, known)
            if tried.problem:
                await asyncio.to_thread(history.reset, app, base)
                result.status = "failed"
                result.message = f"{tried.problem} The reviewed change was rolled back: ask again."
            else:
                result.status = "applied"
                head = await asyncio.to_thread(history.head, app)
                await self._describe_applied(app, base, result, head)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(history.rollback, app))
            raise
        await asyncio.to_thread(history.end, app)

    async def _write_and_check(
        self, project: Project, result: EditResult, progress: Progress, changes: dict, known: set
    ) -> Tried:
        """Write ``changes`` as one commit, then have the dev server compile them and
        watch an open page for a new error."""
        app = project.app_dir
        written = time.time()
        await asyncio.to_thread(_write_atomically, app, changes)
        sha = await asyncio.to_thread(history.commit_all, app, f"AI: {result.instruction[:72]}")
        tried = Tried(written=written, committed=sha is not None)
        progress.emit(stage="compiling", attempt=result.attempts, files=sorted(changes))
        kept = [p for p, c in changes.items() if c is not None]
        error = await self._compile(project.id, kept)
        if error:
            tried.problem = f"The dev server cannot compile it: {error}"
            tried.for_model = f"The dev server failed to compile the change:\n{error}\n"
            return tried
        report = await self.looks.page_error(
            project.id, known, written, progress, result.attempts, sorted(changes)
        )
        if report is not None:
            if self.pages is not None:
                self._blamed.setdefault(project.id, set()).add(self.pages.error_key(report))
            text = describe_error(report)
            tried.problem = (
                f"The page reports an error after the change: {text.splitlines()[0][:300]}"
            )
            tried.for_model = f"After the change, the app's page reports this error:\n{text}\n"
        return tried

    @staticmethod
    async def _describe_applied(app: Path, base: str, result: EditResult, commit: str) -> None:
        result.commit = commit
        result.diff = await asyncio.to_thread(history.diff, app, base, commit)
        result.files = await asyncio.to_thread(history.changed_paths, app, base, commit)
        result.message = f"Changed {', '.join(result.files)}."

    async def _run(
        self,
        project: Project,
        result: EditResult,
        progress: Progress,
        known: set,
        pictures: list[tuple[str, Image]],
    ) -> None:
        app = project.app_dir
        await asyncio.to_thread(history.commit_all, app, "Manual changes")
        base = await asyncio.to_thread(history.head, app)
        framework = frameworks.get(project.framework)
        entry_files = framework.entry_files if framework else context.ENTRY_NAMES
        if project.member:  # a workspace's app: its own folder first
            entry_files = tuple(f"{project.member}/{name}" for name in entry_files)
        at = Place(**result.at) if result.at else None
        ctx = await asyncio.to_thread(
            context.build,
            app,
            result.instruction,
            result.paths,
            self.context_chars,
            entry_files,
            first=(at.file,) if at else (),
            src=f"{project.member}/src/" if project.member else "src/",
        )
        pointed = at.describe(ctx.files.get(at.file) or "") if at else None
        prompt: str | list[dict] = _user_prompt(ctx, result.instruction, pointed)
        if pictures:  # the text, then each picture after its caption
            prompt = [{"type": "text", "text": prompt}]
            for caption, image in pictures:
                prompt += [{"type": "text", "text": caption}, image.part()]
        messages: list[dict] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": prompt},
        ]
        # From here the project may change: if the server dies before the edit
        # ends, the next start puts it back at ``base`` (history.repair).
        what = f"AI edit: {result.instruction[:72]}"
        await asyncio.to_thread(history.begin, app, base, what, result.to_json())
        try:
            await self._attempts(project, result, progress, messages, base, known)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(history.rollback, app))
            raise
        await asyncio.to_thread(history.end, app)

    async def _run_agent(
        self, project: Project, result: EditResult, progress: Progress, known: set
    ) -> None:
        """An agent's edit (``agent.py``): its steps' commits become one, or are reset."""
        app = project.app_dir
        await asyncio.to_thread(history.commit_all, app, "Manual changes")
        base = await asyncio.to_thread(history.head, app)
        what = f"AI edit: {result.instruction[:72]}"
        await asyncio.to_thread(history.begin, app, base, what, result.to_json())
        try:
            agent = Agent(self, project, result, progress, known)
            await agent.run()
            if result.status == "applied":
                commit = await asyncio.to_thread(
                    history.squash, app, base, f"AI: {result.instruction[:72]}"
                )
                if commit == base:  # it wrote, then wrote back: no change
                    result.status, result.message = "rejected", "The agent's steps changed nothing."
                else:
                    await self._describe_applied(app, base, result, commit)
            elif agent.written:
                await asyncio.to_thread(history.reset, app, base)
                result.message += " The project was rolled back to how it was before the edit."
        except BaseException:
            await asyncio.shield(asyncio.to_thread(history.rollback, app))
            raise
        await asyncio.to_thread(history.end, app)

    async def _attempts(
        self,
        project: Project,
        result: EditResult,
        progress: Progress,
        messages: list[dict],
        base: str,
        known: set,
    ) -> None:
        app = project.app_dir
        misses = 0
        committed = False
        written = 0.0
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1 and self.budget is not None and self.budget.left() == 0:
                result.status, result.message = "failed", self.budget.why()
                break
            result.attempts = attempt
            progress.emit(stage="asking", attempt=attempt, tokens=result.usage["total_tokens"])
            try:
                answer = await self.chat.ask(messages, result.usage)
            except ModelError as exc:
                result.status, result.message = "failed", str(exc)
                break
            messages.append({"role": "assistant", "content": answer})
            progress.emit(stage="applying", attempt=attempt)
            try:
                changes = await asyncio.to_thread(_apply_answer, app, answer, misses > 0)
            except edits.UnsafePath as exc:
                result.status, result.message = "rejected", str(exc)
                break
            except edits.EditError as exc:
                misses += 1
                result.status, result.message = "rejected", str(exc)
                messages.append({"role": "user", "content": _retry_prompt(str(exc))})
                continue
            if result.review:  # shown, not written
                originals = {path: await asyncio.to_thread(_read, app, path) for path in changes}
                result.status, result.files = "proposed", sorted(changes)
                result.diff = proposed_diff(originals, changes)
                result.message = (
                    f"Proposed changes to {', '.join(result.files)}: nothing is written "
                    "until you accept them."
                )
                self.proposals[project.id] = Proposal(result, changes, originals)
                break
            if written and self.pages is not None and self.pages.watched(project.id):
                # The page gets time to report on the last try before this one is
                # written: what it reports after this write is about this try.
                await asyncio.sleep(max(0.0, written + PAGE_SETTLE - time.time()))
            tried = await self._write_and_check(project, result, progress, changes, known)
            written = tried.written
            committed = committed or tried.committed
            if tried.problem:
                result.status, result.message = "failed", tried.problem
                messages.append(
                    {
                        "role": "user",
                        "content": tried.for_model
                        + "Fix it with SEARCH/REPLACE blocks against the files as they are now.",
                    }
                )
                continue
            result.status = "applied"
            break
        if result.status == "applied":
            # Every try's files, in one commit: undo and redo take all of the edit.
            commit = await asyncio.to_thread(
                history.squash, app, base, f"AI: {result.instruction[:72]}"
            )
            await self._describe_applied(app, base, result, commit)
        elif committed:
            await asyncio.to_thread(history.reset, app, base)
            result.message += " The project was rolled back to how it was before the edit."

    async def _compile(self, project_id: str, paths: list[str]) -> str | None:
        if self.compile_check is None or not paths:
            return None
        return await self.compile_check(project_id, paths)


def _user_prompt(ctx: context.Context, instruction: str, pointed: str | None = None) -> str:
    parts = ["Project files (with their top-level symbols):", ctx.project_map, ""]
    for path, text in ctx.files.items():
        parts += [path, "```", text.rstrip("\n") if text else "(new file)", "```", ""]
    if pointed:
        parts += [pointed, ""]
    parts += ["Instruction:", instruction]
    return "\n".join(parts)


def proposed_diff(originals: dict[str, str | None], changes: dict[str, str | None]) -> str:
    """A unified diff of the proposed changes, as git shows one."""
    out = []
    for path in sorted(changes):
        before, after = originals.get(path), changes[path]
        out.append(f"diff --git a/{path} b/{path}\n")
        lines = difflib.unified_diff(
            (before or "").splitlines(keepends=True),
            (after or "").splitlines(keepends=True),
            fromfile=f"a/{path}" if before is not None else "/dev/null",
            tofile=f"b/{path}" if after is not None else "/dev/null",
        )
        out += [line if line.endswith("\n") else line + "\n" for line in lines]
    return "".join(out)


def _retry_prompt(error: str) -> str:
    return (
        f"Your edit could not be applied: {error}\n"
        "Answer again. If a SEARCH block keeps missing, you may instead give the whole "
        "new file: its path on one line, then the complete content in a fenced block."
    )


def _apply_answer(app: Path, answer: str, whole_files_ok: bool) -> dict[str, str | None]:
    """New content per changed path (None: delete), all checked; nothing written."""
    new: dict[str, str | None] = {}
    originals: dict[str, str | None] = {}
    for edit in edits.parse(answer):
        path = edits.safe_path(edit.path)
        if path not in originals:
            originals[path] = _read(app, path)
        current = new.get(path, originals[path])
        if (
            edit.search is None
            and current is not None
            and not whole_files_ok
            and current.count("\n") > WHOLE_FILE_LINES
        ):
            raise edits.EditError(
                f"{path} is long; change it with SEARCH/REPLACE blocks, not as a whole file."
            )
        new[path] = edits.apply(current, edit)
    for path, content in new.items():
        if content is not None and not content.strip() and originals[path] is not None:
            new[path] = None  # emptied: delete
            continue
        if content is not None:
            problem = validate.check(path, originals[path], content)
            if problem:
                raise edits.EditError(f"The change adds a syntax error: {problem}")
    return {p: c for p, c in new.items() if c != originals[p]}


def _read(app: Path, path: str) -> str | None:
    """A file of the project as text (None if there is none); a link or a special file
    where the path leads is refused, never followed."""
    try:
        data = worktree.read_bytes(app, path, MAX_EDITED_BYTES)
    except worktree.NotAFile as exc:
        raise edits.UnsafePath(f"Refused the path {path!r}: {exc}") from None
    return None if data is None else data.decode("utf-8", errors="replace")


def _write_atomically(app: Path, changes: dict[str, str | None]) -> None:
    """Write every changed file (each replaced atomically), then delete the removed ones.

    Runs inside ``history.change``: if one write fails, the change rolls back."""
    for path, content in changes.items():
        if content is not None:
            worktree.write_bytes(app, path, content.encode("utf-8"))
    for path, content in changes.items():
        if content is None:
            worktree.remove(app, path)
