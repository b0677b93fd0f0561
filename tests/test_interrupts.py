"""Ctrl-C / SIGTERM landing inside a capture call: the event it interrupts is stored or counted as
dropped, exactly once. CPython raises a signal handler's exception only after a call returns, on
entry to a Python function or on a backward jump; the bus marks such an exception once the record is
queued or counted (bus.accounted), and the seq is drawn without a call (capture._emit)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from cmbagent_events import CaptureConfig, ExecutionEvent, WorkflowRun, capture_run, capture_run_sync, make_engine
from cmbagent_events.bus import INTERRUPTED, QUEUE_FULL, EventBus
from cmbagent_events.capture import EventCaptureManager


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt / signals.Terminated raised by a signal handler."""


def _run(bus: EventBus) -> EventCaptureManager:
    return EventCaptureManager("interrupts", config=CaptureConfig.from_env({}), bus=bus)


def test_an_interrupt_after_the_append_leaves_the_event_queued_and_uncounted() -> None:
    bus = EventBus(maxsize=10, batch_size=1)  # every put wakes the writer

    def waker() -> None:  # where a signal lands after queue.append: the record is already queued
        raise Interrupt

    bus.set_waker(waker)
    with pytest.raises(Interrupt):
        _run(bus).capture_tool_call("agent", "tool", {"x": 1})
    assert len(bus) == 1
    assert (bus.dropped, bus.drop_causes) == (0, {})


def test_an_interrupt_after_a_queue_full_drop_counts_it_once() -> None:
    bus = EventBus(maxsize=1, batch_size=10)
    run = _run(bus)
    run.capture_tool_call("agent", "tool", {"x": 1})  # fills the queue

    class Lock:  # a signal landing as the drop lock is released: the drop is already counted
        def __enter__(self) -> None:
            pass

        def __exit__(self, *exc: Any) -> None:
            raise Interrupt

    bus._drop_lock = Lock()  # type: ignore[assignment]
    with pytest.raises(Interrupt):
        run.capture_tool_call("agent", "tool", {"x": 2})
    assert (bus.dropped, bus.drop_causes) == (1, {QUEUE_FULL: 1})


def test_an_interrupt_before_the_put_counts_the_event_as_interrupted() -> None:
    bus = EventBus(maxsize=10, batch_size=10)
    run = _run(bus)

    def put(record: Any) -> bool:  # a signal landing on entry to put: nothing queued, nothing counted
        raise Interrupt

    run._put = put  # type: ignore[method-assign]
    with pytest.raises(Interrupt):
        run.capture_tool_call("agent", "tool", {"x": 1})
    assert (bus.dropped, bus.drop_causes, run.get_performance_stats()["total_events"]) == (1, {INTERRUPTED: 1}, 1)


# a signal may also land in a garbage-collector callback, where Python reports it as unraisable
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("queue_size", [100_000, 300], ids=["queue-large", "queue-full"])
def test_real_signals_at_random_points_never_lose_or_double_count_an_event(queue_size: int, db_url: str,
                                                                           tmp_path: Path) -> None:
    """SIGALRM every 50 us raises inside capture calls wherever the interpreter lets it: at the end,
    stored + dropped = captured and the missing seqs are exactly the dropped ones."""
    armed = False

    def on_alarm(signum: int, frame: Any) -> None:
        nonlocal armed
        if armed:  # one interrupt per capture call, and only inside one
            armed = False
            raise Interrupt

    calls, interrupts = 20_000, 0
    config = CaptureConfig(flush_interval_ms=20, close_timeout_s=60, queue_size=queue_size,
                           buffer_size=min(500, queue_size))
    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        with capture_run_sync(db_url, config=config, hooks=False) as run:
            signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.00005)
            try:
                for i in range(calls):
                    try:
                        armed = True
                        run.capture_tool_call("worker", "step", {"i": i}, result=i)
                        armed = False
                    except Interrupt:
                        interrupts += 1
            finally:
                armed = False
                signal.setitimer(signal.ITIMER_REAL, 0, 0)
            assert run.flush_sync(60)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert interrupts > 100, "too few signals landed to tell anything"
    row, seqs = _stored(db_url, run.run_id)
    missing = set(range(row.total_events)) - seqs
    assert (len(seqs) + row.dropped_events, len(missing)) == (row.total_events, row.dropped_events), (
        f"{interrupts} interrupts: captured {row.total_events}, stored {len(seqs)}, dropped {row.dropped_events} "
        f"{row.meta.get('drops')}")
    assert sum(row.meta["drops"].values()) == row.dropped_events


def _stored(db_url: str, run_id: str) -> tuple[Any, set[int]]:
    """The run row and its stored seqs, read synchronously (the test body holds the main thread)."""
    async def read() -> tuple[Any, set[int]]:
        engine = make_engine(db_url)
        try:
            async with async_sessionmaker(engine, expire_on_commit=False)() as session:
                row = await session.get(WorkflowRun, run_id)
                seqs = set((await session.scalars(
                    select(ExecutionEvent.seq).where(ExecutionEvent.run_id == run_id))).all())
                return row, seqs
        finally:
            await engine.dispose()

    return asyncio.run(read())


async def test_a_cancel_landing_as_a_flush_completes_is_not_lost(sqlite_url: str) -> None:
    """SIGTERM cancels an async run's task; a body in ``await run.flush()`` must see that cancel even
    when its barrier completes in the same moment (asyncio.wait_for on 3.11 returned the result and
    dropped the cancel: a run that flushes in a loop then never ended)."""
    async with capture_run(sqlite_url, hooks=False) as run:
        barrier: concurrent.futures.Future[bool] = concurrent.futures.Future()
        run.writer.request_flush = lambda: barrier  # the writer's barrier, completed here instead
        task = asyncio.create_task(run.flush(30))
        await asyncio.sleep(0)  # the flush waits for its barrier
        barrier.set_result(True)  # committed: the result reaches the flush's future on the next step...
        await asyncio.sleep(0)
        assert not task.done()
        task.cancel()  # ... and the cancel lands in the same moment
        with pytest.raises(asyncio.CancelledError):
            await task
