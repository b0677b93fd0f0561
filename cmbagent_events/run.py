"""Captured runs: the run handle (start, then finish) and ``capture_run`` / ``capture_run_sync`` on it.

Start validates the URL (a bad one fails here, with a clear message, not later in the writer),
migrates the schema, inserts the ``workflow_runs`` row, starts the writer and makes the run the
current captor (and installs the AG2 hooks when asked). Finish closes the run as ``completed``, or
``failed`` with an error event when it ended with an error (cancellation and KeyboardInterrupt
included), drains the queue within ``config.close_timeout_s`` and records ``total_events`` and
``dropped_events``. Problems on the way out are logged, never raised over the run's own outcome.

:func:`start_run` / :func:`start_run_sync` give the handle to code that cannot hold a ``with``
block open around the run (workflow callbacks: one callback starts the run, another finishes it);
the context managers are built on them.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import random
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

from . import signals
from .captor import set_event_captor
from .capture import EventCaptureManager
from .config import CaptureConfig, ConfigError
from .errors import DatabaseUnavailable
from .ids import new_run_id
from .store.orphans import process_identity
from .store.schema import forget_migrated, migrate, resolve_db
from .store.sink import open_sink
from .writer import BatchWriter, FinishValues
from .writer.encode import Sanitizer
from .writer.fit import RUN_WIDTHS, fit_text
from .writer.rows import run_row

log = logging.getLogger("cmbagent_events")
T = TypeVar("T")


class _RunSession:
    """Start and finish of one run; both halves run on the loop that owns the writer."""

    def __init__(self, db_url: str | None, *, task_description: str, mode: str, agent: str | None,
                 model: str | None, session_id: str, config: CaptureConfig | None,
                 meta: dict[str, Any] | None) -> None:
        self.config = config or CaptureConfig.from_env()
        self.db_url = db_url or self.config.db_url
        self.task_description = task_description
        self.mode = mode
        self.agent = agent
        self.model = model
        self.session_id = fit_text(session_id, RUN_WIDTHS["session_id"]) or "default"
        self.meta = dict.copy(meta) if isinstance(meta, dict) else ({} if meta is None else {"meta": meta})
        self.manager: EventCaptureManager | None = None
        self.forwarder: Any = None  # export.otlp.OtlpForwarder when CMBAGENT_EVENTS_OTLP_ENDPOINT is set

    async def start(self) -> EventCaptureManager:
        cfg = self.config
        run_id = new_run_id()
        if not cfg.enabled:  # capture off: a manager that records nothing, no database touched
            self.manager = EventCaptureManager(run_id, self.session_id, config=cfg, enabled=False)
            return self.manager
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
        first_row = run_row(cfg, sink.timestamp, run_id=run_id, session_id=self.session_id,
                            task_description=self.task_description, mode=self.mode, agent=self.agent,
                            model=self.model, started_ns=time.time_ns(), meta=meta)
        manager = EventCaptureManager(run_id, self.session_id, config=cfg, enabled=sampled)
        writer = BatchWriter(manager.bus, sink, cfg, run_id, self.session_id, run_row=first_row)
        writer.prepare = lambda: _remigrate(url, cfg.placement)
        writer.needs_prepare = outage
        manager.writer = writer
        if cfg.otlp_endpoint and sampled:
            self.forwarder = manager.otlp_forwarder = _otlp_forwarder(cfg.otlp_endpoint, run_id, writer)
        writer.start()
        self.manager = manager
        return manager

    async def finish(self, error: BaseException | str | None, status: str | None = None) -> None:
        """Close the run: ``status`` (``completed`` / ``failed``) or, when None, ``failed`` exactly when
        ``error`` is given (a clean ``sys.exit`` counts as completed). An error is recorded as one
        ``error`` event."""
        manager = self.manager
        if manager is None or manager.writer is None:  # never started, or capture disabled
            return
        if isinstance(error, BaseException) and _is_clean_exit(error):
            error = None
        if status is None:
            status = "completed" if error is None else "failed"
        if error is not None:
            if isinstance(error, BaseException):
                kind = "cancelled" if isinstance(error, asyncio.CancelledError) else type(error).__name__
                text = f"{kind}: {error}" if str(error) else kind
                meta = {"exception_type": type(error).__qualname__}
            else:
                kind, text, meta = "run_error", str(error), {}
            manager.capture_error("capture_run", text, kind, meta)
        writer = manager.writer
        if writer is not None:
            writer.finish = lambda: self._finish_values(manager, status)
        try:
            await manager.aclose()
        except Exception:
            log.exception("cmbagent-events: could not close run %s", manager.run_id)
        if self.forwarder is not None:  # the writer has stopped: send the last spans (bounded wait)
            await asyncio.to_thread(self.forwarder.close, OTLP_CLOSE_TIMEOUT_S)

    @staticmethod
    def _finish_values(manager: EventCaptureManager, status: str) -> FinishValues:
        """The run row's closing values, taken when the last batch is built (so the counts are final)."""
        stats = manager.get_performance_stats()
        patch = Sanitizer(()).encode({"capture": {
            "batches_written": stats["batches_written"],
            "queue_high_water": stats["queue_high_water"],
            "avg_capture_time_us": round(stats["avg_capture_time_us"], 3),
            "last_error": stats["last_error"],
            "lost_completions": stats["lost_completions"],
        }, "usage": dict(manager.usage), "drops": stats["drops"]}, 2000)
        return status, time.time_ns(), stats["total_events"], stats["dropped_events"], patch


