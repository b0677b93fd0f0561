"""capture_run / capture_run_sync end to end: threads, drops, concurrency, exits, sampling."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import func, select

from cmbagent_events import (
    CaptureConfig,
    DatabaseURLError,
    EventRepository,
    ExecutionEvent,
    WorkflowRepository,
    WorkflowRun,
    capture_run,
    capture_run_sync,
    get_event_captor,
)


async def _run_row(db_session, run_id: str) -> WorkflowRun:
    db_session.expire_all()
    return await db_session.get(WorkflowRun, run_id, populate_existing=True)


async def test_10k_events_from_four_threads_and_the_loop_are_complete_and_gapless(db_url, db_session, config) -> None:
    per_producer = 2000
    async with capture_run(db_url, config=config, hooks=False) as run:
        barrier = threading.Barrier(4)

        def produce(n: int) -> None:
            barrier.wait()
            for i in range(per_producer):
                run.capture_message(f"thread-{n}", "sink", f"m{i}")

        threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for i in range(per_producer):
            run.capture_tool_call("loop", "t", {"i": i})
            if i % 100 == 0:
                await asyncio.sleep(0)
        for t in threads:
            t.join()
        assert await run.flush(30)
        seqs = (await db_session.scalars(select(ExecutionEvent.seq).where(ExecutionEvent.run_id == run.run_id))).all()
        assert sorted(seqs) == list(range(5 * per_producer))
        assert run.get_performance_stats()["dropped_events"] == 0
    row = await _run_row(db_session, run.run_id)
    assert (row.status, row.total_events, row.dropped_events) == ("completed", 10_000, 0)


async def test_full_queue_drops_are_counted_and_recorded_on_the_run(db_url, db_session) -> None:
    # 500 events hit a 100-slot queue while the writer (on its own thread) is held: none drains meanwhile.
    from cmbagent_events.testing.waiting import writer_held

    cfg = CaptureConfig(queue_size=100, buffer_size=100, flush_interval_ms=60_000)
    async with capture_run(db_url, config=cfg, hooks=False) as run:
        with writer_held():
            ids = [run.capture_handoff("a", "b") for _ in range(500)]
            stats = run.get_performance_stats()
        assert all(ids)
        assert stats["dropped_events"] == 400 and stats["queue_depth"] == 100
    row = await _run_row(db_session, run.run_id)
    assert (row.total_events, row.dropped_events, row.status) == (500, 400, "completed")
    count = await db_session.scalar(select(func.count()).where(ExecutionEvent.run_id == run.run_id))
    assert count == 100  # total_events - dropped_events rows made it


async def test_flush_then_query_sees_everything(db_url, db_session, config) -> None:
    async with capture_run(db_url, config=config, hooks=False) as run:
        for round_ in range(3):
            for i in range(137):
                run.capture_code_execution("x", f"print({i})", exit_code=0)
            assert await run.flush(10)
            count = await db_session.scalar(select(func.count()).where(ExecutionEvent.run_id == run.run_id))
            assert count == 137 * (round_ + 1)


async def test_concurrent_runs_never_mix_run_ids_or_parents(db_url, db_session, config) -> None:
    async def one_run(name: str) -> str:
        async with capture_run(db_url, config=config, hooks=False, task_description=name) as run:
            assert get_event_captor() is run

            async def agent(k: int) -> None:
                call = run.capture_agent_call(f"{name}-{k}", "go")
                for j in range(20):
                    run.capture_tool_call(f"{name}-{k}", "tool", {"j": j})
                    await asyncio.sleep(0)
                run.capture_agent_response(f"{name}-{k}", "ok", event_id=call)

            await asyncio.gather(*(agent(k) for k in range(5)))
            return run.run_id

    run_ids = await asyncio.gather(one_run("A"), one_run("B"))
    assert run_ids[0] != run_ids[1]
    for run_id, name in zip(run_ids, "AB", strict=True):
        events = (await db_session.scalars(select(ExecutionEvent).where(ExecutionEvent.run_id == run_id))).all()
        assert len(events) == 5 * 21
        calls = {e.id: e.agent_name for e in events if e.event_type == "agent_call"}
        assert len(calls) == 5
        for e in events:
            assert e.agent_name.startswith(name)
            if e.event_type == "tool_call":
                assert calls[e.parent_event_id] == e.agent_name  # parent is this task's own call
                assert e.depth == 1


async def test_bad_database_url_fails_at_entry_with_a_clear_error(config) -> None:
    for url, fragment in [("mysql://u@h/db", "unsupported database backend"), ("nonsense", "invalid database URL"),
                          ("sqlite+aiosqlite:///nonexistent-dir/x.db", "does not exist"),
                          ("postgresql+asyncpg://u@localhost:1/", "names no database")]:
        with pytest.raises(DatabaseURLError, match=fragment):
            async with capture_run(url, config=config, hooks=False):
                pytest.fail("body must not run")


async def test_body_exception_marks_run_failed_with_an_error_event(db_url, db_session, config) -> None:
    with pytest.raises(ZeroDivisionError):
        async with capture_run(db_url, config=config, hooks=False) as run:
            run.capture_agent_call("engineer", "divide")
            1 / 0  # noqa: B018
    row = await _run_row(db_session, run.run_id)
    assert row.status == "failed" and row.completed_at is not None
    errors = await EventRepository(db_session, "default").list_events(run.run_id, event_type="error")
    assert len(errors) == 1 and errors[0].event_subtype == "ZeroDivisionError"
    assert "division by zero" in errors[0].error_message


async def test_cancelled_body_closes_run_as_failed(db_url, db_session, config) -> None:
    started = asyncio.Event()
    holder = {}

    async def body() -> None:
        async with capture_run(db_url, config=config, hooks=False) as run:
            holder["run"] = run
            run.capture_message("a", "b", "before cancel")
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(body())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    row = await _run_row(db_session, holder["run"].run_id)
    assert row.status == "failed" and row.total_events == 2  # the message and the cancellation error
    errors = await EventRepository(db_session, "default").list_events(row.id, event_type="error")
    assert errors[0].event_subtype == "cancelled"


def test_capture_run_sync_from_threads(sqlite_url, config) -> None:
    with capture_run_sync(sqlite_url, config=config, hooks=False, mode="planning_and_control") as run:
        def work(n: int) -> None:
            for i in range(250):
                run.capture_message(f"t{n}", "x", str(i))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert run.flush_sync(10)
        assert run.get_performance_stats()["records_written"] == 1000

    async def check() -> None:
        from sqlalchemy.ext.asyncio import async_sessionmaker

        from cmbagent_events import make_engine

        engine = make_engine(sqlite_url)
        async with async_sessionmaker(engine)() as s:
            row = await s.get(WorkflowRun, run.run_id)
            assert (row.status, row.mode, row.total_events, row.dropped_events) == (
                "completed", "planning_and_control", 1000, 0)
        await engine.dispose()

    asyncio.run(check())


def test_capture_run_sync_records_failure(sqlite_url, config) -> None:
    with pytest.raises(KeyError), capture_run_sync(sqlite_url, config=config, hooks=False) as run:
        raise KeyError("missing")

    async def check() -> None:
        from sqlalchemy.ext.asyncio import async_sessionmaker

        from cmbagent_events import make_engine

        engine = make_engine(sqlite_url)
        async with async_sessionmaker(engine)() as s:
            row = await s.get(WorkflowRun, run.run_id)
            assert row.status == "failed" and row.total_events == 1
        await engine.dispose()

    asyncio.run(check())


async def test_sampled_out_run_captures_nothing_but_is_recorded(db_url, db_session) -> None:
    async with capture_run(db_url, config=CaptureConfig(sample_rate=0.0), hooks=False) as run:
        assert run.capture_agent_call("a", "b") is None
        assert run.capture_message("a", "b", "c") is None
    row = await _run_row(db_session, run.run_id)
    assert row.meta["sampled_out"] is True and row.total_events == 0 and row.status == "completed"


async def test_type_switches_and_disabled_capture(db_url, db_session) -> None:
    cfg = CaptureConfig(capture_tool_calls=False, capture_messages=False)
    async with capture_run(db_url, config=cfg, hooks=False) as run:
        assert run.capture_tool_call("a", "t", {}) is None
        assert run.capture_message("a", "b", "c") is None
        assert run.capture_handoff("a", "b") is not None
    assert (await _run_row(db_session, run.run_id)).total_events == 1

    async with capture_run(db_url, config=CaptureConfig(enabled=False), hooks=False) as off:
        assert off.capture_handoff("a", "b") is None and not off.enabled
    assert await _run_row(db_session, off.run_id) is None  # disabled: the database is not touched


async def test_repositories_read_back_runs_and_events(db_url, db_session, config, session_id) -> None:
    async with capture_run(db_url, config=config, hooks=False, session_id=session_id, meta={"k": "v"}) as run:
        run.capture_handoff("a", "b")
        run.capture_error("a", "boom")
    repo = WorkflowRepository(db_session, session_id)
    runs = await repo.list_runs()
    assert [r.id for r in runs] == [run.run_id] and runs[0].meta["k"] == "v"
    assert await WorkflowRepository(db_session, "other-session").get_run(run.run_id) is None
    made = await repo.create_run(task_description="manual", mode="one_shot")
    assert (await repo.get_run(made.id)).status == "running"
    events = await EventRepository(db_session, session_id).list_events(run.run_id)
    assert [e.event_type for e in events] == ["handoff", "error"]
