"""What the writer keeps when the database will not take it: a spill file at the close (the
database never came back) and on a full disk, and a new file when the SQLite file was replaced.

:class:`Fallbacks` is a base of :class:`~cmbagent_events.writer.loop.BatchWriter`; the attributes
below are the writer's state it works on (set by the writer's ``__init__``).
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..bus import ENCODE_FAILED, FILE_REPLACED, NOT_WRITTEN, REFUSED, EventBus
from ..records import BARRIER
from ..store.sink import Batch
from .fit import UserCodeTimeout
from .rows import Built, RowBuilder
from .spill import write_spill

log = logging.getLogger("cmbagent_events.writer")

FinishValues = tuple[str, int, int, int, Any]  # status, completed ns, total events, dropped events, meta patch


class Fallbacks:
    """Spill and file-replacement handling of a :class:`~cmbagent_events.writer.loop.BatchWriter`."""

    _bus: EventBus
    _rows: RowBuilder
    _run_id: str
    _run_row: tuple[Any, ...] | None
    _first_run_row: tuple[Any, ...] | None
    _in_hand: Batch | None
    _in_flight: int
    _events_in_file: int
    finish: Callable[[], FinishValues] | None
    needs_prepare: bool
    spilled: int
    spill_path: str | None
    spill_dir: Path | None  # where spill files go (None: CMBAGENT_EVENTS_SPILL_DIR, read when spilling)
    last_error: str | None

    def _spill(self) -> None:
        """The database did not come back before the close timeout: keep what we hold in a spill
        file (``cmbagent-events replay`` writes it later) rather than losing it."""
        batches: list[Batch] = []
        in_hand, self._in_hand = self._in_hand, None
        if in_hand is not None:
            batches.append(in_hand)
        elif self._in_flight:  # taken from the queue and not yet in a batch: cannot be recovered
            self._bus.count_dropped(self._in_flight, NOT_WRITTEN)
        self._in_flight = 0
        records = []
        for record in self._bus.take(len(self._bus) + 1):
            if record.kind == BARRIER:
                resolve(record.extra, False)
            else:
                records.append(record)
        try:
            built = self._rows.build(records)
        except Exception:  # a bug in the builder: counted, the rest still spilled
            self._bus.count_dropped(sum(1 for r in records if r.seq >= 0), ENCODE_FAILED)
            built = Built(0)
        # no user code at the close: a value only its own __repr__ describes is a marker here
        built.give_up(UserCodeTimeout("user code not run at the close"))
        rest = built.batch()
        if self._run_row is not None and (in_hand is None or in_hand.run_insert is None):
            rest.run_insert = self._run_row
        count = sum(len(b) for b in batches) + len(rest)
        try:
            if self.finish is not None:  # the close, with drops final and spilled rows not counted lost
                rest.run_finish = self._rows.finish_row(*self.finish())
            batches.append(rest)
            path = write_spill(self._run_id, batches, self.spill_dir)
        except Exception as exc:
            self._bus.count_dropped(sum(len(b.events) for b in batches), NOT_WRITTEN)
            log.error("cmbagent-events: %d events lost: database unreachable and spill failed: %r", count, exc)
            return
        if path is not None:
            self.spilled += count  # records: events and agent-call completions
            self.spill_path = str(path)
            log.error("cmbagent-events: database unreachable; %d events kept in %s "
                      "(write them later with: cmbagent-events replay %s --db URL)", count, path, path)

    def _file_replaced(self, batch: Batch, exc: Exception) -> None:
        """The SQLite file went away under us: every event it held is lost (counted); the next
        connection starts a new file, with the schema, the run row and this batch again."""
        lost = self._events_in_file  # this batch is written again, into the new file
        self._events_in_file = 0
        self._bus.count_dropped(lost, FILE_REPLACED)
        self.last_error = repr(exc)
        log.error("cmbagent-events: %s; %d events it held are lost (counted); starting a new file", exc, lost)
        self.needs_prepare = True  # the new file needs the schema
        if self._first_run_row is not None:
            batch.run_insert = self._first_run_row

    def _spill_now(self, batch: Batch, exc: Exception | None, reason: str = "disk full") -> None:
        """The batch goes to the run's spill file (``cmbagent-events replay``) instead of being
        discarded (a full disk; the database down at shutdown); only if that fails too are its events
        counted as dropped."""
        try:
            path = write_spill(self._run_id, [batch], self.spill_dir)
        except Exception as spill_exc:
            self._bus.count_dropped(len(batch.events), REFUSED)
            log.error("cmbagent-events: %s (%r) and spill failed (%r): %d events lost",
                      reason, exc, spill_exc, len(batch.events))
            return
        if batch.run_insert is not None:
            self._run_row = None
        if batch.run_finish is not None:
            self.finish = None
        self.spilled += len(batch)
        self.spill_path = str(path) if path is not None else self.spill_path
        log.error("cmbagent-events: %s; %d events kept in %s (cmbagent-events replay)", reason, len(batch.events),
                  path)


def resolve(future: concurrent.futures.Future[bool], value: bool) -> None:
    """Settle a flush barrier's future (once)."""
    if not future.done():
        future.set_result(value)
