"""The handle of an open run: ``finish()`` once, from the run's loop or any other (or thread).

The run's start and finish run on the process's writer loop (:mod:`.loop_thread`). A run still open
when the interpreter exits is closed ``failed`` after what it captured is drained; then the loop
stops.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from collections.abc import Callable

from ..capture import EventCaptureManager
from . import signals
from .loop_thread import LoopThread, stop_writer_loop
from .session import RunSession
from .writer_process import stop_writer_process

log = logging.getLogger("cmbagent_events")


_open_runs: dict[int, tuple[RunSession, LoopThread]] = {}
_open_lock = threading.Lock()


def _close_open_runs() -> None:
    """At interpreter exit, close runs whose block never ended (e.g. a daemon thread still inside one):
    drain what they captured (bounded by their close timeout) and mark them failed; then stop the loop."""
    with _open_lock:
        pending = list(_open_runs.values())
        _open_runs.clear()
    for session, loop_thread in pending:
        try:
            loop_thread.run(session.finish(InterpreterExit("interpreter exited with the run still open")),
                            timeout=session.config.close_timeout_s + 5.0)
        except Exception:
            log.exception("cmbagent-events: could not close an open run at exit")
    stop_writer_loop()
    stop_writer_process()  # its runs are closed: it ends once it has written them


class InterpreterExit(Exception):
    """Recorded as the error of a run still open when the interpreter exits."""


atexit.register(_close_open_runs)


def _forget_after_fork() -> None:
    """A forked child never closes its parent's runs at its exit."""
    global _open_lock
    _open_lock = threading.Lock()
    _open_runs.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


FINAL_STATUSES = ("completed", "failed", "abandoned")


def _check_status(status: str | None) -> None:
    if status is not None and status not in FINAL_STATUSES:
        raise ValueError(f"unknown final run status {status!r}; expected one of {', '.join(FINAL_STATUSES)}")


class RunHandle:
    """An open run from :func:`start_run`; ``await handle.finish()`` closes it.

    ``handle.run`` is the run's :class:`EventCaptureManager` (``run_id``, ``set_context``, the
    ``capture_*`` methods, ``flush``). Finish from any loop or thread's loop, with the same result.
    """

    def __init__(self, session: RunSession, run: EventCaptureManager, restore: Callable[[], None],
                 release: Callable[[], None] | None, loop_thread: LoopThread) -> None:
        self._session = session
        self.run = run
        self._restore: Callable[[], None] | None = restore
        self._release = release
        self._loop_thread = loop_thread
        self._lock = threading.Lock()
        self.terminated = False  # SIGTERM cancelled the run's task (see signals); set by finish

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def finished(self) -> bool:
        return self._restore is None

    def _detach(self) -> bool:
        """Remove the hooks and unset the current run, once: True for the first caller."""
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

    def _take(self) -> bool:
        """Take the run from the exit handler's list: False when the exit handler already closed it."""
        with _open_lock:
            return _open_runs.pop(id(self._session), None) is not None

    async def finish(self, status: str | None = None, error: BaseException | str | None = None) -> None:
        """Close the run: drain the queue (bounded by ``close_timeout_s``) and store its final row.

        ``status`` is ``completed``, ``failed`` or ``abandoned``; when None it is ``failed`` exactly when
        ``error`` (an exception or a message, recorded as one ``error`` event) is given. A second call is
        a no-op. Never raises over the run's outcome: problems on the way out are logged. The drain runs
        on the run's own loop; cancelling the caller meanwhile does not cut it short.

        Raises:
            ValueError: for an unknown ``status`` (the run stays open).
        """
        _check_status(status)
        if not self._detach() or not self._take():
            return
        error = signals.Terminated() if self.terminated else error
        try:
            await self._loop_thread.call(self._session.finish(error, status))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("cmbagent-events: closing run %s failed", self.run.run_id)


class SyncRunHandle(RunHandle):
    """An open run from :func:`start_run_sync`; ``handle.finish()`` closes it (any thread)."""

    def finish(self, status: str | None = None, error: BaseException | str | None = None) -> None:  # type: ignore[override]
        """:meth:`RunHandle.finish` for synchronous code (not from inside an event loop's thread of this run)."""
        _check_status(status)
        if not self._detach() or not self._take():
            return
        session = self._session
        try:
            self._loop_thread.run(session.finish(error, status), timeout=session.config.close_timeout_s + 10.0)
        except Exception:
            log.exception("cmbagent-events: closing run %s failed", self.run.run_id)


def track_run(session: RunSession, loop_thread: LoopThread) -> None:
    """Remember an open run, so that the interpreter's exit closes it if nothing else does."""
    with _open_lock:
        _open_runs[id(session)] = (session, loop_thread)
