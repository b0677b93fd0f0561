"""A drain task bound to the loop it was started on: its wake-ups (from any thread) and flush
barriers. Shared by the writer (:class:`~cmbagent_events.writer.loop.BatchWriter`) and the courier
to a writer process (``run/writer_process.ProcessWriter``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any

from ..bus import EventBus
from ..records import barrier


class DrainTask:
    """The task draining ``bus`` on the loop :meth:`_start_task` ran on."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id = 0
        self._wake_event: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def _start_task(self, drain: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``drain`` on the running loop; the bus wakes it."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        self._wake_event = asyncio.Event()
        self._bus.set_waker(self.wake)
        self._task = self._loop.create_task(drain, name=name)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def wake(self) -> None:
        """Wake the drain task; safe from any thread, a no-op once the loop is gone."""
        event = self._wake_event
        if event is None:
            return
        if threading.get_ident() == self._loop_thread_id:
            event.set()
            return
        try:
            self._loop.call_soon_threadsafe(event.set)  # type: ignore[union-attr]
        except RuntimeError:  # loop closed: the close accounts for what is left
            pass

    def request_flush(self) -> concurrent.futures.Future[bool]:
        """Queue a barrier; the future is True once everything queued before it is committed."""
        future: concurrent.futures.Future[bool] = concurrent.futures.Future()
        if self._task is None or self._task.done():
            future.set_result(not len(self._bus))
            return future
        self._bus.put_control(barrier(future))
        return future
