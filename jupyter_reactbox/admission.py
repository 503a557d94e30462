"""Admission: how many installs, starts and AI edits run at once, and who goes next.

Thirty people who upload in the same minute would otherwise start thirty
installs and thirty dev servers at once on one host, and each would take thirty
times as long (or the host would swap).  So each kind of work has a ``Queue``:
at most ``limit`` run at once, the others wait in line, and a line longer than
``max_queued`` is refused with ``Busy`` (429, with a ``Retry-After``), which the
clients wait out and retry on their own.

The line is fair across owners (start-time fair queuing): each ticket is tagged
with the turn it may go at, one turn after its owner's previous ticket and never
before the turn being served, and places go in the order of the tags (the
longest waiting first among equals).  So one user's ten uploads never wait
ahead of nine other users' first, users with several waiting take turns, and a
newcomer never passes anyone of the order already told.  Everyone waiting is
told their place (``Place``) whenever it changes; the project's status shows it.

A start also waits for memory (``Memory``): none begins that would leave the
host less than its reserve, counting what the starts already under way will
still take.  Before a start waits for memory, previews nobody uses are stopped
to make room, frozen ones first, then the least recently used.

A single-user server has one ``Admission``; the hub service has one for all
its users (``spaces.SpacePerUser``).  Nothing here does I/O but reading
``/proc/meminfo``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from traitlets import Int, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .errors import Busy
from .store import parse_size

KINDS = ("install", "start", "edit")
WHAT = {"install": "install its dependencies", "start": "start", "edit": "edit"}
"""What each kind of work is, after "waiting to"."""
MEMORY_RECHECK = 2.0
"""Seconds between two looks at the host's memory while a start waits for it."""


@dataclass(frozen=True)
class Place:
    """Where a ticket stands: ``position`` of ``waiting`` (1: next), or what it waits
    for besides its turn."""

    kind: str
    position: int
    waiting: int
    why: str = ""

    def to_json(self) -> dict:
        return {"kind": self.kind, "position": self.position, "waiting": self.waiting}

    def __str__(self) -> str:
        line = f"waiting to {WHAT[self.kind]}: {_ordinal(self.position)} of {self.waiting} in line"
        return f"{line} ({self.why})" if self.why else line


