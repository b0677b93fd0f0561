"""One run's start and finish, on the loop that owns its writer.

Start validates the URL (a bad one fails here, with a clear message, not later in the writer),
migrates the schema (an unreachable or read-only database is an outage: the run goes on), builds
the ``workflow_runs`` row and starts the writer. Finish records the run's error, drains the queue
within ``config.close_timeout_s`` and stores the final row (status, counts, usage, drops).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..bus import EventBus
from ..capture import EventCaptureManager
from ..capture_values import plain_dict
from ..config import CaptureConfig
from ..errors import ConfigError, DatabaseUnavailable
from ..ids import new_run_id
from ..store.columns import RUN_WIDTHS, Run
from ..store.database import Database, resolve_db
from ..store.orphans import process_identity
from ..store.schema import forget_migrated, migrate
from ..store.sink import open_sink
from ..writer import BatchWriter, FinishValues
from ..writer.encode import Sanitizer
from ..writer.fit import NeedsUserCode, fit_text
from ..writer.rows import run_row
from .writer_process import HANDOFF_BATCH, ProcessWriter

log = logging.getLogger("cmbagent_events")
T = TypeVar("T")


class RunSession:
    """Start and finish of one run; both halves run on the loop that owns the writer."""

    def __init__(self, db_url: str | None, *, task_description: str = "", mode: str = "one_shot",
                 agent: str | None = None, model: str | None = None, session_id: str = "default",
                 config: CaptureConfig | None = None, hooks: bool = True, meta: dict[str, Any] | None = None) -> None:
        self.config = config or CaptureConfig.from_env()
        self.db_url = db_url or self.config.db_url
        self.hooks = hooks  # install the AG2 hooks while the run is open
        self.task_description = task_description
        self.mode = mode
        self.agent = agent
        self.model = model
        self.session_id: Any = session_id  # as given until start() makes it text (see _run_fields)
        self.meta = plain_dict(meta) if isinstance(meta, dict) else ({} if meta is None else {"meta": meta})
        self.run: EventCaptureManager | None = None
        self.forwarder: Any = None  # export.otlp.OtlpForwarder when CMBAGENT_EVENTS_OTLP_ENDPOINT is set
        self.status: str | None = None  # the final status, set by finish() (None: closed by run.aclose(): completed)

    async def start(self) -> EventCaptureManager:
        cfg = self.config
        run_id, started_ns = new_run_id(), time.time_ns()  # together: runs sort alike by id and by start
        if not cfg.enabled:  # capture off: a run that records nothing, no database touched
            self.session_id = await _off_this_loop(fit_text, self.session_id, RUN_WIDTHS["session_id"]) or "default"
            self.run = EventCaptureManager(run_id, self.session_id, config=cfg, enabled=False)
            return self.run
        url = resolve_db(self.db_url)  # a URL that cannot work fails here, with the reason
        outage = False
        try:
            await migrate(url, cfg.placement)  # checks the database on first use
        except Exception as exc:
            if not _is_outage(exc):
                raise
            # unreachable or read-only right now: an outage, not the run's failure. The writer
            # migrates once it can connect, and spills what it cannot write by the close.
            log.warning("cmbagent-events: database unavailable at run start (%r); capturing anyway", exc)
            outage = True
        sampled = cfg.sample_rate >= 1.0 or random.random() < cfg.sample_rate
        meta = dict(self.meta)
        meta["process"] = process_identity()  # lets close-orphans tell a dead run from a quiet one
        if not sampled:
            meta["sampled_out"] = True
        sink = open_sink(url, cfg.placement)  # the writer connects it in the background, while the body runs
        first_row = await _off_this_loop(
            run_row, cfg, sink.timestamp, run_id=run_id, session_id=self.session_id,
            task_description=self.task_description, mode=self.mode, agent=self.agent, model=self.model,
            started_ns=started_ns, meta=meta)
        self.session_id = first_row[Run.session_id]
        process = cfg.writer == "process"
        bus = EventBus(cfg.queue_size, min(cfg.buffer_size, HANDOFF_BATCH) if process else cfg.buffer_size,
                       cfg.queue_max_bytes)

        def thread_writer(row: tuple[Any, ...] | None, thread_sink: Any = None, prepare: bool = True) -> BatchWriter:
            """The run's writer thread (also the writer process's fallback, should the child die)."""
            return BatchWriter(bus, thread_sink or open_sink(url, cfg.placement), cfg, run_id, self.session_id,
                               run_row=row, prepare=lambda: remigrate(url, cfg.placement), needs_prepare=prepare,
                               final_values=self._final_values)

        writer: BatchWriter | ProcessWriter
        if process:
            writer = ProcessWriter(bus, cfg, run_id, self.session_id, db_url=_absolute(url), run_row=first_row,
                                   needs_prepare=outage, final_values=self._final_values, fallback=thread_writer)
        else:
            writer = thread_writer(first_row, sink, outage)
        if cfg.otlp_endpoint and sampled:
            self.forwarder = _otlp_forwarder(cfg.otlp_endpoint, run_id, writer)
        run = EventCaptureManager(run_id, self.session_id, config=cfg, enabled=sampled, bus=bus, writer=writer,
                                  otlp_forwarder=self.forwarder, own_files=_own_files(url))
        writer.start()
        self.run = run
        return run

    async def finish(self, error: BaseException | str | None, status: str | None = None) -> None:
        """Close the run: ``status`` (``completed`` / ``failed``) or, when None, ``failed`` exactly when
        ``error`` is given (a clean ``sys.exit`` counts as completed). An error is recorded as one
        ``error`` event."""
        run = self.run
        if run is None or run.writer is None:  # never started, or capture disabled
            return
        if isinstance(error, BaseException) and _is_clean_exit(error):
            error = None
        if status is None:
            status = "completed" if error is None else "failed"
        if isinstance(error, BaseException):  # one error event per exception: none when a hook recorded it
            kind = "cancelled" if isinstance(error, asyncio.CancelledError) else type(error).__name__
            run.capture_exception("capture_run", error, "capture_run",
                                  {"exception_type": type(error).__qualname__}, kind=kind, error_type=kind)
        elif error is not None:
            run.capture_error("capture_run", error, "run_error", {})
        self.status = status  # the final row's, read by _final_values when the writer builds the last batch
        try:
            await run.aclose()
        except Exception:
            log.exception("cmbagent-events: could not close run %s", run.run_id)
        if self.forwarder is not None:  # the writer has stopped: send the last spans (bounded wait)
            await asyncio.to_thread(self.forwarder.close, OTLP_CLOSE_TIMEOUT_S)

    def _final_values(self) -> FinishValues:
        """The run row's closing values, taken when the last batch is built (so the counts are final)."""
        run = self.run
        assert run is not None  # the writer exists only once the run does
        stats = run.get_performance_stats()
        patch = Sanitizer(()).encode_column([{"capture": {
            "batches_written": stats["batches_written"] + bool(getattr(run.writer, "closing_rows", 0)),  # + this one
            "queue_high_water": stats["queue_high_water"],
            "avg_capture_time_us": round(stats["avg_capture_time_us"], 3),
            "last_error": stats["last_error"],
            "lost_completions": stats["lost_completions"],
        }, "usage": dict(run.usage), "drops": stats["drops"], **run.run_meta}], 2000)[0]
        return self.status or "completed", time.time_ns(), stats["total_events"], stats["dropped_events"], patch


