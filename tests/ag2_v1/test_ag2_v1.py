"""Real AG2 1.x agents (``ag2.Agent``, ``as_tool``, sub-tasks, a ``Hub`` workflow) driven offline by
``ag2.testing.TestConfig``, captured by the middleware and the hub listener, and counted exactly.

Runs in ``make test-ag2-v1`` (.venv-ag2-v1: ag2 1.2.1 next to classic ``autogen`` 0.14.x).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from typing import Any

import pytest
from ag2 import Agent, Context, TaskConfig
from ag2.events import ModelMessage, ModelResponse, ToolCallEvent, Usage
from ag2.testing import TestConfig
from sqlalchemy import select

from cmbagent_events import (
    ExecutionEvent,
    Message,
    WorkflowRun,
    capture_run,
    capture_run_sync,
)
from cmbagent_events.integrations import ag2_v1
from cmbagent_events.read import open_async_store
from cmbagent_events.render import describe

pytestmark = pytest.mark.ag2_v1


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def explode(x: int) -> int:
    """Always fails."""
    raise ValueError(f"bad x={x}")


def call(name: str, arguments: str, call_id: str | None = None) -> ToolCallEvent:
    return ToolCallEvent(name=name, arguments=arguments, **({"id": call_id} if call_id else {}))


def reply(text: str, prompt: int, completion: int) -> ModelResponse:
    """A scripted model reply with token usage, as a provider client returns it."""
    return ModelResponse(ModelMessage(text), usage=Usage(prompt_tokens=prompt, completion_tokens=completion),
                         model="scripted-1", provider="test")


async def events_of(db_session, run_id: str) -> list[ExecutionEvent]:
    query = select(ExecutionEvent).where(ExecutionEvent.run_id == run_id).order_by(ExecutionEvent.seq)
    return list((await db_session.scalars(query)).all())


def kinds(events: list[ExecutionEvent]) -> Counter:
    """Events by type; a message counts as "message" (stored as agent_call/message)."""
    return Counter("message" if e.event_subtype == "message" else e.event_type for e in events)


def by_type(events: list[ExecutionEvent], kind: str) -> list[ExecutionEvent]:
    return [e for e in events if e.event_type == kind and e.event_subtype != "message"]


def assert_gapless(events: list[ExecutionEvent], row: WorkflowRun) -> None:
    assert [e.seq for e in events] == list(range(len(events)))
    assert row.total_events == len(events) and row.dropped_events == 0 and row.status == "completed"


async def test_tool_call_is_captured_exactly(db_url, db_session, config) -> None:
    agent = Agent("calc", config=TestConfig(call("add", '{"a": 2, "b": 3}'), reply("It is 5.", 12, 4)), tools=[add])
    async with capture_run(db_url, config=config) as run:
        answer = await agent.ask("What is 2+3?")
    assert answer.body == "It is 5."
    events = await events_of(db_session, run.run_id)
    assert kinds(events) == {"agent_call": 1, "llm_call": 2, "tool_call": 1}

    (turn,) = by_type(events, "agent_call")
    assert turn.agent_name == "calc" and turn.depth == 0 and turn.parent_event_id is None
    assert turn.event_subtype == "complete" and turn.status == "completed" and turn.duration_ms >= 0
    assert turn.inputs["message"] == "What is 2+3?" and turn.outputs == {"response": "It is 5."}
    assert turn.meta["framework"] == "ag2" and turn.meta["agent_class"] == "Agent"

    (tool,) = by_type(events, "tool_call")
    assert tool.inputs == {"tool_name": "add", "arguments": {"a": 2, "b": 3}}
    assert tool.outputs == {"result": 5} and tool.status == "completed" and tool.meta["success"] is True
    assert tool.duration_ms >= 0 and tool.parent_event_id == turn.id and tool.depth == 1

    first, second = by_type(events, "llm_call")
    assert first.meta["tool_calls"] == ["add"] and first.seq < tool.seq < second.seq
    assert second.outputs["usage"] == {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16, "cost": None}
    assert second.inputs == {"model": "scripted-1"} and second.meta["provider"] == "test"
    assert all(e.parent_event_id == turn.id and e.depth == 1 for e in (first, second))
    row = await db_session.get(WorkflowRun, run.run_id)
    assert row.meta["usage"]["calls"] == 2 and row.meta["usage"]["total_tokens"] == 16
    assert_gapless(events, row)
    async with open_async_store(db_url) as store:
        asked, answered = await store.llm_call(first.id), await store.llm_call(second.id)
    assert [m["role"] for m in asked["request"]["messages"]] == ["user"]
    assert asked["request"]["messages"][0]["content"] == "What is 2+3?"
    (wanted,) = asked["response"]["choices"][0]["message"]["tool_calls"]
    assert wanted["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}
    sent = answered["request"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"] and sent[1]["tool_calls"] == [wanted]
    assert sent[2]["tool_call_id"] == wanted["id"] and "5" in sent[2]["content"]
    assert answered["response"]["choices"][0]["message"]["content"] == "It is 5." and answered["replayable"]
    assert answered["cost_source"] == "unknown" and answered["usage"]["total_tokens"] == 16


async def test_multi_turn_conversation_on_one_stream(db_url, db_session, config) -> None:
    agent = Agent("chat", config=TestConfig(reply("hello", 3, 1), reply("fine", 7, 1), reply("bye", 11, 1)))
    async with capture_run(db_url, config=config) as run:
        first = await agent.ask("hi")
        second = await first.ask("how are you?")  # continues on the same stream
        async with second.run("goodbye") as turn:  # AgentRun: observable, driven by result()
            third = await turn.result()
    assert (first.body, second.body, third.body) == ("hello", "fine", "bye")
    events = await events_of(db_session, run.run_id)
    assert kinds(events) == {"agent_call": 3, "llm_call": 3}
    turns = by_type(events, "agent_call")
    assert [(t.inputs["message"], t.outputs["response"]) for t in turns] == [
        ("hi", "hello"), ("how are you?", "fine"), ("goodbye", "bye")]
    assert all(t.depth == 0 and t.status == "completed" for t in turns)
    assert len({t.meta["stream_id"] for t in turns}) == 1  # one conversation
    assert "agent_class" in turns[0].meta and "agent_class" not in turns[1].meta  # configuration once per run
    llm = by_type(events, "llm_call")
    assert [e.parent_event_id for e in llm] == [t.id for t in turns]
    assert [e.outputs["usage"]["prompt_tokens"] for e in llm] == [3, 7, 11]
    assert_gapless(events, await db_session.get(WorkflowRun, run.run_id))


async def test_agent_used_as_tool_and_sub_task_nest_under_their_caller(db_url, db_session, config) -> None:
    helper = Agent("helper", config=TestConfig("helper says 42"))
    boss = Agent(
        "boss",
        config=TestConfig(call("task_helper", '{"objective": "find the answer"}'),
                          call("run_subtask", '{"task": "double check"}'), "The answer is 42."),
        tools=[helper.as_tool(description="Ask the helper.")],
        tasks=TaskConfig(config=TestConfig("checked")),
    )
    async with capture_run(db_url, config=config) as run:
        answer = await boss.ask("What is the answer?")
    assert answer.body == "The answer is 42."
    events = await events_of(db_session, run.run_id)
    assert kinds(events) == {"agent_call": 3, "llm_call": 5, "tool_call": 2}

    turns = by_type(events, "agent_call")
    outer = next(t for t in turns if t.agent_name == "boss")
    inner = {t.agent_name.split("-")[0]: t for t in turns if t is not outer}
    assert set(inner) == {"helper", "subtask"}
    for name, tool_name in (("helper", "task_helper"), ("subtask", "run_subtask")):
        nested = inner[name]
        tool = next(e for e in by_type(events, "tool_call") if e.inputs["tool_name"] == tool_name)
        assert nested.parent_event_id == outer.id and nested.depth == 1
        assert nested.meta["via_tool"] == tool_name and nested.meta["tool_call_id"] == tool.meta["call_id"]
        assert tool.parent_event_id == outer.id and tool.seq > nested.seq  # written when the tool returned
        assert tool.outputs["result"] == nested.outputs["response"]
        (own_llm,) = [e for e in events if e.event_type == "llm_call" and e.parent_event_id == nested.id]
        assert own_llm.depth == 2 and own_llm.agent_name == nested.agent_name
    assert inner["helper"].inputs["message"] == "find the answer"
    assert sum(1 for e in events if e.event_type == "llm_call" and e.parent_event_id == outer.id) == 3
    assert_gapless(events, await db_session.get(WorkflowRun, run.run_id))


async def hub_review(bob_config: Any, carol_config: Any) -> tuple[Any, str]:
    """Alice opens a workflow channel: bob reviews and hands off to carol (a tool returning a Handoff),
    carol approves and the graph terminates. Returns the channel-closed event and the channel's id."""
    from ag2 import network as net
    from ag2.knowledge import MemoryKnowledgeStore

    def route_to_carol(reason: str) -> net.Handoff:
        """Hand the review to carol."""
        return net.Handoff(target="carol", reason=reason)

    hub = await net.Hub.open(MemoryKnowledgeStore(), ttl_sweep_interval=0, expectation_sweep_interval=0)
    try:
        alice = await hub.register(Agent("alice", config=TestConfig()))
        bob = await hub.register(Agent("bob", config=bob_config, tools=[route_to_carol]))
        carol = await hub.register(Agent("carol", config=carol_config))
        graph = net.TransitionGraph(
            initial_speaker=alice.agent_id,
            transitions=[
                net.Transition(when=net.FromSpeaker(alice.agent_id), then=net.AgentTarget(bob.agent_id)),
                net.Transition(when=net.FromSpeaker(carol.agent_id), then=net.TerminateTarget(reason="approved"))],
            default_target=net.TerminateTarget(reason="fall_through"), max_turns=5)
        channel = await alice.open(type=net.WORKFLOW_TYPE, target=[bob.agent_id, carol.agent_id],
                                   knobs={"graph": graph.to_dict()})
        await channel.send("Please review the patch.")
        closed = await alice.wait_for_channel_event(channel_id=channel.channel_id, timeout=10.0,
                                                    predicate=lambda e: e.event_type == net.EV_CHANNEL_CLOSED)
        return closed, channel.channel_id
    finally:
        await hub.close()


