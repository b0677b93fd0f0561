"""Odd objects anywhere a run takes text (run fields and meta, context ids, agent names, message
sender/recipient/content, file path/type, a completion's response, the run's own exception): their
``__repr__`` / ``__str__`` / ``__len__`` never run on the caller's thread (in an async run the writer
shares the caller's event loop, so a slow one would stall it). They run on a worker thread, and what
they return is stored; a dict subclass whose methods raise is read without them."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from sqlalchemy import select

from cmbagent_events import ExecutionEvent, File, Message, WorkflowRun, capture_run, make_engine

CALLED: list[tuple[str, int]] = []  # (what, thread id) of every call into the objects below


class Odd:
    """An object only its own __repr__ / __str__ can describe."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __repr__(self) -> str:
        CALLED.append((self.tag, threading.get_ident()))
        return f"<odd {self.tag}>"

    __str__ = __repr__


class CountedStr(str):
    def __len__(self) -> int:
        CALLED.append(("len", threading.get_ident()))
        return str.__len__(self)

    def __bool__(self) -> bool:
        CALLED.append(("bool", threading.get_ident()))
        return True


class Unreadable(dict):
    """A dict whose own reading methods raise (only dict's C methods can read it)."""

    def keys(self):  # type: ignore[override]
        CALLED.append(("keys", threading.get_ident()))
        raise RuntimeError("no keys")

    def items(self):  # type: ignore[override]
        CALLED.append(("items", threading.get_ident()))
        raise RuntimeError("no items")

    def __iter__(self):
        CALLED.append(("iter", threading.get_ident()))
        raise RuntimeError("no iter")


class Failure(Exception):
    def __str__(self) -> str:
        CALLED.append(("exception", threading.get_ident()))
        return "the body failed"


async def test_user_code_of_odd_values_never_runs_on_the_callers_thread(db_url, db_session, config) -> None:
    CALLED.clear()
    caller = threading.get_ident()
    with pytest.raises(Failure):
        async with capture_run(db_url, config=config, hooks=False, task_description=Odd("task"), mode=Odd("mode"),
                               agent=Odd("agent"), model=Odd("model"), session_id=Odd("session"),
                               meta=Unreadable(key=Odd("meta value"))) as run:
            run.set_context(node_id=Odd("node"), step_id=CountedStr("step"))
            call = run.capture_agent_call(Odd("agent name"), "hello", metadata=Unreadable(m=1))
            run.capture_message(Odd("sender"), Odd("recipient"), Odd("content"))
            run.capture_file_generation("writer", Odd("path"), Odd("file type"))
            assert await run.flush(30)
            run.capture_agent_response("engineer", Odd("response"), event_id=call)
            raise Failure
    assert {tag for tag, thread in CALLED if thread == caller} == set(), "user code ran on the caller's thread"
    assert {tag for tag, _ in CALLED} >= {"task", "mode", "agent", "session", "meta value", "node", "agent name",
                                          "sender", "recipient", "content", "path", "file type", "response",
                                          "exception"}
    assert not {"keys", "items", "iter"} & {tag for tag, _ in CALLED}

    row = await db_session.get(WorkflowRun, run.run_id)
    assert (row.status, row.dropped_events) == ("failed", 0)
    assert (row.task_description, row.mode, row.agent, row.model, row.session_id) == (
        "<odd task>", "<odd mode>", "<odd agent>", "<odd model>", "<odd session>")
    assert row.meta["key"] == "<odd meta value>"
    events = {e.event_subtype if e.event_type == "agent_call" else e.event_type: e for e in (await db_session.scalars(
        select(ExecutionEvent).where(ExecutionEvent.run_id == run.run_id).order_by(ExecutionEvent.seq))).all()}
    call_row = events["complete"]  # the agent call, completed
    assert (call_row.agent_name, call_row.node_id, call_row.step_id) == ("<odd agent name>", "<odd node>", "step")
    assert call_row.outputs == {"response": "<odd response>"} and call_row.meta == {"m": 1}
    assert events["error"].error_message == "Failure: the body failed"
    message = (await db_session.scalars(select(Message).where(Message.run_id == run.run_id))).one()
    assert (message.sender, message.recipient, message.content) == ("<odd sender>", "<odd recipient>", "<odd content>")
    file = (await db_session.scalars(select(File).where(File.run_id == run.run_id))).one()
    assert (file.file_path, file.file_type) == ("<odd path>", "<odd file type>")




