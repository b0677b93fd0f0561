"""SQLAlchemy 2 models of the four tables (names and columns fixed by CONTRACT.md).

Timestamps are UTC. JSON columns use the generic JSON type: TEXT on SQLite, ``json`` on
PostgreSQL (``jsonb`` halves COPY throughput and its ordering/normalisation buys us nothing
on the write path; queries can still cast to jsonb).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class WorkflowRun(Base):
    """One captured run: who, what, when, how it ended and how many events it produced/lost."""

    __tablename__ = "workflow_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(128), index=True)
    task_description: Mapped[str | None] = mapped_column(Text)
    mode: Mapped[str | None] = mapped_column(String(64))
    agent: Mapped[str | None] = mapped_column(String(256))
    model: Mapped[str | None] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(32), default="running")
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    total_events: Mapped[int] = mapped_column(Integer, default=0)
    dropped_events: Mapped[int] = mapped_column(Integer, default=0)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ExecutionEvent(Base):
    """One captured event; agent calls are one row from start to completion."""

    __tablename__ = "execution_events"
    __table_args__ = (
        Index("ix_execution_events_run_seq", "run_id", "seq"),
        Index("ix_execution_events_parent", "parent_event_id"),
        Index("ix_execution_events_type", "event_type"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str] = mapped_column(String(128))
    node_id: Mapped[str | None] = mapped_column(String(256))
    step_id: Mapped[str | None] = mapped_column(String(256))
    parent_event_id: Mapped[str | None] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    event_subtype: Mapped[str | None] = mapped_column(String(64))
    agent_name: Mapped[str | None] = mapped_column(String(256))
    execution_order: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    depth: Mapped[int] = mapped_column(Integer, default=0)
    inputs: Mapped[Any] = mapped_column(JSON)
    outputs: Mapped[Any] = mapped_column(JSON)
    error_message: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(String(32))
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[float | None] = mapped_column(Float)
    meta: Mapped[Any] = mapped_column(JSON)


class Message(Base):
    """An agent-to-agent message, linked to its ``agent_call``/``message`` event."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    event_id: Mapped[str | None] = mapped_column(String(64), index=True)
    node_id: Mapped[str | None] = mapped_column(String(256))
    step_id: Mapped[str | None] = mapped_column(String(256))
    sender: Mapped[str | None] = mapped_column(String(256))
    recipient: Mapped[str | None] = mapped_column(String(256))
    content: Mapped[str | None] = mapped_column(Text)
    tokens: Mapped[int | None] = mapped_column(Integer)
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class File(Base):
    """A file produced during the run, linked to its ``file_gen`` event."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    event_id: Mapped[str | None] = mapped_column(String(64), index=True)
    node_id: Mapped[str | None] = mapped_column(String(256))
    step_id: Mapped[str | None] = mapped_column(String(256))
    file_path: Mapped[str] = mapped_column(Text)
    file_type: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
