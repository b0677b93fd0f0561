"""The read API's async core: runs, events, trees, cost rollups and run comparison, as plain dicts.

:class:`AsyncStore` holds one read-only engine (``opening.py``); every method opens a short session,
so each call sees the latest commits of a run still being captured. Events are read in pages
(keyset on ``seq``), so a 100,000-event run is never held by the store as a whole unless asked for.
The sync :class:`~cmbagent_events.read.sync.Store` runs these same methods on a private loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select, type_coerce
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import Text

from ..errors import EventNotFound, RunNotFound
from ..store.columns import EVENT_COLUMNS, RUN_COLUMNS
from ..store.models import models_for
from ..store.placement import Placement
from ..store.reader import escape_like
from . import compare, llm_calls, rollup
from .opening import check_readable, database_for, read_only_engine

PAGE = 2000  # events per query when streaming a run
DIFF_PAGE = 5000  # rows per query when comparing runs (a few columns each)
DIFF_LOOKAHEAD = 2000  # events read past a divergence before it is taken as the first
_FIRST_DIVERGENCE_CONTEXT = 3  # events shown after the first divergence, per run


def run_dict(row: Any) -> dict[str, Any]:
    """A ``workflow_runs`` row as a dict of its columns, plus ``duration_s``, ``total_tokens``, ``cost``
    and ``llm_calls`` (from the run's usage totals; None while unknown)."""
    out = {c: getattr(row, c) for c in RUN_COLUMNS}
    meta: dict[str, Any] = out["meta"] if isinstance(out["meta"], dict) else {}
    usage: dict[str, Any] = meta["usage"] if isinstance(meta.get("usage"), dict) else {}
    started, completed = out["started_at"], out["completed_at"]
    out["duration_s"] = (round((completed - started).total_seconds(), 3)
                         if started is not None and completed is not None else None)
    out["total_tokens"] = usage.get("total_tokens")
    out["cost"] = usage.get("cost")
    out["llm_calls"] = usage.get("calls")
    return out


def event_dict(row: Any) -> dict[str, Any]:
    """An ``execution_events`` row as a dict of its columns (``id`` included)."""
    return {c: getattr(row, c) for c in EVENT_COLUMNS}


class AsyncStore:
    """Read-only access to captured runs (see :func:`open_async_store`)."""

    def __init__(self, db_url: str | None = None, *, table_prefix: str | None = None,
                 db_schema: str | None = None) -> None:
        env = Placement.from_env()
        self.db = database_for(db_url)
        self.placement = Placement(env.prefix if table_prefix is None else table_prefix,
                                   env.schema if db_schema is None else (db_schema or None))
        models = models_for(self.placement)
        self._run: Any = models.WorkflowRun
        self._event: Any = models.ExecutionEvent
        self._file: Any = models.File
        self._llm_call: Any = models.LlmCall
        self._llm_content: Any = models.LlmContent
        self._engine: Any = None
        self.revision: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------------
    async def open(self) -> AsyncStore:
        """Check the database is ours (never creating anything) and connect; idempotent."""
        if self._engine is None:
            self.revision = await check_readable(self.db, self.placement)
            self._engine = read_only_engine(self.db)
        return self

    async def aclose(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    async def __aenter__(self) -> AsyncStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _rows(self, query: Any) -> list[Any]:
        await self.open()
        async with self._engine.connect() as conn:
            try:
                return list((await conn.execute(query)).all())
            except DBAPIError as exc:
                # PostgreSQL refuses a NUL in a text parameter (an id or filter typed by hand, a viewer
                # query): no stored text holds one (the writer stores none), so nothing matches
                if "0x00" not in str(exc):
                    raise
                return []

    # -- runs ------------------------------------------------------------------------------------------
    async def runs(self, limit: int | None = 50, *, offset: int = 0, status: str | None = None,
                   mode: str | None = None, since: datetime | date | str | None = None,
                   task_contains: str | None = None) -> list[dict[str, Any]]:
        """Runs, newest first, filtered by status, mode, start time (``since``: a datetime, a date or an
        ISO string; without a zone it is UTC, as the times the store returns and the CLI shows) and a
        case-insensitive piece of the task text."""
        run = self._run
        query = select(*(getattr(run, c) for c in RUN_COLUMNS))
        if status is not None:
            query = query.where(run.status == status)
        if mode is not None:
            query = query.where(run.mode == mode)
        if since is not None:
            query = query.where(run.started_at >= self._instant(since))
        if task_contains:
            query = query.where(run.task_description.ilike(f"%{escape_like(task_contains)}%", escape="\\"))
        query = query.order_by(run.started_at.desc(), run.id.desc()).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        return [run_dict(r) for r in await self._rows(query)]

    def _instant(self, since: datetime | date | str) -> datetime:
        if isinstance(since, str):
            since = datetime.fromisoformat(since)
        if not isinstance(since, datetime):
            since = datetime(since.year, since.month, since.day)
        # naive: UTC, as every time the package stores and shows (a run's started_at read back from
        # SQLite is naive UTC: handed back here it must mean the same instant)
        since = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
        return since.replace(tzinfo=None) if self.db.is_sqlite else since  # SQLite stores UTC without a zone

    async def run(self, run_id: str) -> dict[str, Any]:
        """One run by its id or a unique prefix of it.

        Raises:
            RunNotFound: no such run, or the prefix matches several.
        """
        run = self._run
        columns = [getattr(run, c) for c in RUN_COLUMNS]
        rows = await self._rows(select(*columns).where(run.id == run_id))
        if not rows:
            rows = await self._rows(select(*columns).where(run.id.like(escape_like(run_id) + "%", escape="\\"))
                                    .limit(2))
        if len(rows) != 1:
            raise RunNotFound.named(run_id, several=bool(rows))
        return run_dict(rows[0])

    async def run_id(self, run_id: str) -> str:
        """The full id of the run ``run_id`` names (an id or a unique prefix)."""
        return str((await self.run(run_id))["id"])

    # -- events ----------------------------------------------------------------------------------------
    async def event(self, event_id: str) -> dict[str, Any]:
        """One event by its id.

        Raises:
            EventNotFound: no event with that id.
        """
        event = self._event
        rows = await self._rows(select(*(getattr(event, c) for c in EVENT_COLUMNS)).where(event.id == event_id))
        if not rows:
            raise EventNotFound(f"event {event_id!r} is not in this database (a run's events: cmbagent-events show)")
        return event_dict(rows[0])

    async def llm_calls(self, run_id: str) -> list[dict[str, Any]]:
        """Every model call of the run, in seq order, as :meth:`llm_call` gives one, each with ``seq``
        and ``bodies``: its messages' and tools' stored JSON text (what replay compares requests by)."""
        run_id = await self.run_id(run_id)
        events = await self.events(run_id, event_type="llm_call")
        if not llm_calls.has_llm_tables(self.revision):
            return [{**llm_calls.assemble(e, None, {}), "seq": e["seq"], "bodies": None} for e in events]
        call_table, content = self._llm_call, self._llm_content
        calls = {c.event_id: c for c in await self._rows(select(call_table).where(call_table.run_id == run_id))}
        bodies = dict(await self._rows(select(content.ordinal, content.body).where(content.run_id == run_id)))
        out = []
        for event in events:
            call = calls.get(event["id"])
            whole = llm_calls.assemble(event, call, bodies)
            whole["seq"] = event["seq"]
            whole["bodies"] = llm_calls.raw_bodies(call, bodies) if call is not None else None
            out.append(whole)
        return out

    async def llm_call(self, event_id: str) -> dict[str, Any]:
        """A model call whole: ``{"request": {"model", "messages", "tools", "params"}, "response", "usage",
        "cost", "cost_source", "replayable", "note", ...}``, messages and tools in the OpenAI chat format,
        the response as the client returned it (e.g. a ``ChatCompletion``'s JSON). A call stored without
        them (an older run, or ``CMBAGENT_CAPTURE_LLM_MESSAGES=false``) has ``messages`` and ``response``
        None and says so in ``note``.

        Raises:
            EventNotFound: no event with that id, or it is not an ``llm_call``.
        """
        found = await self.event(event_id)
        if found["event_type"] != "llm_call":
            raise EventNotFound(f"event {event_id!r} is not an llm_call but {found['event_type']!r}")
        if not llm_calls.has_llm_tables(self.revision):
            return llm_calls.assemble(found, None, {})
        call_table, content = self._llm_call, self._llm_content
        calls = await self._rows(select(call_table).where(call_table.event_id == event_id))
        call = calls[0] if calls else None
        bodies: dict[int, str] = {}
        refs = llm_calls.references(call) if call is not None else []
        for start in range(0, len(refs), 500):  # bounded IN lists
            chunk = refs[start:start + 500]
            query = select(content.ordinal, content.body).where(content.run_id == found["run_id"],
                                                                content.ordinal.in_(chunk))
            bodies.update((h, body) for h, body in await self._rows(query))
        return llm_calls.assemble(found, call, bodies)

    def _event_query(self, run_id: str, event_type: str | None, agent: str | None, status: str | None) -> Any:
        event = self._event
        query = select(*(getattr(event, c) for c in EVENT_COLUMNS)).where(event.run_id == run_id)
        if event_type is not None:
            query = query.where(event.event_type == event_type)
        if agent is not None:
            query = query.where(event.agent_name == agent)
        if status is not None:
            query = query.where(event.status == status)
        return query

    async def iter_events(self, run_id: str, event_type: str | None = None, agent: str | None = None,
                          status: str | None = None, *, after_seq: int = -1,
                          page: int = PAGE) -> AsyncIterator[list[dict[str, Any]]]:
        """The run's events in seq order, a page (list of dicts) at a time."""
        run_id = await self.run_id(run_id)
        query = self._event_query(run_id, event_type, agent, status)
        while True:
            rows = await self._rows(query.where(self._event.seq > after_seq).order_by(self._event.seq).limit(page))
            if not rows:
                return
            yield [event_dict(r) for r in rows]
            after_seq = rows[-1].seq

    async def events(self, run_id: str, event_type: str | None = None, agent: str | None = None,
                     status: str | None = None, *, after_seq: int = -1, limit: int | None = None
                     ) -> list[dict[str, Any]]:
        """The run's events in seq order (at most ``limit``), each a dict of the event's columns."""
        out: list[dict[str, Any]] = []
        async for page in self.iter_events(run_id, event_type, agent, status, after_seq=after_seq,
                                           page=PAGE if limit is None else min(PAGE, limit)):
            out.extend(page)
            if limit is not None and len(out) >= limit:
                return out[:limit]
        return out

    async def tree(self, run_id: str) -> list[dict[str, Any]]:
        """The run's events nested: each event dict gets ``children`` (in seq order); the roots returned."""
        nodes: dict[str, dict[str, Any]] = {}
        order: list[dict[str, Any]] = []
        async for page in self.iter_events(run_id):
            for event in page:
                event["children"] = []
                nodes[event["id"]] = event
                order.append(event)
        roots: list[dict[str, Any]] = []
        for event in order:
            parent = nodes.get(event["parent_event_id"]) if event["parent_event_id"] else None
            (parent["children"] if parent is not None else roots).append(event)
        return roots

    async def files(self, run_id: str) -> list[dict[str, Any]]:
        """The files the run produced, in the order they were recorded."""
        run_id = await self.run_id(run_id)
        f = self._file
        rows = await self._rows(select(f.file_path, f.file_type, f.size_bytes, f.event_id, f.created_at)
                                .where(f.run_id == run_id).order_by(f.created_at, f.id))
        return [dict(r._mapping) for r in rows]

    # -- answers ---------------------------------------------------------------------------------------
    async def cost(self, run_id: str, by: str = "agent") -> list[dict[str, Any]]:
        """Cost and time per agent, model, step or node: one dict per group (``name``; ``events``; model
        ``calls``; prompt/completion/cached/total tokens; ``cost``; ``llm_ms``, ``tool_ms``, ``code_ms``
        and their sum ``time_ms``; tool calls, code runs, errors), the costliest first."""
        return (await self.costs(run_id, (by,)))[by]

    async def costs(self, run_id: str, bys: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
        """:meth:`cost` for several groupings, read in one pass over the run."""
        unknown = [by for by in bys if by not in rollup.GROUPINGS]
        if unknown or not bys:
            raise ValueError(f"by must be one of {', '.join(rollup.GROUPINGS)}, got {unknown or bys!r}")
        run_id = await self.run_id(run_id)
        usage, activity = await asyncio.gather(self._rows(rollup.usage_query(self._event, run_id, bys)),
                                               self._rows(rollup.activity_query(self._event, run_id, bys)))
        return rollup.merge(bys, usage, activity)

    async def cost_total(self, run_id: str) -> dict[str, Any]:
        """The run's cost and time as one row (the sum of :meth:`cost`'s rows)."""
        return rollup.total(await self.cost(run_id, "agent"))

    async def diff(self, run_a: str, run_b: str) -> dict[str, Any]:
        """How run B differs from run A: ``first_divergence`` (None when both did the same: the agent,
        each run's event there and the few events after it), the agents seen diverging, per agent and
        model the figures of both and B minus A, and the files only one of them produced.

        The database first finds the first position where the two runs' stored events differ at all
        (one indexed join); only from there are events read and aligned per agent (compare.py), until
        the first divergence is certain."""
        a, b = await self.run(run_a), await self.run(run_b)
        dirs = (compare.work_dirs_of(a["meta"]), compare.work_dirs_of(b["meta"]))
        start = await self._first_stored_difference(a["id"], b["id"])
        aligner = compare.Aligner(*dirs)
        if start is not None:
            await self._align(aligner, a["id"], b["id"], start)
        divergences = aligner.divergences()
        first = await self._divergence(a["id"], b["id"], divergences[0]) if divergences else None
        files_a, files_b = await self.files(a["id"]), await self.files(b["id"])
        paths_a = compare.normalised_paths([f["file_path"] for f in files_a], dirs[0])
        paths_b = compare.normalised_paths([f["file_path"] for f in files_b], dirs[1])
        before = start if start is not None else min(a["total_events"], b["total_events"])
        # each run's rollups in one pass, both runs at once (on SQLite, threads of their own)
        rollup_a, rollup_b = await asyncio.gather(self.costs(a["id"], ("agent", "model")),
                                                  self.costs(b["id"], ("agent", "model")))
        return {
            "run_a": a["id"], "run_b": b["id"], "same": not divergences,
            "events": {"a": a["total_events"], "b": b["total_events"], "matched": before + aligner.matched},
            "first_divergence": first,
            "diverged_agents": [{"agent": agent, "seq_a": x[0] if x else None, "seq_b": y[0] if y else None}
                                for agent, x, y in divergences],
            "by_agent": compare.merge_rollups(rollup_a["agent"], rollup_b["agent"]),
            "by_model": compare.merge_rollups(rollup_a["model"], rollup_b["model"]),
            "files": {"only_a": [paths_a[p] for p in paths_a if p not in paths_b],
                      "only_b": [paths_b[p] for p in paths_b if p not in paths_a]},
        }

    async def _first_stored_difference(self, run_a: str, run_b: str) -> int | None:
        """The first seq at which the two runs' stored events differ in any compared column (or where
        one run has an event the other lacks); None when they are stored alike."""
        from sqlalchemy import and_, cast, func, or_
        from sqlalchemy.orm import aliased

        x, y = aliased(self._event), aliased(self._event)
        plain = ("agent_name", "event_type", "event_subtype", "status", "error_message")
        differs = or_(*(getattr(x, c).is_distinct_from(getattr(y, c)) for c in plain),
                      *(cast(getattr(x, c), Text).is_distinct_from(cast(getattr(y, c), Text))
                        for c in ("inputs", "outputs")))
        rows = await self._rows(select(x.seq).join(y, and_(y.run_id == run_b, y.seq == x.seq))
                                .where(x.run_id == run_a, differs).order_by(x.seq).limit(1))
        if rows:
            return int(rows[0][0])
        event = self._event
        counts = await self._rows(select(event.run_id, func.count(), func.max(event.seq))
                                  .where(event.run_id.in_((run_a, run_b))).group_by(event.run_id))
        shape = {run_id: (int(n), int(top)) for run_id, n, top in counts}
        if shape.get(run_a) == shape.get(run_b):
            return None
        return min(top for _, top in shape.values()) + 1 if len(shape) == 2 else 0

    async def _align(self, aligner: compare.Aligner, run_a: str, run_b: str, start: int) -> None:
        """Feed both runs' events from ``start`` on, until the first divergence is settled: the two
        streams have gone ``DIFF_LOOKAHEAD`` events past it (an agent late in one run is still paired)."""
        pages = [self._fingerprint_pages(run_a, start - 1), self._fingerprint_pages(run_b, start - 1)]
        live, last = [True, True], [start - 1, start - 1]
        while any(live):
            for side in (0, 1):
                if not live[side]:
                    continue
                page = await anext(pages[side], None)
                if page is None:
                    live[side] = False
                    continue
                for row in page:
                    aligner.add(side, row)
                last[side] = page[-1].seq
            found = aligner.earliest_divergence()
            if found is not None and min(last) > found + DIFF_LOOKAHEAD:
                for side in (0, 1):
                    await pages[side].aclose()
                return

    async def _fingerprint_pages(self, run_id: str, after: int) -> AsyncGenerator[list[Any], None]:
        event = self._event
        # JSON columns as their stored text: decoded only for events whose stored text differs
        query = select(event.id, event.seq, event.event_type, event.event_subtype, event.agent_name, event.status,
                       event.error_message, type_coerce(event.inputs, Text).label("inputs"),
                       type_coerce(event.outputs, Text).label("outputs"),
                       type_coerce(event.meta, Text).label("meta")).where(event.run_id == run_id)
        while True:
            rows = await self._rows(query.where(event.seq > after).order_by(event.seq).limit(DIFF_PAGE))
            if not rows:
                return
            yield rows
            after = rows[-1].seq

    async def _divergence(self, run_a: str, run_b: str, where: tuple[Any, Any, Any]) -> dict[str, Any]:
        from ..render import summary

        agent, at_a, at_b = where
        out: dict[str, Any] = {"agent": agent}
        for side, run_id, at in (("a", run_a, at_a), ("b", run_b, at_b)):
            if at is None:
                out[side], out[f"then_{side}"] = None, []
                continue
            events = await self.events(run_id, after_seq=at[0] - 1, limit=_FIRST_DIVERGENCE_CONTEXT + 1)
            out[side] = summary(events[0]) if events else None
            out[f"then_{side}"] = [summary(e) for e in events[1:]]
        return out
