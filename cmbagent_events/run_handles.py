"""The handle of an open run: ``finish()`` once, from the run's loop or any other (or thread).

Synchronous runs keep their writer on a loop of their own (:class:`LoopThread`); one still open
when the interpreter exits is closed ``failed`` after what it captured is drained.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from . import signals
from .capture import EventCaptureManager
from .run_session import RunSession

log = logging.getLogger("cmbagent_events")
T = TypeVar("T")


_open_sync_runs: dict[int, tuple[RunSession, LoopThread]] = {}
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


class LoopThread:
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

    def __init__(self, session: RunSession, manager: EventCaptureManager, restore: Callable[[], None],
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

    def __init__(self, session: RunSession, manager: EventCaptureManager, restore: Callable[[], None],
                 release: Callable[[], None] | None, loop_thread: LoopThread) -> None:
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


def track_sync_run(session: RunSession, loop_thread: LoopThread) -> None:
    """Remember an open synchronous run, so that the interpreter's exit closes it if nothing else does."""
    with _open_sync_lock:
        _open_sync_runs[id(session)] = (session, loop_thread)
