"""What the writer makes of a failed write: a full disk (spill instead of discarding) and a batch
the database refuses for its content (split in halves until only the refused rows are left out)."""

from __future__ import annotations

import errno
import sqlite3

from ..errors import StoreError
from ..store.columns import Event, FileRow, LlmCallRow, MessageRow
from ..store.sink import Batch


def is_disk_full(exc: BaseException) -> bool:
    """True when the database's disk is full (SQLite ``SQLITE_FULL``, ``ENOSPC``, PostgreSQL 53100);
    ``exc`` is the sink's typed error, whose cause is the driver's."""
    if isinstance(exc, StoreError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return "disk is full" in str(exc).lower()
    return type(exc).__name__ == "DiskFullError"


def split_batch(batch: Batch) -> list[Batch]:
    """``batch`` in pieces that keep their order (run row first, run close last, each message or
    file row with its event), or [] when it cannot be split further."""
    pieces: list[Batch] = []
    if batch.run_insert is not None and len(batch):
        pieces.append(Batch(run_insert=batch.run_insert))
    rows = [("e", r) for r in batch.events] + [("u", r) for r in batch.updates]
    if len(rows) > 1:
        half = len(rows) // 2
        halves = [rows[:half], rows[half:]]
    elif rows and (batch.run_insert is not None or batch.run_finish is not None):
        halves = [rows]
    else:
        return []
    contents = batch.llm_contents  # with the first piece holding model calls: written once
    for part in halves:
        events = [r for kind, r in part if kind == "e"]
        ids = {r[Event.id] for r in events}
        calls = [c for c in batch.llm_calls if c[LlmCallRow.event_id] in ids]
        pieces.append(Batch(events=events, updates=[r for kind, r in part if kind == "u"],
                            messages=[m for m in batch.messages if m[MessageRow.event_id] in ids],
                            files=[f for f in batch.files if f[FileRow.event_id] in ids],
                            llm_calls=calls, llm_contents=contents if calls else []))
        if calls:
            contents = []
    if batch.run_finish is not None:
        pieces.append(Batch(run_finish=batch.run_finish))
    return pieces
