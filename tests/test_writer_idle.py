"""A quiet run's writer sleeps until the next record or heartbeat, instead of waking every flush
interval (each wake-up costs CPU): it must still write the next record, flush, beat and close."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from cmbagent_events import CaptureConfig, WorkflowRun, capture_run
from cmbagent_events.testing.stored import stored_run
from cmbagent_events.testing.waiting import until
from cmbagent_events.writer import BatchWriter

QUIET = CaptureConfig(flush_interval_ms=5)


async def test_an_idle_writer_is_woken_by_the_next_record(db_url: str) -> None:
    async with capture_run(db_url, config=QUIET, hooks=False) as run:
        run.capture_tool_call("worker", "first", {"i": 0})
        assert await run.flush(30)
        await until(lambda: run.bus.wake_on_first)  # the writer went idle
        idle_task = run.writer._task
        run.capture_tool_call("worker", "second", {"i": 1})  # from the run's own loop thread
        assert not run.bus.wake_on_first  # this record woke it
        await until(lambda: run.writer.records_written >= 2)  # written without any flush asking
        await until(lambda: run.bus.wake_on_first)
        await asyncio.to_thread(run.capture_tool_call, "worker", "third", {"i": 2})  # from another thread
        await until(lambda: run.writer.records_written >= 3)
        assert run.writer._task is idle_task and not idle_task.done()
    _, seqs = await stored_run(db_url, run.run_id)
    assert seqs == [0, 1, 2]


async def test_an_idle_writer_still_beats_and_closes(db_url: str, db_session,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BatchWriter, "HEARTBEAT_S", 0.2)
    async with capture_run(db_url, config=QUIET, hooks=False) as run:
        assert await run.flush(30)
        await until(lambda: run.bus.wake_on_first)
        first = run.writer._last_beat
        await until(lambda: run.writer._last_beat > first)  # a heartbeat written while idle
    row = await db_session.get(WorkflowRun, run.run_id)
    assert row.status == "completed" and datetime.fromisoformat(row.meta["heartbeat"])
