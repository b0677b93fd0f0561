"""The handle of an open run: ``finish()`` once, from the run's loop or any other (or thread).

Every run's writer lives on the process's writer loop (:func:`writer_loop`: one event loop on a
daemon thread, started by the first run), never on the caller's loop: a body that blocks (sync AG2
code inside ``async with capture_run``, a long ``time.sleep``) delays neither the run row, nor the
batches, nor the heartbeat. One loop for every run keeps what it holds across runs (PostgreSQL
connections with their prepared statements). A run still open when the interpreter exits is closed
``failed`` after what it captured is drained; then the loop stops. A forked child starts its own.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from . import signals
from .capture import EventCaptureManager
from .run_session import RunSession

log = logging.getLogger("cmbagent_events")
T = TypeVar("T")


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
    with _shared_lock:
        writer, _shared[:] = (_shared[0] if _shared else None), []
    if writer is not None:
        writer.stop()


class InterpreterExit(Exception):
    """Recorded as the error of a run still open when the interpreter exits."""


atexit.register(_close_open_runs)
_shared: list[LoopThread] = []  # the process's writer loop, once a run started it
_shared_lock = threading.Lock()


def writer_loop() -> LoopThread:
    """The process's writer loop (started on first use; again in a forked child)."""
    with _shared_lock:
        if not _shared:
            _shared.append(LoopThread())
        return _shared[0]


def _forget_after_fork() -> None:
    """A forked child has no writer thread (only its parent's loop object, mid-use): it starts its own,
    and never closes its parent's runs at its exit."""
    global _shared_lock, _open_lock
    _shared.clear()
    _shared_lock, _open_lock = threading.Lock(), threading.Lock()
    _open_runs.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class LoopThread:
    """An event loop on a daemon thread: a run's writer's home."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="cmbagent-events-loop", daemon=True)
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._thread.start()

    def run(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        """``coro`` on this loop, waited for here (a thread that is not this loop's)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    async def call(self, coro: Awaitable[T]) -> T:
        """``coro`` on this loop, awaited from another loop, which goes on meanwhile. Cancelling the
        caller does not cancel ``coro`` (a drain, once started, is not cut short)."""
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return await asyncio.shield(asyncio.wrap_future(future))

    def stop(self) -> None:
        """Stop the loop and join its thread (idempotent; from any thread but this loop's)."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
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
    ``capture_*`` methods, ``flush``). Finish from any loop or thread's loop, with the same result.
    """

    def __init__(self, session: RunSession, manager: EventCaptureManager, restore: Callable[[], None],
                 release: Callable[[], None] | None, loop_thread: LoopThread) -> None:
        self._session = session
        self.run = manager
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
