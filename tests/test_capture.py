"""The seed's 13 Stage-2 tests (tests/test_stage_02_event_capture.py), ported to the async API.

Same intent as the seed, but every capture is also checked where it matters: in the database,
after ``flush()``. Each test runs on SQLite and on PostgreSQL (the ``db_url`` fixture).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from cmbagent_events import (
    CaptureConfig,
    EventCaptureManager,
    EventRepository,
    File,
    Message,
    WorkflowRepository,
    capture_run,
    get_event_captor,
)


@pytest.fixture
async def run(db_url: str, config: CaptureConfig, session_id: str) -> AsyncIterator[EventCaptureManager]:
    async with capture_run(db_url, task_description="Test workflow", mode="one_shot", agent="engineer",
                           model="gpt-4", session_id=session_id, config=config, hooks=False) as run:
        yield run


@pytest.fixture
def repo(db_session, session_id: str) -> EventRepository:
    return EventRepository(db_session, session_id)


async def test_event_capture_manager_init(run: EventCaptureManager, db_session, session_id: str) -> None:
    assert run.enabled
    assert run.execution_order == 0
    assert get_event_captor() is run
    assert await run.flush(10)  # the run row is written with the run's first batch
    row = await WorkflowRepository(db_session, session_id).get_run(run.run_id)
    assert row is not None and row.status == "running" and row.task_description == "Test workflow"
    assert (row.mode, row.agent, row.model) == ("one_shot", "engineer", "gpt-4")


async def test_capture_agent_call(run: EventCaptureManager, repo: EventRepository) -> None:
    event_id = run.capture_agent_call(agent_name="engineer", message="Test task", metadata={"model": "gpt-4"})
    assert event_id is not None
    assert run.execution_order == 1
    assert await run.flush(10)
    event = await repo.get_event(event_id)
    assert (event.event_type, event.event_subtype, event.status) == ("agent_call", "start", "running")
    assert event.inputs == {"message": "Test task", "context": {}}
    assert event.meta == {"model": "gpt-4"}
    assert event.seq == 0 and event.execution_order == 0 and event.run_id == run.run_id


async def test_capture_agent_response(run: EventCaptureManager, repo: EventRepository) -> None:
    event_id = run.capture_agent_call(agent_name="engineer", message="Test task", metadata={"a": 1})
    assert await run.flush(10)  # start row committed first: the completion is an UPDATE
    run.capture_agent_response(agent_name="engineer", response="Task completed", event_id=event_id,
                               metadata={"b": 2})
    assert await run.flush(10)
    event = await repo.get_event(event_id)
    assert event is not None
    assert event.event_subtype == "complete" and event.status == "completed"
    assert event.outputs == {"response": "Task completed"}
    assert event.completed_at is not None and event.duration_ms is not None and event.duration_ms >= 0
    assert event.meta == {"a": 1, "b": 2}  # completion metadata merged, start metadata kept


async def test_capture_agent_response_same_batch(run: EventCaptureManager, repo: EventRepository) -> None:
    event_id = run.capture_agent_call(agent_name="engineer", message="Test task", metadata={"a": 1})
    run.capture_agent_response(agent_name="engineer", response="done", event_id=event_id,
                               metadata={"b": 2})
    assert await run.flush(10)
    event = await repo.get_event(event_id)
    assert (event.event_subtype, event.status, event.outputs) == ("complete", "completed", {"response": "done"})
    assert event.meta == {"a": 1, "b": 2}
    assert len(await repo.list_events(run.run_id)) == 1  # one row per agent call


async def test_capture_tool_call(run: EventCaptureManager, repo: EventRepository) -> None:
    event_id = run.capture_tool_call(agent_name="engineer", tool_name="execute_code",
                                     arguments={"code": "print('hello')"}, result="hello")
    assert event_id is not None
    assert await run.flush(10)
    event = await repo.get_event(event_id)
    assert (event.event_type, event.event_subtype) == ("tool_call", "execute")
    assert event.inputs == {"tool_name": "execute_code", "arguments": {"code": "print('hello')"}}
    assert event.outputs == {"result": "hello"}


async def test_capture_code_execution(run: EventCaptureManager, repo: EventRepository) -> None:
    event_id = run.capture_code_execution(agent_name="executor", code="print('test')", language="python",
                                          result="test\n", exit_code=0, duration_ms=100)
    failed_id = run.capture_code_execution(agent_name="executor", code="1/0", exit_code=1)
    assert event_id is not None
    assert await run.flush(10)
    event = await repo.get_event(event_id)
    assert (event.event_type, event.event_subtype, event.duration_ms) == ("code_exec", "complete", 100)
    assert event.meta == {"language": "python", "exit_code": 0, "code_length": 13}
    assert event.outputs == {"result": "test\n"}
    failed = await repo.get_event(failed_id)
    assert (failed.event_subtype, failed.status) == ("error", "failed")


async def test_capture_file_generation(run: EventCaptureManager, repo: EventRepository, db_session) -> None:
    event_id = run.capture_file_generation(agent_name="engineer", file_path="/test/output.png",
                                           file_type="plot", size_bytes=1024)
    assert event_id is not None
    assert await run.flush(10)
    file = (await db_session.scalars(select(File).where(File.event_id == event_id))).first()
    assert file is not None
    assert file.file_path == "/test/output.png" and file.file_type == "plot" and file.size_bytes == 1024
    assert file.run_id == run.run_id
    assert (await repo.get_event(event_id)).event_type == "file_gen"


async def test_capture_handoff(run: EventCaptureManager, repo: EventRepository) -> None:
    event_id = run.capture_handoff(from_agent="planner", to_agent="engineer", reason="task_delegation")
    assert event_id is not None
    assert await run.flush(10)
    event = await repo.get_event(event_id)
    assert (event.event_type, event.event_subtype, event.agent_name) == ("handoff", "transfer", "planner")
    assert event.inputs["to_agent"] == "engineer" and event.meta == {"reason": "task_delegation"}


async def test_capture_message(run: EventCaptureManager, db_session) -> None:
    event_id = run.capture_message(sender="planner", recipient="engineer",
                                   content="Please implement this feature", tokens=10)
    assert event_id is not None
    assert await run.flush(10)
    message = (await db_session.scalars(select(Message).where(Message.event_id == event_id))).first()
    assert message is not None
    assert message.sender == "planner" and message.recipient == "engineer"
    assert message.content == "Please implement this feature" and message.tokens == 10


async def test_capture_error(run: EventCaptureManager, repo: EventRepository) -> None:
    event_id = run.capture_error(agent_name="engineer", error_message="Division by zero",
                                 error_type="runtime_error")
    assert event_id is not None
    assert await run.flush(10)
    event = await repo.get_event(event_id)
    assert (event.event_type, event.event_subtype, event.status) == ("error", "runtime_error", "failed")
    assert event.error_message == "Division by zero"


async def test_nested_events(run: EventCaptureManager, repo: EventRepository) -> None:
    parent_id = run.capture_agent_call(agent_name="engineer", message="Complex task")
    tool_id = run.capture_tool_call(agent_name="engineer", tool_name="analyze", arguments={})
    inner_id = run.capture_agent_call(agent_name="critic", message="check")
    code_id = run.capture_code_execution(agent_name="critic", code="result = analyze()")
    run.capture_agent_response("critic", "ok", event_id=inner_id)
    after_id = run.capture_code_execution(agent_name="engineer", code="x = 1", exit_code=0)
    run.capture_agent_response("engineer", "done", event_id=parent_id)
    top_id = run.capture_handoff("engineer", "critic")
    assert await run.flush(10)

    tool_event = await repo.get_event(tool_id)
    assert tool_event.parent_event_id == parent_id and tool_event.depth == 1
    inner = await repo.get_event(inner_id)
    assert inner.parent_event_id == parent_id and inner.depth == 1
    code_event = await repo.get_event(code_id)
    assert code_event.parent_event_id == inner_id and code_event.depth == 2
    after = await repo.get_event(after_id)
    assert after.parent_event_id == parent_id and after.depth == 1
    top = await repo.get_event(top_id)
    assert top.parent_event_id is None and top.depth == 0
    assert [e.id for e in await repo.get_children(parent_id)] == [tool_id, inner_id, after_id]  # in seq order
    assert [e.id for e in await repo.get_children(inner_id)] == [code_id]
    assert await repo.get_children(top_id) == [] and await repo.get_children("no-such-event") == []


async def test_context_updates(run: EventCaptureManager, repo: EventRepository) -> None:
    run.capture_agent_call(agent_name="setup", message="before any node")
    run.set_context(node_id="node_1", step_id="step_1")
    assert run.execution_order == 0  # a new node restarts execution_order
    event_id = run.capture_agent_call(agent_name="engineer", message="Test")
    second = run.capture_message("engineer", "critic", "hi")
    assert await run.flush(10)
    event = await repo.get_event(event_id)
    assert event.node_id == "node_1" and event.step_id == "step_1"
    assert (event.execution_order, event.seq) == (0, 1)
    assert (await repo.get_event(second)).execution_order == 1
    stats = run.get_performance_stats()
    assert stats["current_node_id"] == "node_1" and stats["current_step_id"] == "step_1"


async def test_performance_tracking(run: EventCaptureManager) -> None:
    for i in range(10):
        run.capture_agent_call(agent_name=f"agent_{i}", message="test")
    stats = run.get_performance_stats()
    assert stats["total_events"] == 10
    assert stats["avg_capture_time_ms"] >= 0
    assert 0 < stats["avg_capture_time_us"] < 10_000
    for key in ("dropped_events", "queue_depth", "queue_high_water", "batches_written", "enabled",
                "current_node_id", "current_step_id", "execution_order"):
        assert key in stats
    assert await run.flush(10)
    stats = run.get_performance_stats()
    assert stats["batches_written"] >= 1 and stats["queue_depth"] == 0 and stats["dropped_events"] == 0


@pytest.mark.parametrize("writer", ["thread", "process"])
@pytest.mark.parametrize("flushes", [0, 3])
async def test_the_stored_batch_count_counts_every_batch(sqlite_url: str, writer: str, flushes: int) -> None:
    """The run row's meta.capture.batches_written is taken as its last batch is built: it counts that
    batch too (a one-batch run said 0), as the writer's own count does once the run is closed."""
    from cmbagent_events import CaptureConfig
    from cmbagent_events.read import open_async_store

    async with capture_run(sqlite_url, config=CaptureConfig(writer=writer), hooks=False) as run:
        for i in range(flushes + 1):
            run.capture_message("a", "b", f"part {i}")
            if i < flushes:
                assert await run.flush(30)
    async with open_async_store(sqlite_url) as store:
        meta = (await store.run(run.run_id))["meta"]
    written = run.get_performance_stats()["batches_written"]
    assert meta["capture"]["batches_written"] == written == flushes + 1
