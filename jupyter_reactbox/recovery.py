"""After a restart of the Jupyter server: the previews found again.

The backend reports what it still has for the store's projects (``Backend.recover``):
running dev servers are re-attached and stopped ones kept, so their links stay
valid; a dev server serving another base (the preview origin setting changed) is
discarded.  A start that was under way or waiting in line when the server went
down (its ``start-wanted`` marker is there) starts again.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .errors import ReactBoxError
from .previews import ACTIVE
from .starts import mark

if TYPE_CHECKING:
    from .runtime import Runtime


async def recover(rt: Runtime) -> None:
    """The previews of ``rt``'s projects the backend still has, in its state; the
    starts that were under way, started again."""
    projects = {p.id: p for p in await asyncio.to_thread(rt.store.list)}
    for record in await rt.backend.recover(set(projects)):
        if record.token and record.base != rt.previews.base(record.project_id, record.token):
            rt.log.warning(
                "Discarding the dev server of %s: it serves another base (the preview "
                "origin setting changed)",
                record.project_id,
            )
            await rt.backend.discard(record.project_id)
            continue
        st = rt.state(record.project_id)
        if st.task is not None or st.status in ACTIVE:
            continue  # this server started it meanwhile
        running = record.endpoint is not None
        st.update(
            status="running" if running else "stopped",
            token=record.token,
            base=record.base,
            framework=record.framework,
            member=projects[record.project_id].member if record.project_id in projects else "",
            endpoint=record.endpoint,
            error=None,
            last_used=rt.clock(),
            running_since=rt.clock() if running else None,
        )
        rt.log.info("Re-attached the %s preview of %s", st.status, record.project_id)
    for project in projects.values():  # starts a stopped server left in line or under way
        st = rt.state(project.id)
        if st.status == "running":
            mark(project.start_wanted, False)
        elif st.status not in ACTIVE and project.start_wanted.exists():
            rt.log.info("Starting %s again: its start was under way", project.id)
            try:
                rt.start(project)
            except ReactBoxError as exc:
                st.update(detail=str(exc))