def bob_config() -> Any:
    return TestConfig(call("route_to_carol", '{"reason": "needs a second review"}'), "Over to carol.")


async def test_hub_workflow_with_three_agents_hands_off_with_reasons(db_url, db_session, config) -> None:
    async with capture_run(db_url, config=config) as run:
        closed, channel_id = await hub_review(bob_config(), TestConfig("Reviewed: approved."))
    assert closed.event_data["reason"] == "approved"
    events = await events_of(db_session, run.run_id)
    assert kinds(events) == {"message": 3, "handoff": 2, "agent_call": 2, "llm_call": 3, "tool_call": 1}

    handoffs = by_type(events, "handoff")
    assert [(h.inputs["from_agent"], h.inputs["to_agent"], h.meta["reason"]) for h in handoffs] == [
        ("alice", "bob", "transition"), ("bob", "carol", "needs a second review")]
    assert handoffs[1].inputs["context"]["tool"] == "route_to_carol"
    assert handoffs[1].inputs["context"]["routing"] == "handoff"
    turns = by_type(events, "agent_call")
    assert [t.agent_name for t in turns] == ["bob", "carol"]
    assert [t.outputs["response"] for t in turns] == ["Over to carol.", "Reviewed: approved."]
    # Each hand-off is recorded before the turn it starts, after the turn it ends.
    assert handoffs[0].seq < turns[0].seq < handoffs[1].seq < turns[1].seq
    rows = (await db_session.scalars(select(Message).where(Message.run_id == run.run_id)
                                     .order_by(Message.timestamp))).all()
    assert [(m.sender, m.recipient, m.content) for m in rows] == [
        ("alice", "bob", "Please review the patch."), ("bob", "carol", "Over to carol."),
        ("carol", f"channel:{channel_id}", "Reviewed: approved.")]
    assert_gapless(events, await db_session.get(WorkflowRun, run.run_id))


