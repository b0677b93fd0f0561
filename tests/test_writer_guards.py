"""The writer's own guards (issue: "a catch-all around the drain loop that logs once and keeps
draining, pending barriers always resolved, flush and flush_sync with a default timeout"; "a value
mutated after capture is stored as it was at encode time"). Real SQLite files and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cmbagent_events import CaptureConfig, ExecutionEvent, Message, WorkflowRun, capture_run, capture_run_sync
from cmbagent_events.ids import event_id_prefix
from cmbagent_events.testing.stored import stored_run

SMALL = CaptureConfig(buffer_size=50, flush_interval_ms=20, close_timeout_s=30)


async def test_an_unexpected_writer_error_is_logged_once_counted_and_the_writer_goes_on(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with capture_run(db_url, config=SMALL, hooks=False) as run:
        rows = run.writer._rows  # type: ignore[union-attr]
        build = rows.build
        failures = [RuntimeError("a bug in the writer"), RuntimeError("and another")]

        def broken_twice(records: Any) -> Any:  # a fault no per-row guard expects
            if failures:
                raise failures.pop(0)
            return build(records)

        rows.build = broken_twice  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="cmbagent_events"):
            for i in range(10):
                run.capture_tool_call("a", "t", {"i": i})
            assert await run.flush(30) is False  # its batch was lost: the barrier says so, it does not hang
            for i in range(10):
                run.capture_tool_call("a", "t", {"i": i})
            assert await run.flush(30) is False
            assert not failures
            for i in range(10):
                run.capture_tool_call("a", "t", {"i": 100 + i})
            assert await run.flush(30) is True  # the writer is still draining
            assert not run.writer._task.done()  # type: ignore[union-attr]
    assert [r.getMessage() for r in caplog.records].count(
        "cmbagent-events: writer error (counted; the writer goes on; logged once per run)") == 1
    row, seqs = await stored_run(db_url, run.run_id)
    assert (row.total_events, row.dropped_events, row.meta["drops"]) == (30, 20, {"writer error": 20})
    assert seqs == list(range(20, 30))


def _lock(db_file: Path) -> sqlite3.Connection:
    """Another process's write transaction on the file: the writer cannot commit until it ends."""
    locker = sqlite3.connect(db_file, timeout=0, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    return locker


async def test_flush_without_a_timeout_returns_within_the_close_timeout(sqlite_url: str, tmp_path: Path) -> None:
    config = CaptureConfig(flush_interval_ms=20, close_timeout_s=1)
    async with capture_run(sqlite_url, config=config, hooks=False) as run:
        assert await run.flush(30)
        locker = _lock(tmp_path / "events.db")
        try:
            run.capture_message("a", "b", "waits for the lock")
            # no timeout given: config.close_timeout_s (a flush that waited forever fails here after 60 s)
            assert await asyncio.wait_for(run.flush(), 60) is False
        finally:
            locker.rollback()
            locker.close()
        assert await run.flush(30)
    row, seqs = await stored_run(sqlite_url, run.run_id)
    assert (row.status, seqs) == ("completed", [0])


def test_flush_sync_without_a_timeout_returns_within_the_close_timeout(sqlite_url: str, tmp_path: Path) -> None:
    config = CaptureConfig(flush_interval_ms=20, close_timeout_s=1)
    with capture_run_sync(sqlite_url, config=config, hooks=False) as run:
        assert run.flush_sync(30)
        locker = _lock(tmp_path / "events.db")
        try:
            run.capture_message("a", "b", "waits for the lock")
            result: list[bool] = []
            waiter = threading.Thread(target=lambda: result.append(run.flush_sync()), daemon=True)
            waiter.start()
            waiter.join(60)  # a flush_sync that blocked forever fails here (its daemon thread is left behind)
            assert result == [False]
        finally:
            locker.rollback()
            locker.close()
        assert run.flush_sync(30)


async def test_containers_changed_after_capture_are_stored_as_captured(db_url: str, db_session) -> None:
    """The caller keeps changing what it passed (AG2 appends to its message lists; a program updates
    the large context dict it handed over): the top level is stored as it was at capture, also for
    values over the size limit (the writer's exact path, which once died of "dict changed size")."""
    context = {f"key{i}": "v" * 100 for i in range(200)}  # ~22 kB: over max_input_size, the exact path
    history = [{"role": "user", "content": "first"}]
    async with capture_run(db_url, config=SMALL, hooks=False) as run:
        eid = run.capture_agent_call("engineer", history, context=context)
        tool = run.capture_tool_call("engineer", "t", context)
        for i in range(200):
            context.pop(f"key{i}")
            context[f"new{i}"] = i
        history.append({"role": "assistant", "content": "second"})
        assert await run.flush(30)
    events = {e.id: e for e in (await db_session.scalars(
        select(ExecutionEvent).where(ExecutionEvent.run_id == run.run_id))).all()}
    stored_context = events[eid].inputs["context"]
    assert "new0" not in str(stored_context) and "key0" in str(stored_context)
    assert events[eid].inputs["message"] == [{"role": "user", "content": "first"}]
    assert "new0" not in str(events[tool].inputs["arguments"]) and "key0" in str(events[tool].inputs["arguments"])
    assert (await db_session.get(WorkflowRun, run.run_id)).dropped_events == 0


async def test_a_batch_the_database_refuses_loses_only_the_refused_row(db_url: str, db_session) -> None:
    """One row the database refuses (its id is already taken: a replayed spill, a clash) costs that row,
    counted as 'refused by database'; the batch is split until the innocent rows beside it are stored."""
    async with capture_run(db_url, config=CaptureConfig(buffer_size=500, flush_interval_ms=60_000),
                           hooks=False) as run:
        assert await run.flush(30)  # the run row is in
        taken = event_id_prefix(run.run_id) + str(7).zfill(9)  # the id the run's seq 7 will get
        db_session.add(ExecutionEvent(id=taken, run_id=run.run_id, session_id="elsewhere", event_type="imposter",
                                      seq=-1, depth=0, execution_order=0, status="completed",
                                      timestamp=datetime.now(UTC)))
        await db_session.commit()
        for i in range(40):  # one batch: the writer is not woken before the flush
            run.capture_tool_call("a", "t", {"i": i})
        assert await run.flush(30)
    row, seqs = await stored_run(db_url, run.run_id)
    assert (row.total_events, row.dropped_events, row.meta["drops"]) == (40, 1, {"refused by database": 1})
    assert [s for s in seqs if s >= 0] == [s for s in range(40) if s != 7]


class BrokenRepr:
    def __repr__(self) -> str:
        raise ValueError("no repr")


async def test_values_that_cannot_be_read_are_stored_as_markers_naming_why(db_url: str, db_session) -> None:
    """A value whose own __repr__ raises, as a payload, an agent name or a message content: its event is
    stored with a marker naming the type and the error, beside the values that could be read."""
    async with capture_run(db_url, config=SMALL, hooks=False) as run:
        tool = run.capture_tool_call(BrokenRepr(), "t", {"broken": BrokenRepr(), "fine": 1}, result=BrokenRepr())
        message = run.capture_message("a", "b", BrokenRepr())
    marker = "<unrepresentable BrokenRepr: ValueError>"
    event = await db_session.get(ExecutionEvent, tool)
    assert (event.agent_name, event.inputs["arguments"], event.outputs) == (
        marker, {"broken": marker, "fine": 1}, {"result": marker})
    stored = (await db_session.scalars(select(Message).where(Message.event_id == message))).one()
    assert stored.content == marker
    assert (await db_session.get(WorkflowRun, run.run_id)).dropped_events == 0
