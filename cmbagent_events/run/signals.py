"""SIGTERM drains open runs the way Ctrl-C (SIGINT) does, instead of losing them.

Python's default for SIGTERM kills the process at once: whatever the writer still held was lost and
the run row stayed ``running``. While at least one run is open in the main thread, this module's
handler is installed (and the previous one restored when the last run closes, unless someone else
replaced ours meanwhile):

- first, every open run's writer is asked to commit what it holds now (on its own thread: the body
  may be blocked in sync code and never see the signal, and a SIGKILL may follow in seconds);
- an application's own SIGTERM handler is then called and decides alone how the process ends: we
  neither raise nor cancel on top of it (its shutdown path, or interpreter exit, closes the runs);
  a handler set to ignore SIGTERM (``SIG_IGN``) is respected: nothing is installed;
- without one, an async run whose event loop runs in the main thread has its task cancelled, as
  ``asyncio.run`` does on Ctrl-C; ``capture_run`` then records the run as failed with a
  ``Terminated`` error, drains, and raises :class:`Terminated` (a ``SystemExit``) so the process ends;
- otherwise :class:`Terminated` is raised in the main thread, unwinding a sync run's ``with`` block
  (which drains and closes the run); runs left open in other threads are closed at exit.

The process then exits with status 143 (128 + SIGTERM), as a shell reports a terminated process.
``CMBAGENT_EVENTS_HANDLE_SIGTERM=false`` leaves SIGTERM alone altogether.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any


class Terminated(SystemExit):
    """SIGTERM arrived while a run was open; raised after (or to start) the run's drain."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)

    def __str__(self) -> str:
        return "SIGTERM received"


_lock = threading.Lock()
_open: dict[int, tuple[asyncio.AbstractEventLoop | None, asyncio.Task[Any] | None, Any]] = {}
_terminated: set[int] = set()
_previous: Any = None
_installed = False


def watch(key: int, run: Any, task: asyncio.Task[Any] | None = None) -> None:
    """Drain the run ``key`` on SIGTERM; ``run`` has ``request_drain()``; ``task`` is the task of an
    async run's body (None: sync)."""
    global _previous, _installed
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    loop = task.get_loop() if task is not None else None
    with _lock:
        _open[key] = (loop, task, run)
        if _installed:
            return
        try:
            previous = signal.getsignal(signal.SIGTERM)
            if previous is signal.SIG_IGN:
                return
            signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):  # not supported here (e.g. an embedded interpreter)
            return
        _previous, _installed = previous, True


def unwatch(key: int) -> bool:
    """Stop watching ``key``; True when SIGTERM cancelled that run (``capture_run`` then raises
    :class:`Terminated` after the drain)."""
    global _installed
    with _lock:
        _open.pop(key, None)
        terminated = key in _terminated
        _terminated.discard(key)
        if _installed and not _open and threading.current_thread() is threading.main_thread():
            try:
                if signal.getsignal(signal.SIGTERM) is _on_sigterm:  # never undo someone else's handler
                    signal.signal(signal.SIGTERM, _previous if _previous is not None else signal.SIG_DFL)
            except (ValueError, OSError):
                pass
            _installed = False
    return terminated


def _on_sigterm(signum: int, frame: Any) -> None:
    for _, _, run in list(_open.values()):
        try:
            run.request_drain()
        except Exception:  # a signal handler must not fail on our account
            pass
    previous = _previous
    if callable(previous):
        previous(signum, frame)  # the application's own handler decides how the process ends
        return
    running = asyncio._get_running_loop()  # the loop running in this (main) thread, if any
    cancelled = False
    for key, (loop, task, _) in list(_open.items()):
        if task is not None and loop is not None and loop is running and not task.done():
            _terminated.add(key)
            task.cancel("SIGTERM")
            loop.call_soon_threadsafe(lambda: None)  # wake the selector so the cancellation is seen
            cancelled = True
    if not cancelled:
        raise Terminated()
