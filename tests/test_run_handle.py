"""The run handle without a context manager: start_run / start_run_sync, then finish with a status."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from cmbagent_events import (
    ExecutionEvent,
    WorkflowRun,
    get_event_captor,
    make_engine,
    start_run,
    start_run_sync,
)


async def _stored(url: str, run_id: str) -> tuple[WorkflowRun, list[ExecutionEvent]]:
    engine = make_engine(url)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            row = await session.get(WorkflowRun, run_id)
            events = (await session.scalars(select(ExecutionEvent).where(ExecutionEvent.run_id == run_id)
                                             .order_by(ExecutionEvent.seq))).all()
            return row, list(events)
    finally:
        await engine.dispose()


async def test_started_run_is_current_until_finished_then_completed_and_drained(db_url, config) -> None:
    before = get_event_captor()
    handle = await start_run(db_url, config=config, hooks=False, task_description="handle")
    assert get_event_captor() is handle.run and not handle.finished
    for i in range(120):
        handle.run.capture_tool_call("a", "t", {"i": i})
    await handle.finish()
    assert handle.finished and get_event_captor() is before
    await handle.finish("failed", error="too late")  # a second finish changes nothing
    row, events = await _stored(db_url, handle.run_id)
    assert (row.status, row.total_events, row.dropped_events) == ("completed", 120, 0)
    assert [e.seq for e in events] == list(range(120)) and {e.event_type for e in events} == {"tool_call"}


async def test_finish_with_an_exception_fails_the_run_with_one_error_event(db_url, config) -> None:
    handle = await start_run(db_url, config=config, hooks=False)
    handle.run.capture_message("a", "b", "hi")
    await handle.finish(error=ValueError("bad fit"))
    row, events = await _stored(db_url, handle.run_id)
    errors = [e for e in events if e.event_type == "error"]
    assert row.status == "failed" and row.completed_at is not None
    assert [(e.event_subtype, e.error_message) for e in errors] == [("ValueError", "ValueError: bad fit")]


async def test_explicit_status_and_a_message_error(sqlite_url, config) -> None:
    handle = await start_run(sqlite_url, config=config, hooks=False)
    with pytest.raises(ValueError, match="unknown final run status"):
        await handle.finish("done")
    assert not handle.finished  # a bad status leaves the run open and current
    await handle.finish("abandoned", error="the client went away")
    row, events = await _stored(sqlite_url, handle.run_id)
    assert row.status == "abandoned"
    assert [(e.event_subtype, e.error_message) for e in events] == [("run_error", "the client went away")]


def test_sync_handle_started_in_one_thread_finished_in_another(sqlite_url, config) -> None:
    handle = start_run_sync(sqlite_url, config=config, hooks=False, mode="planning_and_control")
    assert get_event_captor() is handle.run

    def work() -> None:
        for i in range(50):
            handle.run.capture_code_execution("executor", f"print({i})", exit_code=0)
        handle.finish()

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert handle.finished
    row, events = asyncio.run(_stored(sqlite_url, handle.run_id))
    assert (row.status, row.mode, row.total_events, len(events)) == ("completed", "planning_and_control", 50, 50)


def test_sync_handle_failed_status_without_error_event(sqlite_url, config) -> None:
    handle = start_run_sync(sqlite_url, config=config, hooks=False)
    handle.run.capture_handoff("a", "b", reason="AfterWork")
    handle.finish("failed")
    row, events = asyncio.run(_stored(sqlite_url, handle.run_id))
    assert row.status == "failed" and [e.event_type for e in events] == ["handoff"]