OTLP_CLOSE_TIMEOUT_S = 10.0  # longest a run's exit waits for its last spans to reach the OTLP endpoint


def _otlp_forwarder(endpoint: str, run_id: str, writer: BatchWriter) -> Any:
    """Live OTLP forwarding of the run (see export/otlp.py), fed by the writer's commits."""
    try:
        from .export.otlp import OtlpForwarder, make_exporter
    except ImportError as exc:
        raise ConfigError("CMBAGENT_EVENTS_OTLP_ENDPOINT is set but the [otel] extra is not installed: "
                          f"pip install 'cmbagent-events[otel]' ({exc})") from None
    forwarder = OtlpForwarder(make_exporter(endpoint), run_id)
    writer.add_commit_listener(forwarder.on_commit)
    return forwarder


def _is_outage(exc: BaseException) -> bool:
    """A database error that means "not reachable (or writable) right now", not "this cannot work"
    (a bad URL, a schema conflict): the run goes on and the writer retries."""
    if isinstance(exc, (OSError, TimeoutError, sqlite3.Error)):
        return True
    module = type(exc).__module__
    return module.startswith(("asyncpg", "sqlalchemy")) and "Conflict" not in type(exc).__name__


async def _remigrate(url: Any, placement: Any) -> None:
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


def _install_hooks() -> Callable[[], None] | None:
    """Install the AG2 hooks for the duration of a run (reference counted across runs): classic AG2
    (``autogen``) and AG2 1.x (``ag2`` >= 1), whichever are installed; both when both are."""
    from .integrations import ag2_classic, flavours

    # Without classic AG2 this says once (INFO) that none was found, and whether AG2 1.x is there.
    releases = [ag2_classic.acquire_hooks()]
    if flavours.v1_installed():
        from .integrations import ag2_v1

        releases.append(ag2_v1.acquire_hooks())
    held = [r for r in releases if r is not None]
    if not held:  # no AG2: capture still works through the manual API
        return None

    def release() -> None:
        for r in reversed(held):
            r()

    return release


_open_sync_runs: dict[int, tuple[_RunSession, _LoopThread]] = {}
_open_sync_lock = threading.Lock()


def _close_open_sync_runs() -> None:
    """At interpreter exit, close sync runs whose ``with`` block never ended (e.g. a daemon thread
    still inside one): drain what they captured (bounded by their close timeout) and mark them failed."""
    with _open_sync_lock:
        pending = list(_open_sync_runs.values())
        _open_sync_runs.clear()
    for session, loop_thread in pending:
        try:
            loop_thread.run(session.finish(InterpreterExit("interpreter exited with the run still open")),
                            timeout=session.config.close_timeout_s + 5.0)
        except Exception:
            log.exception("cmbagent-events: could not close an open run at exit")
        finally:
            loop_thread.stop()


