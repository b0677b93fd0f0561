"""Every value fits its column, marker included, and every field is coerced to its type: one bad field
never costs the run row, its batch or the innocent rows beside it (SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import select

from cmbagent_events import CaptureConfig, ExecutionEvent, Message, WorkflowRun, capture_run

SMALL = CaptureConfig(buffer_size=50, flush_interval_ms=20)


async def test_long_names_fit_their_columns(db_url, db_session) -> None:
    async with capture_run(db_url, config=SMALL, hooks=False, agent="A" * 257, mode="m" * 65,
                           session_id="s" * 129, model="x" * 300) as run:
        run.set_context(node_id="n" * 300, step_id="t" * 300)
        for i in range(400):
            run.capture_agent_call("agent-" + "x" * 251, f"hello {i}")  # 257 characters
        run.capture_message("s" * 300, "r" * 300, "hi")
        run.capture_file_generation("a", "/tmp/f", "t" * 100)
        run.capture_event("e" * 100, "s" * 100, "a", status="x" * 40)
    row = await db_session.get(WorkflowRun, run.run_id)
    assert row is not None, "the run row was lost"
    assert (row.total_events, row.dropped_events, row.status) == (403, 0, "completed")
    assert len(row.agent) <= 256 and row.agent.startswith("A" * 200) and "257" in row.agent
    assert len(row.mode) <= 64 and len(row.session_id) <= 128 and len(row.model) <= 256
    events = (await db_session.scalars(select(ExecutionEvent).where(ExecutionEvent.run_id == run.run_id))).all()
    assert len(events) == 403
    assert all(len(e.agent_name) <= 256 and len(e.node_id) <= 256 and len(e.step_id) <= 256 for e in events)
    custom = next(e for e in events if e.event_type.startswith("eee"))
    assert len(custom.event_type) <= 64 and len(custom.event_subtype) <= 64 and len(custom.status) <= 32
    message = (await db_session.scalars(select(Message).where(Message.run_id == run.run_id))).one()
    assert len(message.sender) <= 256 and len(message.recipient) <= 256


async def test_fields_of_the_wrong_type_are_coerced(db_url, db_session) -> None:
    async with capture_run(db_url, config=SMALL, hooks=False, session_id=12345, mode=7, agent=["x"]) as run:
        run.set_context(node_id=1, step_id=2.5)
        ids = [
            run.capture_code_execution("a", "x", exit_code=0, duration_ms=10 ** 30),
            run.capture_code_execution("a", "x", exit_code="0", duration_ms="slow"),
            run.capture_event(None, None, None),
            run.capture_message("a", "b", "c", tokens="12"),
            run.capture_message("a", "b", "c", tokens=10 ** 30),
            run.capture_file_generation("a", "/f", "csv", size_bytes="big"),
            run.capture_llm_call("a", "m", "10", "5", cost="0.5"),
            run.capture_tool_call("a", "t", {}, metadata="not a dict"),
            run.capture_file_generation("a", "/f", "csv", metadata=["not", "a", "dict"]),
            run.capture_code_execution("a", "x", metadata=3),
        ]
        for i in range(100):  # innocent neighbours in the same batches
            run.capture_message("a", "b", f"fine {i}")
    assert all(ids), "a capture call refused its arguments"
    row = await db_session.get(WorkflowRun, run.run_id)
    assert row is not None and row.session_id == "12345" and row.mode == "7"
    assert (row.total_events, row.dropped_events) == (110, 0)
    events = {e.id: e for e in (await db_session.scalars(
        select(ExecutionEvent).where(ExecutionEvent.run_id == run.run_id))).all()}
    assert len(events) == 110
    assert events[ids[0]].node_id == "1" and events[ids[0]].step_id == "2.5"
    assert events[ids[1]].duration_ms is None and events[ids[2]].event_type
    assert row.meta["usage"]["prompt_tokens"] == 10 and row.meta["usage"]["cost"] == 0.5


def test_the_writer_widths_match_the_models() -> None:
    from sqlalchemy import BigInteger, Integer, String

    from cmbagent_events.store import columns
    from cmbagent_events.store.models import ExecutionEvent, File, Message, WorkflowRun

    for model, widths in ((ExecutionEvent, columns.EVENT_WIDTHS), (WorkflowRun, columns.RUN_WIDTHS),
                          (Message, columns.MESSAGE_WIDTHS), (File, columns.FILE_WIDTHS)):
        declared = {c.name: c.type.length for c in model.__table__.columns
                    if isinstance(c.type, String) and c.type.length}
        assert widths == declared, model.__name__
    big = {c.name for m in (ExecutionEvent, WorkflowRun, Message, File) for c in m.__table__.columns
           if isinstance(c.type, BigInteger)}
    assert big == set(columns.FILE_INTS)
    assert all(isinstance(c.type, Integer) for c in File.__table__.columns if c.name == "size_bytes")