async def test_a_failed_hub_turn_is_one_error(sqlite_url, db_session_sqlite, config) -> None:
    """The turn's middleware records the model's error; the hub's turn-failure report of the same
    exception is not recorded again."""
    from ag2 import network as net
    from ag2.knowledge import MemoryKnowledgeStore

    failed = asyncio.Event()

    class Watch(net.BaseHubListener):
        async def on_turn_failed(self, channel_id, agent_id, envelope_id, exc) -> None:
            failed.set()

    async with capture_run(sqlite_url, config=config) as run:
        hub = await net.Hub.open(MemoryKnowledgeStore(), ttl_sweep_interval=0, expectation_sweep_interval=0)
        hub.register_listener(Watch())
        alice = await hub.register(Agent("alice", config=TestConfig()))
        bob = await hub.register(Agent("bob", config=TestConfig(RuntimeError("bob is down"))))
        graph = net.TransitionGraph.round_robin([alice.agent_id, bob.agent_id], max_turns=4)
        channel = await alice.open(type=net.WORKFLOW_TYPE, target=[bob.agent_id], knobs={"graph": graph.to_dict()})
        await channel.send("Your turn, bob.")
        await asyncio.wait_for(failed.wait(), 10.0)
        await hub.close()
    events = await events_of(db_session_sqlite, run.run_id)
    assert kinds(events) == {"message": 1, "handoff": 1, "agent_call": 1, "error": 1}
    (turn,) = by_type(events, "agent_call")
    (error,) = by_type(events, "error")
    assert turn.agent_name == "bob" and turn.status == "failed" and error.parent_event_id == turn.id
    assert error.error_message == "bob is down" and error.meta["where"] == "llm_call"


