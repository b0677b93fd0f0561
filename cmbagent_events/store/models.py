"""SQLAlchemy 2 models of the six tables (names and columns fixed: docs/architecture.md, "Tables").

The columns are declared once, on mixins, and mapped by one loop: to the default table names
(``WorkflowRun``, ``ExecutionEvent``, ``Message``, ``File``) and, through :func:`models_for`, for any
other :class:`~cmbagent_events.store.placement.Placement` (prefixed names, a PostgreSQL schema).
Read code annotates with the mixins (``RunColumns``...), so it works on either.

Timestamps are UTC. JSON columns use the generic JSON type: TEXT on SQLite, ``json`` on
PostgreSQL (``jsonb`` halves COPY throughput and its ordering/normalisation buys us nothing
on the write path; queries can still cast to jsonb).
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import JSON, BigInteger, DateTime, Float, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .placement import DEFAULT_PLACEMENT, Placement


class Base(DeclarativeBase):
    pass


class RunColumns:
    """One captured run: who, what, when, how it ended and how many events it produced/lost."""

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(128))
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


class EventColumns:
    """One captured event; agent calls are one row from start to completion."""

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


class MessageColumns:
    """An agent-to-agent message, linked to its ``agent_call``/``message`` event."""

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str | None] = mapped_column(String(64))
    node_id: Mapped[str | None] = mapped_column(String(256))
    step_id: Mapped[str | None] = mapped_column(String(256))
    sender: Mapped[str | None] = mapped_column(String(256))
    recipient: Mapped[str | None] = mapped_column(String(256))
    content: Mapped[str | None] = mapped_column(Text)
    tokens: Mapped[int | None] = mapped_column(Integer)
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FileColumns:
    """A file produced during the run, linked to its ``file_gen`` event."""

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str | None] = mapped_column(String(64))
    node_id: Mapped[str | None] = mapped_column(String(256))
    step_id: Mapped[str | None] = mapped_column(String(256))
    file_path: Mapped[str] = mapped_column(Text)
    file_type: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LlmCallColumns:
    """A model call's request and response, by reference to ``llm_contents`` (one row per llm_call event)."""

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(256))
    messages: Mapped[Any] = mapped_column(JSON)
    tools: Mapped[int | None] = mapped_column(Integer)
    params: Mapped[Any] = mapped_column(JSON)
    response: Mapped[int | None] = mapped_column(Integer)
    replayable: Mapped[int] = mapped_column(Integer, default=0)
    note: Mapped[str | None] = mapped_column(Text)


class LlmContentColumns:
    """One distinct message, tool list or response of a run, stored once (content-addressed)."""

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ordinal: Mapped[int] = mapped_column(Integer, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    cut: Mapped[int] = mapped_column(Integer, default=0)


# Index names spelled out (not index=True) so a schema never leaks into them.
INDEXES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "workflow_runs": (("session_id", ("session_id",)), ("started_at", ("started_at",))),
    "execution_events": (("run_seq", ("run_id", "seq")),),  # every read is a run's, in seq order (0004)
    "messages": (("run_id", ("run_id",)), ("event_id", ("event_id",))),
    "files": (("run_id", ("run_id",)), ("event_id", ("event_id",))),
    "llm_calls": (("run_id", ("run_id",)),),
    "llm_contents": (),
}


def _table_args(placement: Placement, table: str) -> tuple[Any, ...]:
    indexes = tuple(Index(placement.index(table, suffix), *columns) for suffix, columns in INDEXES[table])
    return (*indexes, {"schema": placement.schema}) if placement.schema else indexes


class Models(NamedTuple):
    """The mapped classes of one placement."""

    Base: type[DeclarativeBase]
    WorkflowRun: type[RunColumns]
    ExecutionEvent: type[EventColumns]
    Message: type[MessageColumns]
    File: type[FileColumns]
    LlmCall: type[LlmCallColumns]
    LlmContent: type[LlmContentColumns]


# (class name, columns, table), in Models' order.
_TABLES: tuple[tuple[str, type, str], ...] = (
    ("WorkflowRun", RunColumns, "workflow_runs"), ("ExecutionEvent", EventColumns, "execution_events"),
    ("Message", MessageColumns, "messages"), ("File", FileColumns, "files"),
    ("LlmCall", LlmCallColumns, "llm_calls"), ("LlmContent", LlmContentColumns, "llm_contents"),
)


def _mapped_classes(placement: Placement, base: type[DeclarativeBase]) -> Models:
    """The tables of ``placement`` mapped on ``base``: the columns mixin, its table name and indexes."""
    classes = [type(name, (columns, base), {"__tablename__": placement.table(table),
                                            "__table_args__": _table_args(placement, table), "__module__": __name__})
               for name, columns, table in _TABLES]
    return Models(base, *classes)


_DEFAULT_MODELS = _mapped_classes(DEFAULT_PLACEMENT, Base)
# The default placement's classes, importable by name (the seed's models; tests and users query with them).
WorkflowRun = _DEFAULT_MODELS.WorkflowRun
ExecutionEvent = _DEFAULT_MODELS.ExecutionEvent
Message = _DEFAULT_MODELS.Message
File = _DEFAULT_MODELS.File
LlmCall = _DEFAULT_MODELS.LlmCall
LlmContent = _DEFAULT_MODELS.LlmContent


@functools.cache
def models_for(placement: Placement = DEFAULT_PLACEMENT) -> Models:
    """The mapped classes for ``placement`` (built once per placement; the default ones for the default)."""
    if placement.is_default:
        return _DEFAULT_MODELS

    class PlacedBase(DeclarativeBase):
        pass

    return _mapped_classes(placement, PlacedBase)