async def test_an_agent_error_is_made_text_off_the_callers_thread(db_url, db_session, config) -> None:
    """What the AG2 hooks record when an agent's call raises (an error event, the call closed as
    failed): the exception's own __str__ runs on the writer's worker thread, never the caller's."""
    CALLED.clear()
    caller = threading.get_ident()
    async with capture_run(db_url, config=config, hooks=False) as run:
        call = run.capture_agent_call("engineer", "go")
        run.capture_exception("engineer", Failure(), "generate_reply")
        run.finish_agent_call(call, error=Failure())
        run.capture_exception("engineer", ValueError("plain text"), "generate_reply")  # no user code: text at once
        assert await run.flush(30)
    assert [thread for tag, thread in CALLED if tag == "exception"], "the exceptions were never made text"
    assert {thread for _, thread in CALLED} & {caller} == set(), "user code ran on the caller's thread"
    rows = (await db_session.scalars(select(ExecutionEvent).where(ExecutionEvent.run_id == run.run_id)
                                     .order_by(ExecutionEvent.seq))).all()
    assert [(r.event_type, r.status, r.error_message) for r in rows] == [
        ("agent_call", "failed", "Failure: the body failed"),
        ("error", "failed", "the body failed"),
        ("error", "failed", "plain text")]


async def test_a_flush_waits_for_rows_built_on_the_worker_thread(db_url, db_session, config) -> None:
    """A batch holding only records whose rows need user code is still written before flush returns."""
    async with capture_run(db_url, config=config, hooks=False) as run:
        assert await run.flush(30)
        alone = run.capture_message(Odd("sender"), "b", "only this one in its batch")
        assert await run.flush(30)
        assert (await db_session.get(ExecutionEvent, alone)) is not None, "flush returned before the row was written"


NEVER_RETURNS = """
import sys, threading
from cmbagent_events import CaptureConfig, capture_run_sync

class Stuck:
    def __repr__(self):  # never returns
        threading.Event().wait()

cfg = CaptureConfig(user_code_timeout_s=1, flush_interval_ms=20)
with capture_run_sync(sys.argv[1], config=cfg, hooks=False, task_description="stuck repr") as run:
    run.capture_tool_call("a", "t", {"value": Stuck()}, result="ok")
    run.capture_message("a", "b", Stuck())
    for i in range(10):
        run.capture_tool_call("a", "t", {"i": i}, result=i)
    print(run.run_id, flush=True)
"""


async def test_a_repr_that_never_returns_neither_holds_the_run_nor_the_exit(sqlite_url, tmp_path) -> None:
    """The writer gives a value's own __repr__ user_code_timeout_s: past it the value is stored as a marker
    naming the timeout, the run closes completed with exact totals, and the process exits 0 (it never
    exited: killed at 200 s and 600 s)."""
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "stuck.py"
    script.write_text(textwrap.dedent(NEVER_RETURNS))
    done = await asyncio.to_thread(subprocess.run, [sys.executable, str(script), sqlite_url], capture_output=True,
                                   text=True, timeout=120, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    from cmbagent_events.testing.stored import stored_run

    row, seqs = await stored_run(sqlite_url, run_id)
    assert row.status == "completed" and row.dropped_events == 0 and seqs == list(range(12))
    engine = make_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            stuck = (await conn.execute(select(ExecutionEvent.inputs).where(
                ExecutionEvent.run_id == run_id, ExecutionEvent.seq == 0))).scalar_one()
            content = (await conn.execute(select(Message.content).where(Message.run_id == run_id))).scalar_one()
    finally:
        await engine.dispose()
    assert "UserCodeTimeout" in json.dumps(stuck) and "UserCodeTimeout" in content