async def test_errors_of_tools_and_models_are_captured(db_url, db_session, config) -> None:
    flaky = Agent("flaky", config=TestConfig(call("explode", '{"x": 7}'), "Recovered.", raise_tool_errors=False),
                  tools=[explode])
    broken = Agent("broken", config=TestConfig(RuntimeError("model unavailable")))
    async with capture_run(db_url, config=config) as run:
        assert (await flaky.ask("try it")).body == "Recovered."
        with pytest.raises(RuntimeError, match="model unavailable"):
            await broken.ask("try")
    events = await events_of(db_session, run.run_id)
    assert kinds(events) == {"agent_call": 2, "llm_call": 2, "tool_call": 1, "error": 1}

    (tool,) = by_type(events, "tool_call")
    assert tool.status == "failed" and tool.meta["success"] is False and tool.meta["error_type"] == "ValueError"
    assert tool.outputs == {"result": "ValueError: bad x=7"} and tool.inputs["arguments"] == {"x": 7}
    ok, failed = by_type(events, "agent_call")
    assert ok.status == "completed" and tool.parent_event_id == ok.id
    assert failed.agent_name == "broken" and failed.event_subtype == "error" and failed.status == "failed"
    assert failed.error_message == "RuntimeError: model unavailable"
    (error,) = by_type(events, "error")  # recorded once, where it happened (the model call)
    assert error.event_subtype == "RuntimeError" and error.error_message == "model unavailable"
    assert error.meta["where"] == "llm_call" and error.parent_event_id == failed.id
    row = await db_session.get(WorkflowRun, run.run_id)
    assert_gapless(events, row)


async def test_code_run_by_the_code_tool_and_its_files_are_captured(db_url, db_session, config, tmp_path) -> None:
    from ag2.tools import LocalEnvironment, SandboxCodeTool

    code = "from pathlib import Path\nPath('spectrum.csv').write_text('2,1.0\\n3,0.5\\n')\nprint('wrote 2 rows')"
    failing = "raise SystemExit(3)"
    coder = Agent("coder", config=TestConfig(
        call("run_code", json.dumps({"code": code, "language": "python"})),
        call("run_code", json.dumps({"code": failing, "language": "python"})), "Spectrum written."),
        tools=[SandboxCodeTool(LocalEnvironment(tmp_path / "work"), languages=("python",))])
    async with capture_run(db_url, config=config) as run:
        assert (await coder.ask("Write the spectrum.")).body == "Spectrum written."
    events = await events_of(db_session, run.run_id)
    assert kinds(events) == {"agent_call": 1, "llm_call": 3, "tool_call": 2, "code_exec": 2, "file_gen": 1}
    (turn,) = by_type(events, "agent_call")
    ok, bad = by_type(events, "code_exec")
    assert ok.event_subtype == "complete" and ok.meta["exit_code"] == 0 and ok.meta["language"] == "python"
    assert ok.inputs == {"code": code} and ok.outputs == {"result": "wrote 2 rows"} and ok.duration_ms > 0
    assert bad.event_subtype == "error" and bad.meta["exit_code"] == 3 and bad.status == "failed"
    assert all(e.parent_event_id == turn.id and e.agent_name == "coder" for e in (ok, bad))
    (made,) = by_type(events, "file_gen")
    assert made.inputs["file_path"] == str((tmp_path / "work" / "spectrum.csv").resolve())
    assert made.inputs["file_type"] == "data" and made.meta["created"] is True
    assert made.meta["size_bytes"] == (tmp_path / "work" / "spectrum.csv").stat().st_size == 12
    assert made.meta["code_exec_id"] == ok.id and ok.seq < made.seq
    first_tool = by_type(events, "tool_call")[0]
    assert first_tool.inputs["tool_name"] == "run_code" and made.seq < first_tool.seq


