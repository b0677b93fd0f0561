"""Batch sinks: one transaction per batch, on the fastest sound path of each driver.

- SQLite: one plain sqlite3 connection per file and process, in WAL mode (``synchronous=NORMAL``),
  on its own daemon thread (``sqlite_thread.py``): a batch is one thread hop, ``executemany`` of
  prepared tuples; SQLAlchemy is bypassed here because its per-row compile work halves throughput
  (docs/architecture.md, "Measured costs").
- PostgreSQL: one asyncpg connection, kept for the loop's next run (``pg_connections.py``); new
  rows go in with binary ``COPY`` (~2x executemany),
  completions and run updates with ``executemany`` of parameterised UPDATEs. Each batch (and the
  run's close) also sends ``pg_notify('cmbagent_events', '{"run_id": ..., "max_seq": ...}')`` in
  its transaction, so live readers in other processes wake at commit (``live/notify.py``).

Rows arrive as tuples in the column orders of ``columns.py``, already sanitised and JSON-encoded by the
writer; sinks only move them. A driver's exception never leaves a sink: it is mapped to
``errors.DatabaseUnavailable`` (retry until the database is back) or ``errors.BatchRejected``.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, repeat
from operator import floordiv, mod, truediv
from typing import Any, Protocol

from ..errors import BatchRejected, DatabaseFileReplaced, DatabaseUnavailable, StoreError
from . import pg_connections
from .columns import (
    EVENT_COLUMNS,
    FILE_COLUMNS,
    LLM_CALL_COLUMNS,
    LLM_CONTENT_COLUMNS,
    MESSAGE_COLUMNS,
    RUN_COLUMNS,
    Event,
    RunFinish,
)
from .database import Database, check_placement, resolve_db, sqlite_path
from .placement import DEFAULT_PLACEMENT, Placement
from .sqlite_thread import sqlite_thread


@dataclass(slots=True)
class Batch:
    """Rows for one transaction.

    ``run_insert`` (a ``columns.Run`` row) rides with a run's first batch and ``run_finish``
    (a ``columns.RunFinish`` row) with its last, so opening and closing a run cost no transaction
    of their own. ``events`` are ``columns.Event`` rows (lists while the writer builds them),
    ``updates`` ``columns.Update`` rows.
    """

    events: list[Any] = field(default_factory=list)
    updates: list[tuple[Any, ...]] = field(default_factory=list)
    # message rows stay lists until the writer has encoded their contents (in one pass per batch)
    messages: list[tuple[Any, ...] | list[Any]] = field(default_factory=list)
    files: list[tuple[Any, ...]] = field(default_factory=list)
    llm_calls: list[tuple[Any, ...]] = field(default_factory=list)  # columns.LlmCallRow rows
    llm_contents: list[tuple[Any, ...]] = field(default_factory=list)  # columns.LlmContentRow rows, new to the run
    run_insert: tuple[Any, ...] | None = None
    run_finish: tuple[Any, ...] | None = None
    heartbeat: tuple[Any, ...] | None = None  # (meta patch JSON, run id): the run's sign of life (close-orphans)

    def __len__(self) -> int:
        return len(self.events) + len(self.updates)

    def is_empty(self) -> bool:
        return not (self.events or self.updates or self.run_insert or self.run_finish or self.heartbeat)


class Sink(Protocol):
    """What the writer needs from a database."""

    def timestamp(self, t_ns: int) -> Any: ...
    def timestamps(self, t_ns: Sequence[int]) -> list[Any]: ...
    async def open(self) -> None: ...
    async def write(self, batch: Batch) -> None: ...
    async def close(self) -> None: ...


_NS = 1_000_000_000

# SQLite result codes (primary, the low byte) that mean "not now" rather than "not this data".
_SQLITE_UNAVAILABLE = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_READONLY,
                                 sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN})


def sqlite_error(exc: Exception) -> StoreError:
    """The typed error for an exception from sqlite3 (raise it ``from exc``)."""
    if isinstance(exc, StoreError):
        return exc
    unavailable = isinstance(exc, OSError)
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        unavailable = code is not None and code & 0xFF in _SQLITE_UNAVAILABLE
    return (DatabaseUnavailable if unavailable else BatchRejected)(f"SQLite: {exc!r}")


def postgres_error(exc: Exception) -> StoreError:
    """The typed error for an exception from asyncpg (raise it ``from exc``)."""
    if isinstance(exc, StoreError):
        return exc
    import asyncpg

    unavailable = isinstance(exc, (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                                   asyncpg.exceptions.OperatorInterventionError,
                                   asyncpg.exceptions.InsufficientResourcesError))
    return (DatabaseUnavailable if unavailable else BatchRejected)(f"PostgreSQL: {exc!r}")


def open_sink(url: str | Database, placement: Placement = DEFAULT_PLACEMENT) -> Sink:
    """The sink for ``url`` writing into ``placement``'s tables; call ``await sink.open()``."""
    db = resolve_db(url)
    check_placement(db, placement)
    return SqliteSink(sqlite_path(db), placement) if db.is_sqlite else PostgresSink(db.dsn or "", placement)


