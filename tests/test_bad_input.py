"""Bad input through the whole path (capture -> writer -> real database): stored safely or
rejected with a clear error, never a crash of the run, never silent loss."""

from __future__ import annotations

import base64

import pytest
from sqlalchemy import select

from cmbagent_events import (
    CaptureConfig,
    ConfigError,
    DatabaseURLError,
    ExecutionEvent,
    Message,
    WorkflowRun,
    capture_run,
)


class Unserialisable:
    def __repr__(self) -> str:
        return "<Unserialisable thing>"


async def test_hostile_values_are_stored_safely(db_url, db_session, config) -> None:
    loop: dict = {"name": "loop"}
    loop["self"] = loop
    deep: list = []
    cursor = deep
    for _ in range(500):
        cursor.append([])
        cursor = cursor[0]
    huge = "x" * 1_000_000
    async with capture_run(db_url, config=config, hooks=False) as run:
        ids = {
            "nul": run.capture_message("a\x00b", "c", "text with NUL \x00 inside", metadata={"k\x00": "v\x00"}),
            "surrogate": run.capture_tool_call("a", "t\udcff", {"arg": "bad \udcff utf8"}, result=b"\xff\xfe raw"),
            "objects": run.capture_tool_call("a", "t", {"obj": Unserialisable(), "set": {1, 2}, "loop": loop},
                                             result=Unserialisable()),
            "deep": run.capture_code_execution("a", "x", result=deep, exit_code=0),
            "huge": run.capture_agent_call("a", huge),
            "unknown": run.capture_event("my_custom_type", "whatever", "a", inputs={"n": 1 << 100}),
            "error": run.capture_error("a", "boom \x00", error_type="Weird\x00Type"),
        }
        assert all(ids.values())
    row = await db_session.get(WorkflowRun, run.run_id)
    assert (row.status, row.total_events, row.dropped_events) == ("completed", 7, 0)

    async def event(key: str) -> ExecutionEvent:
        return await db_session.get(ExecutionEvent, ids[key])

    nul = await event("nul")
    assert "\x00" not in nul.inputs["content"] and "NUL" in nul.inputs["content"]
    message = (await db_session.scalars(select(Message).where(Message.event_id == ids["nul"]))).one()
    assert "\x00" not in message.content and "\x00" not in message.sender
    surrogate = await event("surrogate")
    assert "\\udcff" in surrogate.inputs["arguments"]["arg"]
    assert base64.b64decode(surrogate.outputs["result"]) == b"\xff\xfe raw"  # bytes: base64
    objects = await event("objects")
    assert objects.inputs["arguments"]["obj"] == "<Unserialisable thing>"
    assert objects.inputs["arguments"]["loop"]["self"] == "<recursion>"
    assert sorted(objects.inputs["arguments"]["set"]) == [1, 2]
    assert objects.outputs == {"result": "<Unserialisable thing>"}
    assert "max depth" in str((await event("deep")).outputs)
    huge_event = await event("huge")
    assert len(huge_event.inputs["message"]) < 10_100 and "1000000 chars" in huge_event.inputs["message"]
    unknown = await event("unknown")
    assert (unknown.event_type, unknown.inputs) == ("my_custom_type", {"n": 1 << 100})
    error = await event("error")
    assert "\x00" not in error.error_message and "\x00" not in error.event_subtype


async def test_secrets_are_redacted_in_every_stored_field(db_url, db_session, config) -> None:
    secret = "sk-live-DO-NOT-STORE"
    async with capture_run(db_url, config=config, hooks=False, meta={"llm_config": {"api_key": secret}}) as run:
        call = run.capture_agent_call("engineer", {"headers": {"Authorization": f"Bearer {secret}"}},
                                      context={"password": secret},
                                      metadata={"llm_config": {"config_list": [{"model": "gpt-4o",
                                                                                "api_key": secret}]}})
        run.capture_tool_call("engineer", "login", {"token": secret, "user": "me"}, result={"access_token": secret})
        run.capture_agent_response("engineer", {"client_secret": secret}, event_id=call, metadata={"apikey": secret})
    rows = (await db_session.scalars(select(ExecutionEvent).where(ExecutionEvent.run_id == run.run_id))).all()
    run_row = await db_session.get(WorkflowRun, run.run_id)
    stored = repr([(e.inputs, e.outputs, e.meta) for e in rows]) + repr(run_row.meta)
    assert secret not in stored
    assert stored.count("***") >= 8
    tool = next(e for e in rows if e.event_type == "tool_call")
    assert tool.inputs["arguments"] == {"token": "***", "user": "me"}


def test_bad_config_values_are_rejected_with_the_variable_named() -> None:
    with pytest.raises(ConfigError, match="CMBAGENT_EVENT_QUEUE_SIZE"):
        CaptureConfig.from_env({"CMBAGENT_EVENT_QUEUE_SIZE": "-1"})
    with pytest.raises(ConfigError, match="CMBAGENT_EVENT_BUFFER_SIZE"):
        CaptureConfig(buffer_size=0)


@pytest.mark.parametrize("url", ["mysql://u@h/db", "sqlite+aiosqlite:///:memory:", "::::", ""])
async def test_bad_database_urls_fail_at_entry(url: str, config) -> None:
    with pytest.raises((DatabaseURLError, ConfigError)):
        async with capture_run(url or "not-a-url", config=config, hooks=False):
            pytest.fail("the body must not run")


async def test_user_repr_never_runs_on_the_callers_event_loop(sqlite_url, db_session_sqlite, config) -> None:
    """Encoding an object only its own __repr__ can describe runs that __repr__ on a worker thread:
    a slow one never stalls the run's event loop (the writer shares it in an async run)."""
    import threading

    called_on: list[int] = []

    class Slow:
        def __repr__(self) -> str:
            called_on.append(threading.get_ident())
            return "<Slow thing>"

    async with capture_run(sqlite_url, config=config, hooks=False) as run:
        loop_thread = threading.get_ident()
        eid = run.capture_tool_call("a", "t", {"obj": Slow()}, result=Slow())
        plain = run.capture_tool_call("a", "t", {"x": 1})
        assert await run.flush(30)
    assert called_on and loop_thread not in called_on
    event = await db_session_sqlite.get(ExecutionEvent, eid)
    assert event.inputs["arguments"]["obj"] == "<Slow thing>" and event.outputs == {"result": "<Slow thing>"}
    assert (await db_session_sqlite.get(ExecutionEvent, plain)).inputs["arguments"] == {"x": 1}