async def test_human_input_is_captured_under_its_turn(db_url, db_session, config) -> None:
    async def ask_name(ctx: Context) -> str:
        """Ask the user for their name."""
        return await ctx.input("What is your name?")

    agent = Agent("greeter", config=TestConfig(call("ask_name", "{}"), "Hello, Ada."), tools=[ask_name],
                  hitl_hook=lambda request: "Ada")
    async with capture_run(db_url, config=config) as run:
        assert (await agent.ask("greet me")).body == "Hello, Ada."
    events = await events_of(db_session, run.run_id)
    assert kinds(events) == {"agent_call": 1, "llm_call": 2, "tool_call": 1, "human_input": 1}
    (human,) = by_type(events, "human_input")
    (turn,) = by_type(events, "agent_call")
    assert human.inputs == {"prompt": "What is your name?"} and human.outputs == {"response": "Ada"}
    assert human.parent_event_id == turn.id and human.duration_ms >= 0
    assert describe(human).startswith("human_input greeter") and describe(human).endswith("=> Ada")
    assert by_type(events, "tool_call")[0].outputs == {"result": "Ada"}


async def test_two_concurrent_runs_never_mix(tmp_path, config) -> None:
    """One agent object, two runs at once on one loop: each run holds exactly its own turn."""
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from cmbagent_events import make_engine

    shared = Agent("calc", tools=[add])
    both_open = asyncio.Barrier(2)

    async def one(name: str, a: int) -> str:
        script = TestConfig(call("add", f'{{"a": {a}, "b": {a}}}'), f"sum {2 * a}")
        async with capture_run(f"sqlite+aiosqlite:///{tmp_path / name}.db", config=config) as run:
            await both_open.wait()  # both runs open before either agent turn starts
            await shared.ask(f"{a}+{a}?", config=script)
            await both_open.wait()  # and both still open until both turns are done
        return run.run_id

    ids = await asyncio.gather(one("a", 1), one("b", 2))
    for name, a, run_id in (("a", 1, ids[0]), ("b", 2, ids[1])):
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / name}.db")
        async with async_sessionmaker(engine)() as session:
            events = await events_of(session, run_id)
        await engine.dispose()
        assert kinds(events) == {"agent_call": 1, "llm_call": 2, "tool_call": 1}
        (turn,) = by_type(events, "agent_call")
        (tool,) = by_type(events, "tool_call")
        assert all(e.run_id == run_id for e in events) and tool.parent_event_id == turn.id
        assert turn.inputs["message"] == f"{a}+{a}?" and turn.outputs["response"] == f"sum {2 * a}"
        assert tool.inputs["arguments"] == {"a": a, "b": a} and tool.outputs["result"] == 2 * a