def _insert(table: str, columns: tuple[str, ...], style: str) -> str:
    """``INSERT INTO table (columns) VALUES (...)`` with ``?`` (sqlite3) or ``$n`` (asyncpg) markers."""
    marks = ", ".join("?" * len(columns)) if style == "?" else ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"


_CHUNKS = (256, 64, 16, 4, 1)  # rows per multi-row INSERT (any batch size is a sum of these)


@functools.lru_cache(maxsize=64)
def _multi_row(insert: str, width: int, rows: int) -> str:
    """``insert`` (one row of ``width`` ``?`` markers) for ``rows`` rows."""
    head, _, _ = insert.partition(" VALUES ")
    one = f"({', '.join('?' * width)})"
    return f"{head} VALUES {', '.join([one] * rows)}"


def _connected(db: sqlite3.Connection) -> None:
    """Nothing: the writer thread opens its connection before calling this."""


class SqliteSink:
    """Writes batches into a SQLite file on the file's writer thread (sqlite_thread.py).

    After each commit the thread checks that the path still names the file it opened (one
    ``stat``, ~2 us): a file deleted or replaced under a live connection would otherwise swallow
    every later batch while they are reported written (:class:`DatabaseFileReplaced`)."""

    def __init__(self, path: str, placement: Placement = DEFAULT_PLACEMENT) -> None:
        self.path = path
        events, runs = placement.qualified("execution_events"), placement.qualified("workflow_runs")
        self._insert_events = _insert(events, EVENT_COLUMNS, "?")
        self._insert_messages = _insert(placement.qualified("messages"), MESSAGE_COLUMNS, "?")
        self._insert_files = _insert(placement.qualified("files"), FILE_COLUMNS, "?")
        self._insert_run = _insert(runs, RUN_COLUMNS, "?")
        # a spill file written again, or a retried batch, meets its own rows: kept once
        self._insert_llm_calls = _insert(placement.qualified("llm_calls"), LLM_CALL_COLUMNS, "?").replace(
            "INSERT", "INSERT OR IGNORE", 1)
        self._insert_llm_contents = _insert(placement.qualified("llm_contents"), LLM_CONTENT_COLUMNS, "?").replace(
            "INSERT", "INSERT OR IGNORE", 1)
        # json_patch(x, NULL) is NULL, so a completion without metadata keeps the start's meta.
        self._update_event = (
            f"UPDATE {events} SET event_subtype = ?, status = ?, outputs = ?, "
            "error_message = COALESCE(?, error_message), completed_at = ?, duration_ms = ?, "
            "meta = COALESCE(json_patch(COALESCE(meta, '{}'), ?), meta) WHERE id = ?"
        )
        # a run closed as abandoned by mistake (e.g. its process seen from another PID namespace) that
        # finishes after all gets its true status and totals, and loses the abandoned marker
        self._finish_run = (
            f"UPDATE {runs} SET status = ?, completed_at = ?, total_events = ?, dropped_events = ?, "
            "meta = json_remove(COALESCE(json_patch(COALESCE(meta, '{}'), ?), meta), '$.abandoned') WHERE id = ?"
        )
        self._touch_run = f"UPDATE {runs} SET meta = json_patch(COALESCE(meta, '{{}}'), ?) WHERE id = ?"
        self._db: Any = None
        self._ts_second = -1
        self._ts_prefix = ""

    def timestamp(self, t_ns: int) -> str:
        # The text layout SQLAlchemy's SQLite DateTime reads back (naive, UTC); the date-and-seconds
        # part is cached, since a batch's events mostly share their second.
        seconds, nanos = divmod(t_ns, 1_000_000_000)
        if seconds != self._ts_second:
            self._ts_second = seconds
            self._ts_prefix = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S.")
        return f"{self._ts_prefix}{nanos // 1000:06d}"

    def timestamps(self, t_ns: Sequence[int]) -> list[str]:
        """``[timestamp(t) for t in t_ns]``; a batch within one second (the usual one) in C."""
        if not t_ns:
            return []
        first, last = min(t_ns), max(t_ns)
        if first < 0 or first // _NS != last // _NS:
            return list(map(self.timestamp, t_ns))
        prefix = self.timestamp(first)[:-6]  # "YYYY-MM-DD HH:MM:SS."
        return list(map("{}{:06d}".format, repeat(prefix), map(floordiv, map(mod, t_ns, repeat(_NS)), repeat(1000))))

    async def open(self) -> None:
        # The process's thread for this file (see sqlite_thread.py): no connection of our own. One
        # hop (while the run's body works) makes sure its connection is open: a file that cannot be
        # opened fails here, as a connect would.
        self._db = sqlite_thread(self.path)
        try:
            await self._db.call(_connected)
        except Exception as exc:
            raise sqlite_error(exc) from exc

    async def write(self, batch: Batch) -> None:
        try:
            await self._db.call(self._write, batch)  # one thread hop for the whole transaction
        except StoreError:  # DatabaseFileReplaced included
            raise
        except Exception as exc:
            raise sqlite_error(exc) from exc

    def _write(self, db: sqlite3.Connection, batch: Batch) -> None:
        """The batch's transaction, on the file's writer thread (the connection is in autocommit
        mode: the transaction is explicit)."""
        db.execute("BEGIN IMMEDIATE")
        try:
            if batch.run_insert is not None:
                db.execute(self._insert_run, batch.run_insert)
            if batch.events:
                self._insert_rows(db, self._insert_events, batch.events)
            if batch.updates:
                db.executemany(self._update_event, batch.updates)
            if batch.messages:
                self._insert_rows(db, self._insert_messages, batch.messages)
            if batch.files:
                db.executemany(self._insert_files, batch.files)
            if batch.llm_contents:
                db.executemany(self._insert_llm_contents, batch.llm_contents)
            if batch.llm_calls:
                db.executemany(self._insert_llm_calls, batch.llm_calls)
            if batch.run_finish is not None:
                db.execute(self._finish_run, batch.run_finish)
            if batch.heartbeat is not None:
                db.execute(self._touch_run, batch.heartbeat)
            db.execute("COMMIT")
            self._db.check_same_file()  # raises DatabaseFileReplaced (this batch went with the old file)
        except DatabaseFileReplaced:
            raise
        except BaseException:
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:  # the connection itself is broken: the thread drops it
                    pass
            raise

    @staticmethod
    def _insert_rows(db: sqlite3.Connection, insert: str, rows: list[Any]) -> None:
        """``executemany(insert, rows)`` as a few multi-row INSERTs (chunks of 256, 64, 16, 4 and 1
        rows: five statements per table, each prepared once per connection). The GIL is released for
        each statement's whole run instead of around each row's, so the caller's threads (a chat on
        the event loop) run beside the insert rather than taking turns with it row by row."""
        width = len(rows[0])
        limit = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
        start, total = 0, len(rows)
        for size in _CHUNKS:
            if size > limit:
                continue
            while total - start >= size:
                db.execute(_multi_row(insert, width, size), list(chain.from_iterable(rows[start:start + size])))
                start += size

    async def close(self) -> None:
        self._db = None  # the file's connection stays open for the next run


