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
from .models import ExecutionEvent, File, Message, WorkflowRun


class WorkflowRepository:
    """Runs of one session."""

    def __init__(self, session: AsyncSession, session_id: str) -> None:
        self.session = session
        self.session_id = session_id

    async def create_run(self, task_description: str = "", mode: str = "one_shot", agent: str | None = None,
                         model: str | None = None, meta: dict[str, Any] | None = None,
                         run_id: str | None = None) -> WorkflowRun:
        """Insert and commit a new ``running`` run."""
        run = WorkflowRun(id=run_id or new_run_id(), session_id=self.session_id, task_description=task_description,
                          mode=mode, agent=agent, model=model, status="running", started_at=datetime.now(UTC),
                          total_events=0, dropped_events=0, meta=meta or {})
        self.session.add(run)
        await self.session.commit()
        return run

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        run = await self.session.get(WorkflowRun, run_id)
        return run if run is not None and run.session_id == self.session_id else None

    async def list_runs(self, limit: int | None = None) -> Sequence[WorkflowRun]:
        """This session's runs, newest first."""
        query = (select(WorkflowRun).where(WorkflowRun.session_id == self.session_id)
                 .order_by(WorkflowRun.started_at.desc(), WorkflowRun.id.desc()))
        if limit:
            query = query.limit(limit)
        return (await self.session.scalars(query)).all()


class EventRepository:
    """Events (and their message/file rows) of one session."""

    def __init__(self, session: AsyncSession, session_id: str) -> None:
        self.session = session
        self.session_id = session_id

    async def get_event(self, event_id: str) -> ExecutionEvent | None:
        event = await self.session.get(ExecutionEvent, event_id, populate_existing=True)
        return event if event is not None and event.session_id == self.session_id else None

    async def list_events(self, run_id: str, event_type: str | None = None,
                          after_seq: int | None = None) -> Sequence[ExecutionEvent]:
        """A run's events in ``seq`` order, optionally of one type or after a given seq."""
        query = select(ExecutionEvent).where(ExecutionEvent.run_id == run_id,
                                             ExecutionEvent.session_id == self.session_id)
        if event_type is not None:
            query = query.where(ExecutionEvent.event_type == event_type)
        if after_seq is not None:
            query = query.where(ExecutionEvent.seq > after_seq)
        return (await self.session.scalars(query.order_by(ExecutionEvent.seq))).all()

    async def get_children(self, event_id: str) -> Sequence[ExecutionEvent]:
        query = select(ExecutionEvent).where(ExecutionEvent.parent_event_id == event_id).order_by(ExecutionEvent.seq)
        return (await self.session.scalars(query)).all()

    async def list_messages(self, run_id: str) -> Sequence[Message]:
        query = select(Message).where(Message.run_id == run_id).order_by(Message.timestamp, Message.id)
        return (await self.session.scalars(query)).all()

    async def list_files(self, run_id: str) -> Sequence[File]:
        query = select(File).where(File.run_id == run_id).order_by(File.created_at, File.id)
        return (await self.session.scalars(query)).all()

    async def get_message_for_event(self, event_id: str) -> Message | None:
        return (await self.session.scalars(select(Message).where(Message.event_id == event_id))).first()

    async def get_file_for_event(self, event_id: str) -> File | None:
        return (await self.session.scalars(select(File).where(File.event_id == event_id))).first()
