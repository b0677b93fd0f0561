"""Read-only queries for the viewer, the CLI and live feeds: any session, short transactions.

The repositories in ``repositories.py`` are scoped to one session id; tools that browse a database
(``cmbagent-events runs``, the web viewer, ``tail``) look at every run, so they read through this
instead. Each call opens and closes its own session, so every poll sees the latest commits.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from .columns import decode_json
from .models import EventColumns, RunColumns, models_for
from .placement import Placement

IN_LIST_CHUNK = 500  # ids / seqs per IN (...) clause; well under SQLite's variable limit


def escape_like(text: str) -> str:
    """``text`` with LIKE's wildcards escaped (use with ``escape="\\"``): matched as it is written."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class RunReader:
    """Runs and events across sessions, read in short sessions on ``engine``, from the tables of
    ``placement`` (default: ``CMBAGENT_EVENTS_TABLE_PREFIX`` / ``CMBAGENT_EVENTS_DB_SCHEMA``)."""

    def __init__(self, engine: AsyncEngine, placement: Placement | None = None) -> None:
        self.engine = engine
        self.placement = Placement.from_env() if placement is None else placement
        models = models_for(self.placement)
        self._run: Any = models.WorkflowRun  # Any: the placement's mapped class, typed by its columns
        self._event: Any = models.ExecutionEvent
        self._llm_call: Any = models.LlmCall
        self._llm_content: Any = models.LlmContent
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def list_runs(self, limit: int = 100, offset: int = 0) -> Sequence[RunColumns]:
        """Runs, newest first."""
        query = (select(self._run).order_by(self._run.started_at.desc(), self._run.id.desc())
                 .limit(limit).offset(offset))
        async with self._sessions() as session:
            return (await session.scalars(query)).all()

    async def get_run(self, run_id: str) -> RunColumns | None:
        async with self._sessions() as session:
            return await session.get(self._run, run_id)

    async def latest_run(self) -> RunColumns | None:
        runs = await self.list_runs(limit=1)
        return runs[0] if runs else None

    async def matching_run_ids(self, prefix: str) -> list[str]:
        """``[prefix]`` when it is a run id, else up to two run ids starting with it (two: ambiguous)."""
        async with self._sessions() as session:
            if await session.get(self._run, prefix) is not None:
                return [prefix]
            query = select(self._run.id).where(self._run.id.like(escape_like(prefix) + "%", escape="\\")).limit(2)
            return list((await session.scalars(query)).all())

    async def count_events(self, run_id: str) -> int:
        query = select(func.count()).select_from(self._event).where(self._event.run_id == run_id)
        async with self._sessions() as session:
            return int((await session.scalar(query)) or 0)

    async def last_seq(self, run_id: str) -> int:
        """The highest stored seq of the run (-1 when it has no events)."""
        query = select(func.max(self._event.seq)).where(self._event.run_id == run_id)
        async with self._sessions() as session:
            value = await session.scalar(query)
        return -1 if value is None else int(value)

    async def last_child_seqs(self, run_id: str) -> dict[str, int]:
        """For each event of the run that has children: the seq of its last direct child."""
        event = self._event
        query = (select(event.parent_event_id, func.max(event.seq))
                 .where(event.run_id == run_id, event.parent_event_id.is_not(None))
                 .group_by(event.parent_event_id))
        async with self._sessions() as session:
            return {parent: int(seq) for parent, seq in (await session.execute(query)).all()}

    async def events_after(self, run_id: str, after_seq: int, limit: int = 500,
                           upto_seq: int | None = None) -> Sequence[EventColumns]:
        """Events with ``after_seq < seq`` (``<= upto_seq`` when given), in seq order, at most ``limit``."""
        query = select(self._event).where(self._event.run_id == run_id, self._event.seq > after_seq)
        if upto_seq is not None:
            query = query.where(self._event.seq <= upto_seq)
        async with self._sessions() as session:
            return (await session.scalars(query.order_by(self._event.seq).limit(limit))).all()

    async def events_by_seq(self, run_id: str, seqs: Collection[int]) -> list[EventColumns]:
        """The events of ``run_id`` with these seqs (those that exist), in seq order."""
        return await self._in(self._event.seq, list(seqs), self._event.run_id == run_id)

    async def events_by_id(self, ids: Collection[str]) -> list[EventColumns]:
        """The events with these ids (those that exist), in seq order."""
        return await self._in(self._event.id, list(ids))

    async def _in(self, column: Any, values: list[Any], *where: Any) -> list[EventColumns]:
        out: list[EventColumns] = []
        async with self._sessions() as session:
            for i in range(0, len(values), IN_LIST_CHUNK):
                query = select(self._event).where(column.in_(values[i:i + IN_LIST_CHUNK]), *where)
                out.extend((await session.scalars(query)).all())
        out.sort(key=lambda e: e.seq)
        return out

    async def llm_exchanges(self, run_id: str, event_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        """The stored conversations of these model calls: event id -> ``{"messages": [...], "response":
        {...}}`` (OpenAI chat format; a message missing from ``llm_contents`` is None). Empty for a
        database older than the llm tables."""
        ids = list(event_ids)
        if not ids:
            return {}
        call, content = self._llm_call, self._llm_content
        try:
            async with self._sessions() as session:
                calls: list[Any] = []
                for i in range(0, len(ids), IN_LIST_CHUNK):
                    query = select(call.event_id, call.messages, call.response).where(
                        call.run_id == run_id, call.event_id.in_(ids[i:i + IN_LIST_CHUNK]))
                    calls.extend((await session.execute(query)).all())
                wanted = list({ref for _, messages, response in calls
                               for ref in [*(decode_json(messages) or []), response] if ref is not None})
                bodies: dict[int, Any] = {}
                for i in range(0, len(wanted), IN_LIST_CHUNK):
                    query = select(content.ordinal, content.body).where(
                        content.run_id == run_id, content.ordinal.in_(wanted[i:i + IN_LIST_CHUNK]))
                    bodies.update((h, decode_json(body)) for h, body in (await session.execute(query)).all())
        except DBAPIError:  # no llm tables yet (a database at an older revision, read as it is)
            return {}
        return {event_id: {"messages": [bodies.get(ref) for ref in decode_json(messages) or []],
                           "response": bodies.get(response) if response is not None else None}
                for event_id, messages, response in calls}