class InterpreterExit(Exception):
    """Recorded as the error of a sync run still open when the interpreter exits."""


atexit.register(_close_open_sync_runs)


class _LoopThread:
    """An event loop on a daemon thread: the writer's home for synchronous runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="cmbagent-events-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def stop(self) -> None:
        try:  # as asyncio.run does: lets what the loop holds (kept PostgreSQL connections) close
            self.run(self.loop.shutdown_asyncgens(), timeout=5.0)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self.loop.close()


FINAL_STATUSES = ("completed", "failed", "abandoned")


def _check_status(status: str | None) -> None:
    if status is not None and status not in FINAL_STATUSES:
        raise ValueError(f"unknown final run status {status!r}; expected one of {', '.join(FINAL_STATUSES)}")


class RunHandle:
    """An open run from :func:`start_run`; ``await handle.finish()`` closes it.

    ``handle.run`` is the run's :class:`EventCaptureManager` (``run_id``, ``set_context``, the
    ``capture_*`` methods, ``flush``). Finish on the event loop the run was started on, or from any
    other loop or thread with the same result.
    """

    def __init__(self, session: _RunSession, manager: EventCaptureManager, restore: Callable[[], None],
                 release: Callable[[], None] | None) -> None:
        self._session = session
        self.run = manager
        self._restore: Callable[[], None] | None = restore
        self._release = release
        self._lock = threading.Lock()
        self.terminated = False  # SIGTERM cancelled the run's task (see signals); set by finish

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def finished(self) -> bool:
        return self._restore is None

    def _detach(self) -> bool:
        """Remove the hooks and the current captor, once: True for the first caller."""
        with self._lock:
            restore, release = self._restore, self._release
            self._restore = self._release = None
        if restore is None:
            return False
        self.terminated = signals.unwatch(id(self._session))
        if release is not None:
            release()
        restore()
        return True

    async def finish(self, status: str | None = None, error: BaseException | str | None = None) -> None:
        """Close the run: drain the queue (bounded by ``close_timeout_s``) and store its final row.

        ``status`` is ``completed``, ``failed`` or ``abandoned``; when None it is ``failed`` exactly when
        ``error`` (an exception or a message, recorded as one ``error`` event) is given. A second call is
        a no-op. Never raises over the run's outcome: problems on the way out are logged.

        Raises:
            ValueError: for an unknown ``status`` (the run stays open).
        """
        _check_status(status)
        if self._detach():
            await self._session.finish(signals.Terminated() if self.terminated else error, status)


class SyncRunHandle(RunHandle):
    """An open run from :func:`start_run_sync`; ``handle.finish()`` closes it (any thread).

    The run's writer lives on its own background loop thread; an unfinished handle is closed as
    ``failed`` at interpreter exit (what it captured is drained first).
    """

    def __init__(self, session: _RunSession, manager: EventCaptureManager, restore: Callable[[], None],
                 release: Callable[[], None] | None, loop_thread: _LoopThread) -> None:
        super().__init__(session, manager, restore, release)
        self._loop_thread = loop_thread

    def finish(self, status: str | None = None, error: BaseException | str | None = None) -> None:  # type: ignore[override]
        """:meth:`RunHandle.finish` for synchronous code (not from inside an event loop's thread of this run)."""
        _check_status(status)
        if not self._detach():
            return
        session, loop_thread = self._session, self._loop_thread
        with _open_sync_lock:
            owned = _open_sync_runs.pop(id(session), None) is not None
        try:
            if owned:  # else the exit handler already closed it
                loop_thread.run(session.finish(error, status), timeout=session.config.close_timeout_s + 10.0)
        except Exception:
            log.exception("cmbagent-events: closing run %s failed", self.run.run_id)
        finally:
            loop_thread.stop()


async def start_run(
    db_url: str | None = None,
    *,
    task_description: str = "",
    mode: str = "one_shot",
    agent: str | None = None,
    model: str | None = None,
    session_id: str = "default",
    config: CaptureConfig | None = None,
    hooks: bool = True,
    meta: dict[str, Any] | None = None,
) -> RunHandle:
    """Open a captured run without a context manager; close it with ``await handle.finish(...)``.

    The run becomes the current captor (here and process-wide) and the AG2 hooks are installed
    (``hooks=False`` to skip them) until it finishes. Arguments as for :func:`capture_run`.

    Raises:
        DatabaseURLError, ConfigError: for a URL or configuration that cannot work.
    """
    session = _RunSession(db_url, task_description=task_description, mode=mode, agent=agent, model=model,
                          session_id=session_id, config=config, meta=meta)
    manager = await session.start()
    restore = set_event_captor(manager)
    release = _install_hooks() if hooks and manager.enabled else None
    signals.watch(id(session), asyncio.current_task())  # SIGTERM cancels this task, as Ctrl-C would
    return RunHandle(session, manager, restore, release)


def start_run_sync(
    db_url: str | None = None,
    *,
    task_description: str = "",
    mode: str = "one_shot",
    agent: str | None = None,
    model: str | None = None,
    session_id: str = "default",
    config: CaptureConfig | None = None,
    hooks: bool = True,
    meta: dict[str, Any] | None = None,
) -> SyncRunHandle:
    """:func:`start_run` for synchronous code: the writer runs on a background loop thread;
    ``handle.finish(...)`` closes the run; ``handle.run.flush_sync()`` is the barrier."""
    session = _RunSession(db_url, task_description=task_description, mode=mode, agent=agent, model=model,
                          session_id=session_id, config=config, meta=meta)
    loop_thread = _LoopThread()
    try:
        manager = loop_thread.run(session.start())
    except BaseException:
        loop_thread.stop()
        raise
    restore = set_event_captor(manager)
    release = _install_hooks() if hooks and manager.enabled else None
    with _open_sync_lock:
        _open_sync_runs[id(session)] = (session, loop_thread)
    signals.watch(id(session))
    return SyncRunHandle(session, manager, restore, release, loop_thread)


@contextlib.asynccontextmanager
async def capture_run(
    db_url: str | None = None,
    *,
    task_description: str = "",
    mode: str = "one_shot",
    agent: str | None = None,
    model: str | None = None,
    session_id: str = "default",
    config: CaptureConfig | None = None,
    hooks: bool = True,
    meta: dict[str, Any] | None = None,
) -> AsyncIterator[EventCaptureManager]:
    """Capture one run: ``async with capture_run(...) as run: ...``.

    The run closes ``completed`` when the block ends, ``failed`` (with an error event) when it raises.

    Args:
        db_url: database URL; defaults to ``CMBAGENT_EVENTS_DB_URL`` or the SQLite file
            ``cmbagent_events.db``. ``postgresql+asyncpg://...`` for PostgreSQL.
        hooks: install the AG2 hooks while the run is open.
        meta: stored on the run row (secrets redacted).

    Raises:
        DatabaseURLError, ConfigError: at entry, for a URL or configuration that cannot work.
    """
    handle = await start_run(db_url, task_description=task_description, mode=mode, agent=agent, model=model,
                             session_id=session_id, config=config, hooks=hooks, meta=meta)
    error: BaseException | None = None
    try:
        yield handle.run
    except BaseException as exc:
        error = exc
        raise
    finally:
        await handle.finish(error=error)
        if handle.terminated:
            raise signals.Terminated() from error  # drained: now end the process as SIGTERM asked


@contextlib.contextmanager
def capture_run_sync(
    db_url: str | None = None,
    *,
    task_description: str = "",
    mode: str = "one_shot",
    agent: str | None = None,
    model: str | None = None,
    session_id: str = "default",
    config: CaptureConfig | None = None,
    hooks: bool = True,
    meta: dict[str, Any] | None = None,
) -> Iterator[EventCaptureManager]:
    """:func:`capture_run` for synchronous code; the writer runs on a background loop thread.

    Use ``run.flush_sync()`` inside the block where async code would ``await run.flush()``.
    """
    handle = start_run_sync(db_url, task_description=task_description, mode=mode, agent=agent, model=model,
                            session_id=session_id, config=config, hooks=hooks, meta=meta)
    error: BaseException | None = None
    try:
        yield handle.run
    except BaseException as exc:
        error = exc
        raise
    finally:
        handle.finish(error=error)
