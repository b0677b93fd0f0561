"""The background task that drains the bus into the database in batches.

It wakes when a batch is ready (the bus calls its waker once per batch) or when the flush interval
is due, takes up to ``buffer_size`` records, and commits them in one transaction. Everything the
hot path skipped happens here, in the row builder (:mod:`.rows`): datetimes, truncation,
redaction, repr fallback, JSON encoding, and the merge of an agent call's start and completion
when both are in the same batch.

The writer owns the run's connection: it opens it itself (so ``capture_run`` entry does not wait
for it), writes the run row with the first batch and the run's final status with the last one.
When the database is unreachable (the sink raises ``errors.DatabaseUnavailable``: connection
refused or lost, SQLite file locked) the writer keeps
the batch in hand and retries with backoff, reconnecting, for as long as the run lasts; meanwhile
the bounded queue keeps what fits and counts the rest as dropped. A batch the database refuses for
its content is split in halves until only the rows it refuses are left out (counted as dropped,
``refused by database``). A full disk spills the batch to the run's spill file instead of
discarding it. A SQLite file deleted or replaced under the run is detected after the commit: what
the old file held is counted as dropped (``database file replaced``) and a new file is started.
Nothing that goes wrong in here ends the drain: a catch-all logs once, counts what it could not
commit, resolves every flush barrier, and keeps draining. Loss is never silent.

Commit listeners (:mod:`.listeners`) see each committed batch right after its transaction; the
failure handling (disk full, refused rows) is in :mod:`.faults`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ..bus import NOT_WRITTEN, REFUSED, WRITER_ERROR, EventBus
from ..config import CaptureConfig
from ..errors import DatabaseFileReplaced, DatabaseUnavailable
from ..records import BARRIER, EventRecord
from ..store.sink import Batch, Sink
from .fallbacks import Fallbacks, FinishValues, resolve
from .faults import is_disk_full, split_batch
from .fit import UserCodeTimeout
from .listeners import CommitListener, CommitListeners
from .rows import Built, RowBuilder
from .task import DrainTask

log = logging.getLogger("cmbagent_events.writer")


class RunWriter(Protocol):
    """What a run asks of its writer: :class:`BatchWriter`, or the courier to a writer process
    (``run/writer_process.ProcessWriter``)."""

    terminating: bool
    queue_high_water: int
    batches_written: int
    records_written: int
    last_error: str | None
    reconnects: int
    spilled: int
    spill_path: str | None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None: ...
    def start(self) -> None: ...
    def request_flush(self) -> concurrent.futures.Future[bool]: ...
    async def aclose(self, timeout: float) -> bool: ...
    def add_commit_listener(self, listener: CommitListener) -> bool: ...
    def remove_commit_listener(self, listener: CommitListener) -> None: ...


class BatchWriter(CommitListeners, Fallbacks, DrainTask):
    """Drains one run's :class:`EventBus` into a :class:`Sink`; start it on the loop that owns the sink."""

    HEARTBEAT_S = 15.0  # how often a run shows it is alive (meta.heartbeat), with a batch or alone
    IDLE_AFTER = 5  # quiet flush intervals before the writer sleeps until the next record or heartbeat
    RETRY_FIRST_DELAY_S = 0.05
    RETRY_MAX_DELAY_S = 2.0

    def __init__(self, bus: EventBus, sink: Sink, config: CaptureConfig, run_id: str, session_id: str,
                 run_row: tuple[Any, ...] | None = None, *,
                 prepare: Callable[[], Awaitable[None]] | None = None, needs_prepare: bool = False,
                 final_values: Callable[[], FinishValues] | None = None) -> None:
        """``prepare``: what makes the database ready before connecting (migrate the schema), run first
        when ``needs_prepare`` (entry met an outage) and again for a SQLite file that replaced ours.
        ``final_values``: the run row's closing values, asked for when the last batch is built."""
        CommitListeners.__init__(self)
        DrainTask.__init__(self, bus)
        self._sink = sink
        self._sink_open = False
        self._run_row = run_row  # inserted at once (and with the first batch if that failed)
        self._first_run_row = run_row  # kept: a replaced SQLite file needs it again
        self.prepare = prepare
        self.needs_prepare = needs_prepare  # entry could not migrate (outage), or the file was replaced
        self._pending = 0  # events in the batch being built or written (what a writer error would lose)
        self._error_logged = False
        self._events_in_file = 0  # events committed into the current SQLite file (lost if it is replaced)
        self._last_beat = 0.0  # time.monotonic() of the last heartbeat written
        self._final_values = final_values
        self.finish: Callable[[], FinishValues] | None = None  # final_values once the close started, until written
        self.closing_rows = 0  # rows of the batch that carries the run's closing values (taken as it is built)
        self._in_flight = 0  # records taken from the bus but not yet committed
        self._in_hand: Batch | None = None  # the encoded batch _commit is trying to write
        self.reconnects = 0
        self.spilled = 0  # records written to a spill file because the database never came back
        self.spill_path: str | None = None
        self.spill_dir: Path | None = None
        self._config = config
        self._run_id = run_id
        self._rows = RowBuilder(config, run_id, session_id, sink.timestamp, getattr(sink, "timestamps", None))
        self._closing = False
        self._closing_since = 0.0  # time.monotonic() of the close's start
        self.terminating = False  # SIGTERM, or the close outlasted an outage: what cannot be written is spilled
        self._gave_up = False  # an outage met at shutdown: no more connection attempts
        self.batches_written = 0
        self.records_written = 0
        self.events_written = 0  # events committed (records_written also counts completions' updates)
        self.queue_high_water = 0
        self.last_error: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the drain task on the running loop."""
        self._start_task(self._run(), f"cmbagent-events-writer-{self._run_id}")

    @property
    def run_row_written(self) -> bool:
        """Whether the run's row is in the database (or in a spill file) by now."""
        return self._run_row is None

    async def aclose(self, timeout: float, final: bool = True) -> bool:
        """Drain everything and stop (on the writer's loop). False if ``timeout`` cut the drain short;
        what was left is then kept in a spill file (see spill.py) or, failing that, counted as dropped.
        ``final`` False leaves the run row open (its process is gone: ``close-orphans`` closes it)."""
        if self._task is None:
            self._stop_listeners()
            return True
        self._closing = True
        self.finish = self._final_values if final else None
        self._closing_since = time.monotonic()
        self.wake()
        drained = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            drained = False
            self._task.cancel()
            try:
                await self._task
            except BaseException:
                pass
            self._spill()
        except Exception as exc:  # the task itself failed: keep the accounting honest
            drained = False
            self.last_error = repr(exc)
        self._bus.set_waker(None)
        leftover = self._bus.take(len(self._bus) + 1)
        lost = 0
        for record in leftover:
            if record.kind == BARRIER:
                resolve(record.extra, False)
            else:
                lost += 1
        if lost:
            self._bus.count_dropped(lost, NOT_WRITTEN)
            log.warning("cmbagent-events: %d events not written before close (timeout %.1fs)", lost, timeout)
        self._stop_listeners()
        return drained and not lost

    # -- drain loop ----------------------------------------------------------------------------
    async def _run(self) -> None:
        interval = self._config.flush_interval_ms / 1000.0
        bus = self._bus
        event = self._wake_event
        assert event is not None
        try:
            await self._try_open()  # connect now, while the run's body works, not at its first batch
            if self._sink_open and self._run_row is not None and not len(bus):
                # the run row at once: a run killed before its first batch still shows (close-orphans)
                await self._drain([])
            quiet = 0  # flush intervals in a row that found the queue empty
            while True:
                if quiet >= self.IDLE_AFTER and not len(bus) and not self._closing:
                    await self._idle(event)  # a quiet run (a slow model, a human) costs ~nothing
                    quiet = 0
                if len(bus) < bus.batch_size and not self._closing:
                    try:
                        await asyncio.wait_for(event.wait(), interval)
                    except TimeoutError:
                        pass
                    quiet = 0 if len(bus) else quiet + 1
                event.clear()
                while len(bus):
                    depth = len(bus)
                    if depth > self.queue_high_water:
                        self.queue_high_water = depth
                    records = bus.take(bus.batch_size)
                    await self._drain(records, final=self._closing and not len(bus))
                    bus.release()  # written, spilled or counted: its bytes no longer held
                if self._closing and not len(bus):
                    if self.finish is not None or self._run_row is not None:
                        await self._drain([], final=True)  # nothing left but the run row's close
                    return
                if self._sink_open and time.monotonic() - self._last_beat >= self.HEARTBEAT_S:
                    await self._beat_alone()
        finally:
            await self._close_sink()

    async def _idle(self, event: asyncio.Event) -> None:
        """Sleep until the bus's next record (it wakes us), a flush, the close or the next heartbeat,
        instead of waking every flush interval: on a VM each wake-up costs ~0.2 ms of CPU."""
        bus = self._bus
        bus.wake_on_first = True
        if len(bus) or self._closing:  # put before the flag was seen
            bus.wake_on_first = False
            return
        due = self.HEARTBEAT_S - (time.monotonic() - self._last_beat) if self._sink_open else self.HEARTBEAT_S
        try:
            await asyncio.wait_for(event.wait(), max(due, 0.0))
        except TimeoutError:
            pass
        finally:
            bus.wake_on_first = False

    async def _drain(self, records: list[EventRecord], final: bool = False) -> None:
        """:meth:`_write_records` under the catch-all: whatever goes wrong is logged (once), the
        events not committed are counted, every barrier is resolved, and the drain goes on."""
        try:
            await self._write_records(records, final=final)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.last_error = repr(exc)
            if not self._error_logged:
                self._error_logged = True
                log.exception("cmbagent-events: writer error (counted; the writer goes on; logged once per run)")
            self._bus.count_dropped(self._pending, WRITER_ERROR)
            self._pending = 0
            self._in_hand = None
            self._in_flight = 0
            for record in records:
                if record.kind == BARRIER:
                    resolve(record.extra, False)

    async def _try_open(self) -> None:
        """One attempt to connect; on failure the first commit retries (outage handling)."""
        try:
            await self._open()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.last_error = repr(exc)
            await self._close_sink()  # a half-open connection (e.g. connected, PRAGMA failed) too

    async def _open(self) -> None:
        """Connect, after preparing the database (the schema) when entry could not."""
        if self.needs_prepare and self.prepare is not None:
            await self.prepare()
            self.needs_prepare = False
        await self._sink.open()
        self._sink_open = True

    async def _close_sink(self) -> None:
        """Close the connection, whatever state it is in (sinks' close is a no-op when not open)."""
        self._sink_open = False
        try:
            await self._sink.close()
        except Exception:
            log.debug("cmbagent-events: closing the connection failed", exc_info=True)

    async def _write_records(self, records: list[EventRecord], final: bool = False) -> None:
        self._in_flight = len(records)
        self._pending = 0
        start = 0
        for i, record in enumerate(records):
            if record.kind == BARRIER:
                await self._commit(await self._rows_of(records[start:i]))
                resolve(record.extra, True)
                start = i + 1
        await self._commit(await self._rows_of(records[start:] if start else records), final=final)
        self._in_flight = 0

    async def _rows_of(self, records: list[EventRecord]) -> Batch:
        """The batch of ``records`` (no barrier among them), column by column (see rows.py); values
        only the caller's own code can describe made text on a worker thread first."""
        try:
            built = self._rows.build(records)
        except Exception:  # a bug in the builder: its events are lost, and counted by _drain's catch-all
            self._pending += sum(1 for r in records if r.seq >= 0)
            raise
        self._pending += built.events
        if built.waiting:
            await self._run_user_code(built)
        return built.batch()

    async def _commit(self, batch: Batch, final: bool = False) -> None:
        """Write ``batch`` in one transaction, with the run row's insert (first) or close (``final``)."""
        if self._run_row is not None:
            batch.run_insert = self._run_row
        if final and self.finish is not None:
            self.closing_rows = len(batch)
            batch.run_finish = self._rows.finish_row(*self.finish())
        if batch.is_empty():
            return
        if time.monotonic() - self._last_beat >= self.HEARTBEAT_S and batch.run_finish is None:
            batch.heartbeat = self._heartbeat()  # rides along: no transaction of its own
        await self._write(batch)
        self._pending = 0

    async def _run_user_code(self, built: Built) -> None:
        """The batch's values only their own ``__repr__`` / ``model_dump`` can describe, made text on a
        daemon thread of their own (never this loop, never a thread the interpreter's exit waits for),
        within ``user_code_timeout_s``. Past it the thread is left to itself (its results are never
        stored) and the values become markers naming the timeout: the run goes on and closes, however
        long (or forever) that code takes."""
        future: concurrent.futures.Future[list[Any]] = concurrent.futures.Future()

        def run() -> None:
            try:
                result = built.run_user_code(self._config.secret_keys)
            except BaseException as exc:
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    future.set_exception(exc)
            else:
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    future.set_result(result)

        try:
            threading.Thread(target=run, name="cmbagent-events-user-code", daemon=True).start()
        except RuntimeError:  # no new threads at interpreter exit: markers rather than a wait
            future.set_exception(UserCodeTimeout("no thread for user code at interpreter exit"))
        try:
            values = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)),
                                            self._config.user_code_timeout_s)
        except (TimeoutError, UserCodeTimeout) as exc:
            reason = exc if isinstance(exc, UserCodeTimeout) else UserCodeTimeout(
                f"user code did not return within {self._config.user_code_timeout_s:g}s")
            self.last_error = repr(reason)
            log.error("cmbagent-events: %s; those values are stored as markers", reason)
            built.give_up(reason)
        else:
            built.fill(values)

    def _give_up_on_outage(self) -> bool:
        """Spill instead of retrying: once SIGTERM came (``terminating``), or when the close has waited
        ``outage_close_s`` for the database. Later batches then go to the spill file at once."""
        if not (self.terminating or (self._closing and time.monotonic() - self._closing_since
                                     >= self._config.outage_close_s)):
            return False
        self.terminating = self._gave_up = True
        return True

    def _heartbeat(self) -> tuple[str, str]:
        self._last_beat = time.monotonic()
        stamp = datetime.now(UTC).isoformat()
        return f'{{"heartbeat": "{stamp}"}}', self._run_id

    async def _beat_alone(self) -> None:
        """A quiet run's sign of life: one small update, one attempt (an outage skips it)."""
        try:
            await self._sink.write(Batch(heartbeat=self._heartbeat()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.last_error = repr(exc)
            await self._close_sink()  # the next batch reconnects

    async def _write(self, batch: Batch) -> None:
        """One transaction, retried through outages; a batch the database refuses for its content
        is split until only the rows it refuses are left out (counted)."""
        self._in_hand = batch
        delay = self.RETRY_FIRST_DELAY_S
        failures = 0
        while True:
            try:
                if batch.run_finish is not None and self.finish is not None:
                    # taken now, so that rows left out or spilled on the way are in the counts
                    self.closing_rows = len(batch)
                    batch.run_finish = self._rows.finish_row(*self.finish())
                if not self._sink_open:
                    if self.terminating and self._gave_up:  # no more connection attempts: straight to disk
                        self._in_hand = None
                        self._spill_now(batch, None, "database unavailable at shutdown")
                        return
                    await self._open()
                await self._sink.write(batch)
            except asyncio.CancelledError:
                raise
            except DatabaseFileReplaced as exc:  # what the old file held (this batch too) is gone
                self._file_replaced(batch, exc)
                await self._close_sink()
                continue  # write this batch again, into a new file
            except Exception as exc:
                self.last_error = repr(exc)
                if is_disk_full(exc):
                    self._in_hand = None
                    self._spill_now(batch, exc)
                    return
                if isinstance(exc, DatabaseUnavailable):  # outage: keep the batch, reconnect, wait
                    await self._close_sink()
                    if self._give_up_on_outage():  # a SIGKILL may follow a SIGTERM within seconds
                        self._in_hand = None
                        self._spill_now(batch, exc, "database unavailable at shutdown")
                        return
                    self.reconnects += 1
                    log.warning("cmbagent-events: database unavailable, retrying in %.2fs: %r", delay, exc)
                else:
                    failures += 1
                    pieces = split_batch(batch)
                    if pieces:  # find the bad rows: the halves are written (and split) on their own
                        self._in_hand = None
                        for piece in pieces:
                            await self._write(piece)
                        return
                    if failures >= 2:  # one row (or the run row alone), refused twice: left out, counted
                        self._in_hand = None
                        self._bus.count_dropped(len(batch.events), REFUSED)
                        log.error("cmbagent-events: the database refused a row (left out, counted): %r", exc)
                        return
                    continue  # once more at once: a refusal for content does not need a pause
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.RETRY_MAX_DELAY_S)
            else:
                self._in_hand = None
                if batch.run_insert is not None:
                    self._run_row = None
                if batch.run_finish is not None:
                    self.finish = None
                if len(batch):
                    self.batches_written += 1
                    self.records_written += len(batch)
                    self.events_written += len(batch.events)
                    self._events_in_file += len(batch.events)
                if self._listeners:
                    self._notify(batch)
                return
