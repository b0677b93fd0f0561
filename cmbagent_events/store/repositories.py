"""Read/write repositories over an ``AsyncSession`` (the seed's Stage 1 API, async).

Capture does not go through these (the writer uses the raw driver paths in ``sink.py``); they
are for reading runs back and for tools, tests and the viewer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..ids import new_run_id
from .models import EventColumns, FileColumns, MessageColumns, RunColumns, models_for
from .placement import Placement


def _models(placement: Placement | None) -> Any:
    return models_for(Placement.from_env() if placement is None else placement)


class WorkflowRepository:
    """Runs of one session, in the tables of ``placement`` (default: from the environment)."""

    def __init__(self, session: AsyncSession, session_id: str, placement: Placement | None = None) -> None:
        self.session = session
        self.session_id = session_id
        self._run = _models(placement).WorkflowRun

    async def create_run(self, task_description: str = "", mode: str = "one_shot", agent: str | None = None,
                         model: str | None = None, meta: dict[str, Any] | None = None,
                         run_id: str | None = None) -> RunColumns:
        """Insert and commit a new ``running`` run."""
        run = self._run(id=run_id or new_run_id(), session_id=self.session_id, task_description=task_description,
                        mode=mode, agent=agent, model=model, status="running", started_at=datetime.now(UTC),
                        total_events=0, dropped_events=0, meta=meta or {})
        self.session.add(run)
        await self.session.commit()
        created: RunColumns = run
        return created

    async def get_run(self, run_id: str) -> RunColumns | None:
        run = await self.session.get(self._run, run_id)
        return run if run is not None and run.session_id == self.session_id else None

    async def list_runs(self, limit: int | None = None) -> Sequence[RunColumns]:
        """This session's runs, newest first."""
        query = (select(self._run).where(self._run.session_id == self.session_id)
                 .order_by(self._run.started_at.desc(), self._run.id.desc()))
        if limit:
            query = query.limit(limit)
        return (await self.session.scalars(query)).all()


class EventRepository:
    """Events (and their message/file rows) of one session, in the tables of ``placement``
    (default: from the environment)."""

    def __init__(self, session: AsyncSession, session_id: str, placement: Placement | None = None) -> None:
        self.session = session
        self.session_id = session_id
        models = _models(placement)
        self._event, self._message, self._file = models.ExecutionEvent, models.Message, models.File

    async def get_event(self, event_id: str) -> EventColumns | None:
        event = await self.session.get(self._event, event_id, populate_existing=True)
        return event if event is not None and event.session_id == self.session_id else None

    async def list_events(self, run_id: str, event_type: str | None = None,
                          after_seq: int | None = None) -> Sequence[EventColumns]:
        """A run's events in ``seq`` order, optionally of one type or after a given seq."""
        query = select(self._event).where(self._event.run_id == run_id, self._event.session_id == self.session_id)
        if event_type is not None:
            query = query.where(self._event.event_type == event_type)
        if after_seq is not None:
            query = query.where(self._event.seq > after_seq)
        return (await self.session.scalars(query.order_by(self._event.seq))).all()

    async def get_children(self, event_id: str) -> Sequence[EventColumns]:
        event = self._event
        run_id = select(event.run_id).where(event.id == event_id).scalar_subquery()
        # within the parent's run (its (run_id, seq) index): events have no index by parent (0004)
        query = select(event).where(event.run_id == run_id, event.parent_event_id == event_id).order_by(event.seq)
        return (await self.session.scalars(query)).all()

    async def list_messages(self, run_id: str) -> Sequence[MessageColumns]:
        message = self._message
        query = select(message).where(message.run_id == run_id).order_by(message.timestamp, message.id)
        return (await self.session.scalars(query)).all()

    async def list_files(self, run_id: str) -> Sequence[FileColumns]:
        query = select(self._file).where(self._file.run_id == run_id).order_by(self._file.created_at, self._file.id)
        return (await self.session.scalars(query)).all()

    async def get_message_for_event(self, event_id: str) -> MessageColumns | None:
        return (await self.session.scalars(select(self._message).where(self._message.event_id == event_id))).first()

    async def get_file_for_event(self, event_id: str) -> FileColumns | None:
        return (await self.session.scalars(select(self._file).where(self._file.event_id == event_id))).first()