def test_runs_on_two_threads_with_their_own_loops_never_mix(tmp_path, config) -> None:
    """capture_run_sync on two threads, each driving an agent with asyncio.run: no shared context."""
    results: dict[str, Any] = {}
    start = threading.Barrier(2)

    def worker(name: str, a: int) -> None:
        agent = Agent(f"calc_{name}", config=TestConfig(call("add", f'{{"a": {a}, "b": {a}}}'), f"sum {2 * a}"),
                      tools=[add])
        with capture_run_sync(f"sqlite+aiosqlite:///{tmp_path / name}.db", config=config) as run:
            start.wait()
            asyncio.run(agent.ask(f"{a}+{a}?"))
        results[name] = run.run_id

    threads = [threading.Thread(target=worker, args=(n, a)) for n, a in (("x", 3), ("y", 5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    import sqlite3

    for name in ("x", "y"):
        with sqlite3.connect(tmp_path / f"{name}.db") as con:
            rows = con.execute("SELECT event_type, agent_name, run_id FROM execution_events ORDER BY seq").fetchall()
        assert Counter(r[0] for r in rows) == {"agent_call": 1, "llm_call": 2, "tool_call": 1}
        assert {r[1] for r in rows} == {f"calc_{name}"} and {r[2] for r in rows} == {results[name]}


async def test_classic_and_v1_agents_in_one_process_share_one_run(sqlite_url, db_session_sqlite, config) -> None:
    """autogen 0.14.x (classic) and ag2 1.x installed side by side: both captured into the same run."""
    from cmbagent_events.integrations import flavours
    from cmbagent_events.testing.tool_chat import adding_pair

    assert flavours.classic_installed() and flavours.v1_installed()
    user, assistant = adding_pair(4, 5)
    modern = Agent("modern", config=TestConfig(call("add", '{"a": 6, "b": 7}'), "13"), tools=[add])

    async with capture_run(sqlite_url, config=config) as run:
        await user.a_initiate_chat(assistant, message="4+5?", max_turns=3)
        assert (await modern.ask("6+7?")).body == "13"
    events = await events_of(db_session_sqlite, run.run_id)
    v1 = [e for e in events if (e.meta or {}).get("framework") == "ag2"]
    classic = [e for e in events if e not in v1]
    assert kinds(v1) == {"agent_call": 1, "llm_call": 2, "tool_call": 1}
    # user -> assistant (tool call) -> user (runs it) -> assistant (answers) -> user (terminates)
    assert kinds(classic) == {"message": 4, "agent_call": 4, "llm_call": 2, "tool_call": 1}
    assert {e.inputs["arguments"]["a"] for e in by_type(events, "tool_call")} == {4, 6}
    assert all(e.run_id == run.run_id for e in events)
    assert_gapless(events, await db_session_sqlite.get(WorkflowRun, run.run_id))


async def test_explicit_middleware_without_hooks_and_no_double_capture_with_hooks(sqlite_url, db_session_sqlite,
                                                                                   config) -> None:
    agent = Agent("solo", config=TestConfig("one", "two"), middleware=[ag2_v1.capture_middleware()])
    async with capture_run(sqlite_url, config=config, hooks=False) as quiet:
        assert not ag2_v1.hooks_installed()
        await agent.ask("first")
    async with capture_run(sqlite_url, config=config) as hooked:
        assert ag2_v1.hooks_installed()
        await agent.ask("second")
    for run, message in ((quiet, "first"), (hooked, "second")):
        events = await events_of(db_session_sqlite, run.run_id)
        assert kinds(events) == {"agent_call": 1, "llm_call": 1}
        assert by_type(events, "agent_call")[0].inputs["message"] == message


async def test_hooks_are_reference_counted_and_removed_exactly(sqlite_url, tmp_path, config) -> None:
    from ag2.agent import Agent as AgentClass
    from ag2.network.hub.core import Hub

    originals = (AgentClass.__dict__["_drive_scope"], Hub.__dict__["_fan_out"])
    outer_url = f"sqlite+aiosqlite:///{tmp_path / 'outer.db'}"
    async with capture_run(outer_url, config=config):
        patched = AgentClass.__dict__["_drive_scope"]
        assert patched is not originals[0] and Hub.__dict__["_fan_out"] is not originals[1]
        assert set(ag2_v1.patch_points()) == {"Agent._drive_scope", "Hub._fan_out", "CodeAdapter.run",
                                              "LocalSandbox.exec"}
        async with capture_run(sqlite_url, config=config):
            assert AgentClass.__dict__["_drive_scope"] is patched  # installed once
        assert AgentClass.__dict__["_drive_scope"] is patched  # the outer run still holds them
    assert (AgentClass.__dict__["_drive_scope"], Hub.__dict__["_fan_out"]) == originals
    assert not ag2_v1.hooks_installed()
    # Outside any run nothing is captured and nothing is added to the turn.
    agent = Agent("free", config=TestConfig("ok"))
    assert (await agent.ask("hi")).body == "ok"


async def test_another_librarys_patch_over_ours_is_never_removed(sqlite_url, db_session_sqlite, config,
                                                                 tmp_path) -> None:
    """Someone patches Agent._drive_scope over ours inside a run: the run's end leaves their patch in
    place (ours becomes a pass-through in their chain), and the next run wakes ours instead of stacking."""
    from ag2.agent import Agent as AgentClass

    from cmbagent_events.testing.foreign_patch import ForeignPatch

    original = AgentClass.__dict__["_drive_scope"]
    seen: list[str] = []
    patch = ForeignPatch([(AgentClass, "_drive_scope")], link="wrapped", seen=lambda _, args: seen.append(args[0].name))
    try:
        async with capture_run(sqlite_url, config=config) as first:
            patch.install()  # over ours
            theirs = AgentClass.__dict__["_drive_scope"]
            await Agent("a", config=TestConfig("x")).ask("1")
        assert AgentClass.__dict__["_drive_scope"] is theirs  # not taken out of their chain
        assert (await Agent("b", config=TestConfig("y")).ask("2")).body == "y"  # ours passes through
        second_url = f"sqlite+aiosqlite:///{tmp_path / 'second.db'}"
        async with capture_run(second_url, config=config) as second:
            assert AgentClass.__dict__["_drive_scope"] is theirs  # ours woke up inside their chain
            await Agent("c", config=TestConfig("z")).ask("3")
        assert seen == ["a", "b", "c"]
    finally:
        AgentClass._drive_scope = original
    assert kinds(await events_of(db_session_sqlite, first.run_id)) == {"agent_call": 1, "llm_call": 1}
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from cmbagent_events import make_engine

    engine = make_engine(second_url)
    async with async_sessionmaker(engine)() as session:
        events = await events_of(session, second.run_id)
    await engine.dispose()
    assert kinds(events) == {"agent_call": 1, "llm_call": 1}  # captured once: not stacked twice
    assert by_type(events, "agent_call")[0].agent_name == "c"


async def test_a_replay_serves_the_recorded_model_calls(db_url, config) -> None:
    """Inside a capture run, AG2 1.x's model calls are served from a recorded run by the capturing
    middleware: agents whose model has nothing left to say answer as they did."""
    from cmbagent_events import replay

    agent = Agent("calc", config=TestConfig(call("add", '{"a": 2, "b": 3}'), reply("It is 5.", 12, 4)), tools=[add])
    async with capture_run(db_url, config=config) as recorded:
        await agent.ask("What is 2+3?")
    mute = Agent("calc", config=TestConfig(), tools=[add])  # asked anything, it fails
    async with replay(recorded.run_id, db_url, quiet=True) as played, capture_run(db_url, config=config) as run:
        answer = await mute.ask("What is 2+3?")
    assert answer.body == "It is 5." and played.report.served == played.report.recorded == 2
    async with open_async_store(db_url) as store:
        assert (await store.run(run.run_id))["meta"]["replay_of"] == recorded.run_id
        assert (await store.diff(recorded.run_id, run.run_id))["first_divergence"] is None


async def test_a_hub_workflow_replays_and_a_changed_request_diverges(db_url, config) -> None:
    from cmbagent_events import ReplayDivergence, replay

    async with capture_run(db_url, config=config) as recorded:
        await hub_review(bob_config(), TestConfig("Reviewed: approved."))
    async with replay(recorded.run_id, db_url, quiet=True) as played, capture_run(db_url, config=config):
        closed, _ = await hub_review(TestConfig(), TestConfig())
    assert closed.event_data["reason"] == "approved" and played.report.served == played.report.recorded == 3

    mute = Agent("calc", config=TestConfig(), tools=[add])
    async with capture_run(db_url, config=config) as other:
        await Agent("calc", config=TestConfig(reply("It is 5.", 12, 4)), tools=[add]).ask("What is 2+3?")
    with pytest.raises(ReplayDivergence) as caught:
        async with replay(other.run_id, db_url, quiet=True), capture_run(db_url, config=config):
            await mute.ask("What is 3+4?")
    assert caught.value.agent == "calc" and "+" in caught.value.diff and "3+4" in caught.value.diff