@dataclass(eq=False)
class Ticket:
    owner: str
    key: str
    turn: int
    """Its tag: the turn it may go at (``Queue._turn``)."""
    seq: int
    tell: Callable[[Place | None], None]
    granted: asyncio.Future = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Queue:
    """One kind of work: ``limit`` at once (0: no limit), ``max_queued`` waiting."""

    def __init__(
        self,
        kind: str,
        limit: int,
        max_queued: int,
        *,
        ready: Callable[[], Awaitable[str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.kind = kind
        self.limit = limit
        self.max_queued = max_queued
        self.ready = ready
        """Asked before a place is given (the memory check): '' to go on, else why
        not yet; the line waits and asks again."""
        self.clock = clock
        self.held: Counter[str] = Counter()
        self.waiting: list[Ticket] = []
        self._seq = itertools.count()
        self._serving = 0
        """The turn of the last ticket given its place."""
        self._next_turn: dict[str, int] = {}
        """Per owner, the turn after its last ticket's."""
        self._took: deque[float] = deque(maxlen=32)
        self._why = ""
        self._granting: asyncio.Task | None = None
        self.longest_wait = 0.0
        """The longest any ticket waited, in seconds (for the benchmarks and doctor)."""

    @property
    def running(self) -> int:
        return sum(self.held.values())

    def _free(self) -> bool:
        return self.limit <= 0 or self.running < self.limit

    def check(self) -> None:
        """Busy if one more could not even wait in line."""
        if self.waiting or not self._free():
            if self.max_queued >= 0 and len(self.waiting) >= self.max_queued:
                raise Busy(
                    f"{len(self.waiting)} are already waiting to {WHAT[self.kind]} on this "
                    f"server (at most {self.limit} at once); try again in a moment.",
                    retry_after=self.retry_after(),
                )

    def retry_after(self) -> int:
        """Seconds after which a refused request may well find room: the line's
        length, times how long one took lately, over how many run at once."""
        took = sorted(self._took)[len(self._took) // 2] if self._took else 5.0
        per = max(self.limit, 1)
        return int(min(max(took * (len(self.waiting) + 1) / per, 1), 120))

    @contextlib.asynccontextmanager
    async def place(
        self, owner: str, key: str, tell: Callable[[Place | None], None] = lambda place: None
    ) -> AsyncIterator[None]:
        """Hold a place for the block; wait for it in line first if there is none.
        ``tell`` hears of the ticket's place in line whenever it changes, and None
        once it has its place."""
        arrived = self.clock()
        if self.ready is None and not self.waiting and self._free():
            self._serving = self._turn(owner)
            self.held[owner] += 1
        else:
            self.check()
            ticket = Ticket(owner, key, self._turn(owner), next(self._seq), tell)
            self.waiting.append(ticket)
            if not self._free():
                self._tell()
            self._grant()
            try:
                await asyncio.shield(ticket.granted)
            except asyncio.CancelledError:
                if ticket in self.waiting:
                    self.waiting.remove(ticket)
                    self._tell()
                elif ticket.granted.done():
                    self._release(owner)  # given its place the moment it left
                raise
            tell(None)
        waited = self.clock() - arrived
        self.longest_wait = max(self.longest_wait, waited)
        began = self.clock()
        try:
            yield
        finally:
            self._took.append(self.clock() - began)
            self._release(owner)

    def _turn(self, owner: str) -> int:
        """A new ticket's turn: one after its owner's last, and not before the one
        being served."""
        turn = max(self._next_turn.get(owner, 0), self._serving)
        self._next_turn[owner] = turn + 1
        return turn

    def _release(self, owner: str) -> None:
        self.held[owner] -= 1
        if self.held[owner] <= 0:
            del self.held[owner]
        if not self.held and not self.waiting:  # idle: every owner starts afresh
            self._next_turn.clear()
            self._serving = 0
        self._grant()

    def order(self) -> list[Ticket]:
        """Who goes next, and after them."""
        return sorted(self.waiting, key=lambda t: (t.turn, t.seq))

    def _grant(self) -> None:
        """Give free places to the next in line (once ``ready`` says so)."""
        if self._granting is None or self._granting.done():
            self._granting = asyncio.ensure_future(self._granting_loop())

    async def _granting_loop(self) -> None:
        while self.waiting and self._free():
            try:
                why = await self._not_ready()
            except Exception:  # a check that fails (the engine down) holds no one back
                why = ""
            if why:
                if why != self._why:
                    self._why = why
                    self._tell()
                await asyncio.sleep(MEMORY_RECHECK)
                continue
            if not self.waiting or not self._free():
                break
            self._why = ""
            ticket = self.order()[0]
            self.waiting.remove(ticket)
            self._serving = ticket.turn
            self.held[ticket.owner] += 1
            ticket.granted.set_result(None)
            self._tell()

    async def _not_ready(self) -> str:
        return await self.ready() if self.ready is not None else ""

    def _tell(self) -> None:
        order = self.order()
        for position, ticket in enumerate(order, 1):
            ticket.tell(Place(self.kind, position, len(order), self._why if position == 1 else ""))

    def to_json(self) -> dict:
        return {
            "limit": self.limit,
            "running": self.running,
            "waiting": len(self.waiting),
            "max_queued": self.max_queued,
            "longest_wait": round(self.longest_wait, 3),
        }


def meminfo() -> dict[str, int]:
    """/proc/meminfo, in bytes (empty where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    info = {}
    for line in lines:
        name, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            info[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return info


class Memory:
    """Whether the host has room for one more start: ``MemAvailable`` less what the
    starts under way will still take (``per_start`` each, as they may have barely
    begun) must leave ``per_start`` and the ``reserve``."""

    def __init__(
        self,
        per_start: int,
        reserve: int,
        *,
        available: Callable[[], int | None] = lambda: meminfo().get("MemAvailable"),
    ):
        self.per_start = per_start
        self.reserve = reserve
        self.available = available

    def short(self, starting: int) -> int:
        """Bytes missing for one more start beside ``starting`` under way (0: there
        is room, or no way to tell)."""
        if self.per_start <= 0:
            return 0
        free = self.available()
        if free is None:
            return 0
        return max(0, self.per_start * (starting + 1) + self.reserve - free)


class Admission(LoggingConfigurable):
    """The lines of one server (or of the hub service, for all users): how many
    installs, starts and AI edits run at once (``c.Admission.<name>``)."""

    max_installs = Int(
        help="""Package-manager runs at once on this server (the hub service: for all its
        users); more wait in line, fairly across users. 0: no limit. Default: the
        host's cores, at least 2. An install of a lockfile seen before copies and
        does not wait.""",
    ).tag(config=True)
    max_starts = Int(
        help="""Dev servers starting at once (their first compile is a burst of CPU); more
        wait in line, fairly across users. 0: no limit. Default: the host's cores.""",
    ).tag(config=True)
    max_edits = Int(
        help="""AI edits at work at once (they mostly wait for the model); more wait in
        line, fairly across users. 0: no limit. Default: 4 per core.""",
    ).tag(config=True)

    @default("max_installs")
    def _default_max_installs(self):
        return default_limits()["install"]

    @default("max_starts")
    def _default_max_starts(self):
        return default_limits()["start"]

    @default("max_edits")
    def _default_max_edits(self):
        return default_limits()["edit"]

    max_queued = Int(
        100,
        help="""Most installs, starts or edits that may wait in one line; one more is a
        429 with a Retry-After, which the kernel client, the widget and the Lab panel
        wait out and retry on their own.""",
    ).tag(config=True)
    start_memory = Unicode(
        "300m",
        help="""Memory a dev server takes as it starts, e.g. '300m': a start waits until
        the host has that much available (and memory_reserve besides), after stopping
        previews nobody uses, frozen ones first. Empty or '0': no memory check.""",
    ).tag(config=True)
    memory_reserve = Unicode(
        help="""Memory no start may take, e.g. '1g', so the host never swaps nor calls its
        OOM killer for a preview. Default: a twentieth of the host's, at least 256m.""",
    ).tag(config=True)

    @default("memory_reserve")
    def _default_memory_reserve(self):
        total = meminfo().get("MemTotal", 0)
        return f"{max(256 << 20, total // 20) >> 20}m"

    @validate("start_memory", "memory_reserve")
    def _validate_size(self, proposal):
        parse_size(proposal["value"])  # ValueError: says what a size looks like
        return proposal["value"]

    def __init__(
        self,
        limits: dict[str, int] | None = None,
        *,
        memory: Memory | None = None,
        make_room: Callable[[int], Awaitable[int]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        **settings,
    ):
        """``limits`` and ``memory``: in place of the settings' (tests); ``settings``:
        traits (``parent``, ``log``, ``config``, or any setting)."""
        super().__init__(**settings)
        if limits is None:
            limits = {
                "install": self.max_installs,
                "start": self.max_starts,
                "edit": self.max_edits,
            }
        if memory is None:
            memory = Memory(parse_size(self.start_memory), parse_size(self.memory_reserve))
        self.memory = memory
        self.make_room = make_room
        """Stops unused previews to free about the given bytes; says how many it stopped."""
        self.queues = {
            kind: Queue(
                kind,
                limits.get(kind, 0),
                self.max_queued,
                ready=self._memory_ready if kind == "start" else None,
                clock=clock,
            )
            for kind in KINDS
        }

    def __getitem__(self, kind: str) -> Queue:
        return self.queues[kind]

    async def _memory_ready(self) -> str:
        """'' when one more start fits in memory beside those holding a place."""
        if self.memory is None:
            return ""
        starting = self.queues["start"].running
        short = self.memory.short(starting)
        if short and self.make_room is not None and await self.make_room(short):
            short = self.memory.short(self.queues["start"].running)
        if not short:
            return ""
        return f"the host needs {short >> 20} MiB more memory free for it"

    def to_json(self) -> dict:
        info = {kind: queue.to_json() for kind, queue in self.queues.items()}
        if self.memory is not None:
            info["memory"] = {
                "per_start": self.memory.per_start,
                "reserve": self.memory.reserve,
                "available": self.memory.available(),
            }
        return info


def default_limits(cores: int | None = None) -> dict[str, int]:
    """How many of each kind run at once by default, from the host's cores: an
    install is mostly waiting on the network and the disk, a start is a burst of
    CPU (a dependency pre-bundle), an edit is mostly waiting on the model."""
    cores = cores or os.cpu_count() or 1
    return {"install": max(2, cores), "start": max(1, cores), "edit": max(4, 4 * cores)}


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
