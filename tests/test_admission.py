"""The lines of installs, starts and edits (admission.py): fair across users, each
place told, a full line refused with when to come back, a start that waits for
memory.  The queues themselves, on a real event loop; the server's use of them is
in test_classroom.py."""

from __future__ import annotations

import asyncio

import pytest

from jupyter_reactbox.admission import Admission, Memory, Place, Queue
from jupyter_reactbox.errors import Busy


class Work:
    """Tickets of one queue that hold their place until let go, and what they heard."""

    def __init__(self, queue: Queue):
        self.queue = queue
        self.heard: dict[str, list[Place | None]] = {}
        self.began: list[str] = []
        self.go: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task] = {}

    def add(self, owner: str, name: str) -> None:
        self.heard[name] = []
        self.go[name] = asyncio.Event()

        async def run():
            async with self.queue.place(owner, name, self.heard[name].append):
                self.began.append(name)
                await self.go[name].wait()

        self.tasks[name] = asyncio.ensure_future(run())

    async def finish(self, name: str) -> None:
        self.go[name].set()
        await self.tasks[name]
        await asyncio.sleep(0.01)  # the next is given its place

    def place(self, name: str) -> tuple[int, int] | None:
        heard = self.heard[name]
        last = heard[-1] if heard else None
        return (last.position, last.waiting) if last else None


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_users_five_uploads_wait_behind_nobody_elses_first():
    work = Work(Queue("install", limit=1, max_queued=100))
    for n in range(1, 6):
        work.add("ann", f"ann{n}")
        await settle()
    assert work.began == ["ann1"]
    assert [work.place(f"ann{n}") for n in range(2, 6)] == [(1, 4), (2, 4), (3, 4), (4, 4)]

    work.add("bob", "bob1")
    await settle()
    work.add("cat", "cat1")
    await settle()
    # Bob and Cat hold nothing, Ann one: their first go before Ann's second.
    assert work.place("bob1") == (1, 6) and work.place("cat1") == (2, 6)
    assert [work.place(f"ann{n}") for n in range(2, 6)] == [(3, 6), (4, 6), (5, 6), (6, 6)]
    assert "waiting to install its dependencies: 1st of 6 in line" in str(work.heard["bob1"][-1])

    for name in ("ann1", "bob1", "cat1", "ann2", "ann3", "ann4"):
        await work.finish(name)
    await settle()
    assert work.began == ["ann1", "bob1", "cat1", "ann2", "ann3", "ann4", "ann5"]
    assert work.heard["ann5"][-1] is None  # told it has its place
    await work.finish("ann5")
    assert work.queue.running == 0 and not work.queue.waiting


async def test_places_at_once_up_to_the_limit_and_a_user_arriving_later_goes_first():
    work = Work(Queue("start", limit=2, max_queued=100))
    for name in ("ann1", "ann2", "ann3", "ann4"):
        work.add("ann", name)
    await settle()
    assert work.began == ["ann1", "ann2"]
    work.add("bob", "bob1")
    await settle()
    assert work.place("bob1") == (1, 3)
    await work.finish("ann1")
    assert work.began[-1] == "bob1"  # Ann holds one, Bob none
    for name in ("ann2", "bob1", "ann3", "ann4"):
        await work.finish(name)
    assert work.began == ["ann1", "ann2", "bob1", "ann3", "ann4"]


async def test_a_full_line_is_busy_with_when_to_come_back_and_a_cancel_leaves_it():
    queue = Queue("edit", limit=1, max_queued=2)
    work = Work(queue)
    for name in ("a", "b", "c"):
        work.add("ann", name)
    await settle()
    with pytest.raises(Busy) as refused:
        async with queue.place("bob", "d"):
            pass
    assert refused.value.status == 429 and 1 <= refused.value.retry_after <= 120
    assert "2 are already waiting to edit" in str(refused.value)

    work.tasks["b"].cancel()  # a request that gave up
    await settle()
    assert work.place("c") == (1, 1) and len(queue.waiting) == 1
    work.add("bob", "d")  # room again
    await settle()
    assert work.place("d") == (1, 2)  # Bob holds nothing: before Ann's c
    for name in ("a", "d", "c"):
        await work.finish(name)
    assert work.began == ["a", "d", "c"] and queue.running == 0


async def test_a_start_waits_for_memory_after_unused_previews_are_stopped():
    free = {"bytes": 500 << 20}
    stopped: list[int] = []

    async def make_room(short: int) -> int:
        stopped.append(short)
        return 0  # nothing unused to stop

    admission = Admission(
        {"start": 4},
        memory=Memory(300 << 20, 256 << 20, available=lambda: free["bytes"]),
        make_room=make_room,
    )
    heard: list[Place | None] = []
    began = asyncio.Event()

    async def start():
        async with admission["start"].place("ann", "shop", heard.append):
            began.set()

    task = asyncio.ensure_future(start())
    await asyncio.sleep(0.1)
    assert not began.is_set()
    assert stopped and stopped[0] == (300 + 256 - 500) << 20  # asked to free what is short
    assert heard[-1].why == "the host needs 56 MiB more memory free for it"
    assert "(the host needs 56 MiB more memory free for it)" in str(heard[-1])

    free["bytes"] = 600 << 20  # another preview stopped meanwhile
    await asyncio.wait_for(began.wait(), 5)  # within one more look
    await task
    assert heard[-1] is None and admission["start"].running == 0
