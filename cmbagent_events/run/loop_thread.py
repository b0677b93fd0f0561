"""The process's writer loop: one event loop on a daemon thread, home of every run's writer.

Never the caller's loop or thread: a body that blocks (sync AG2 code inside ``async with
capture_run``, a long ``time.sleep``) delays neither the run row, nor the batches, nor the
heartbeat. One loop for every run keeps what it holds across runs (PostgreSQL connections with their
prepared statements). Started by the first run; a forked child starts its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

_shared: list[LoopThread] = []  # the process's writer loop, once a run started it
_shared_lock = threading.Lock()


def writer_loop() -> LoopThread:
    """The process's writer loop (started on first use; again in a forked child)."""
    with _shared_lock:
        if not _shared:
            _shared.append(LoopThread())
        return _shared[0]


def stop_writer_loop() -> None:
    """Stop the process's writer loop, if one was started (at interpreter exit, after the runs closed)."""
    with _shared_lock:
        loop_thread, _shared[:] = (_shared[0] if _shared else None), []
    if loop_thread is not None:
        loop_thread.stop()


def _forget_after_fork() -> None:
    """A forked child has no writer thread (only its parent's loop object, mid-use): it starts its own."""
    global _shared_lock
    _shared.clear()
    _shared_lock = threading.Lock()


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