OTLP_CLOSE_TIMEOUT_S = 10.0  # longest a run's exit waits for its last spans to reach the OTLP endpoint
LIVE_EXPORT_TIMEOUT_S = 3.0  # one live export's deadline (the exporter's default, 10 s, held every run's exit)
OTEL_TIMEOUTS = ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")


def _otlp_forwarder(endpoint: str, run_id: str, writer: BatchWriter | ProcessWriter) -> Any:
    """Live OTLP forwarding of the run (see export/otlp.py), fed by the writer's commits."""
    try:
        from ..export.otlp import OtlpForwarder, make_exporter
    except ImportError as exc:
        raise ConfigError("CMBAGENT_EVENTS_OTLP_ENDPOINT is set but the [otel] extra is not installed: "
                          f"pip install 'cmbagent-events[otel]' ({exc})") from None
    # a request's deadline (retries included): a run's close waits for its last spans at most this long
    # when the endpoint is down (OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT, when set, decides instead)
    timeout = None if any(map(os.environ.get, OTEL_TIMEOUTS)) else LIVE_EXPORT_TIMEOUT_S
    forwarder = OtlpForwarder(make_exporter(endpoint, timeout=timeout), run_id)
    writer.add_commit_listener(forwarder.on_commit)
    return forwarder


async def _off_this_loop(build: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``build(...)`` with user code off; when a value needs the caller's own code to become text (a
    run field or meta value only its ``__repr__``/``__str__`` describes), on a worker thread instead:
    slow or not, it never runs on the caller's event loop (the start awaits it, the loop goes on)."""
    try:
        return build(*args, **kwargs, user_code=False)
    except NeedsUserCode:
        return await asyncio.to_thread(build, *args, **kwargs, user_code=True)


def _own_files(db: Any) -> frozenset[str]:
    """The SQLite file and its companions (WAL, shared memory, journal, migration lock), resolved: the
    writer changes them while the run's code runs, so they are not files the run produced."""
    if not db.is_sqlite or not db.path:
        return frozenset()
    path = os.path.realpath(os.path.expanduser(db.path))
    return frozenset(path + suffix for suffix in ("", "-wal", "-shm", "-journal", ".migrate.lock"))


def _absolute(db: Database) -> Database:
    """``db`` with a SQLite path made absolute: the writer process resolves it, wherever this one is."""
    if not db.is_sqlite or not db.path or "?" in db.url or db.path.startswith("file:"):
        return db
    return resolve_db("sqlite+aiosqlite:///" + os.path.abspath(os.path.expanduser(db.path)))


def _is_outage(exc: BaseException) -> bool:
    """A database error that means "not reachable (or writable) right now", not "this cannot work"
    (a bad URL, a schema conflict): the run goes on and the writer retries."""
    if isinstance(exc, (OSError, TimeoutError, sqlite3.Error)):
        return True
    module = type(exc).__module__
    return module.startswith(("asyncpg", "sqlalchemy")) and "Conflict" not in type(exc).__name__


async def remigrate(url: Any, placement: Any) -> None:
    """The schema, (re)created: after an outage at entry, or in a SQLite file that replaced ours.

    Raises:
        DatabaseUnavailable: while the database still cannot be reached (the writer retries).
    """
    forget_migrated(url)
    try:
        await migrate(url, placement)
    except Exception as exc:
        if _is_outage(exc):
            raise DatabaseUnavailable(f"schema not prepared: {exc!r}") from exc
        raise


def _is_clean_exit(error: BaseException) -> bool:
    """``sys.exit()`` / ``sys.exit(0)`` inside a run ends it normally."""
    return isinstance(error, SystemExit) and error.code in (0, None)