class PostgresSink:
    """Writes batches into PostgreSQL through one asyncpg connection: COPY for new rows."""

    _NOTIFY = "SELECT pg_notify('cmbagent_events', $1)"  # one channel for every placement: run ids are unique

    def __init__(self, dsn: str, placement: Placement = DEFAULT_PLACEMENT) -> None:
        self.dsn = dsn
        self._schema = placement.schema
        self._events, self._messages, self._files = (placement.table(t)
                                                     for t in ("execution_events", "messages", "files"))
        events, runs = placement.qualified("execution_events"), placement.qualified("workflow_runs")
        self._insert_run = _insert(runs, RUN_COLUMNS, "$")
        self._llm_calls, self._llm_contents = placement.table("llm_calls"), placement.table("llm_contents")
        self._update_event = (
            f"UPDATE {events} SET event_subtype = $1, status = $2, outputs = $3::json, "
            "error_message = COALESCE($4, error_message), completed_at = $5, duration_ms = $6, "
            "meta = COALESCE((COALESCE(meta::jsonb, '{}'::jsonb) || $7::jsonb)::json, meta) WHERE id = $8"
        )
        self._finish_run = (
            f"UPDATE {runs} SET status = $1, completed_at = $2, total_events = $3, dropped_events = $4, "
            "meta = COALESCE(((COALESCE(meta::jsonb, '{}'::jsonb) - 'abandoned') || $5::jsonb)::json, "
            "(meta::jsonb - 'abandoned')::json) WHERE id = $6"
        )
        self._touch_run = (f"UPDATE {runs} SET meta = (COALESCE(meta::jsonb, '{{}}'::jsonb) || $1::jsonb)::json "
                           "WHERE id = $2")
        self._conn: Any = None
        self._healthy = False

    def timestamp(self, t_ns: int) -> datetime:
        return datetime.fromtimestamp(t_ns / 1e9, UTC)

    def timestamps(self, t_ns: Sequence[int]) -> list[datetime]:
        """``[timestamp(t) for t in t_ns]``, in C."""
        return list(map(datetime.fromtimestamp, map(truediv, t_ns, repeat(1e9)), repeat(UTC)))

    async def open(self) -> None:
        try:
            self._conn = await pg_connections.acquire(self.dsn)  # this loop's idle one when there is one
        except Exception as exc:
            raise postgres_error(exc) from exc
        self._healthy = True

    async def write(self, batch: Batch) -> None:
        try:
            await self._write(batch)
        except Exception as exc:
            raise postgres_error(exc) from exc

    async def _write(self, batch: Batch) -> None:
        conn = self._conn
        self._healthy = False  # until this batch's transaction has ended cleanly
        async with conn.transaction():
            if batch.run_insert is not None:
                await conn.execute(self._insert_run, *batch.run_insert)
            if batch.events:
                await conn.copy_records_to_table(self._events, records=batch.events, columns=EVENT_COLUMNS,
                                                 schema_name=self._schema)
            if batch.updates:
                await conn.executemany(self._update_event, batch.updates)
            if batch.messages:
                await conn.copy_records_to_table(self._messages, records=batch.messages, columns=MESSAGE_COLUMNS,
                                                 schema_name=self._schema)
            if batch.files:
                await conn.copy_records_to_table(self._files, records=batch.files, columns=FILE_COLUMNS,
                                                 schema_name=self._schema)
            if batch.llm_contents:  # COPY, as the events: a row written twice is refused the same way
                await conn.copy_records_to_table(self._llm_contents, records=batch.llm_contents,
                                                 columns=LLM_CONTENT_COLUMNS, schema_name=self._schema)
            if batch.llm_calls:
                await conn.copy_records_to_table(self._llm_calls, records=batch.llm_calls, columns=LLM_CALL_COLUMNS,
                                                 schema_name=self._schema)
            note: dict[str, Any] = {}
            if batch.events:
                note = {"run_id": batch.events[0][Event.run_id],
                        "max_seq": max(row[Event.seq] for row in batch.events)}
            if batch.run_finish is not None:
                finish = batch.run_finish
                await conn.execute(self._finish_run, *finish)
                note = {**note, "run_id": finish[RunFinish.id], "status": finish[RunFinish.status]}
            if batch.heartbeat is not None:
                await conn.execute(self._touch_run, *batch.heartbeat)
            if note:
                await conn.execute(self._NOTIFY, json.dumps(note))
        self._healthy = True

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            # Kept for the next run on this loop unless a write failed on it (then dropped at once:
            # every batch was committed or rolled back, so there is nothing to finish gracefully).
            await pg_connections.release(self.dsn, conn, healthy=self._healthy)
