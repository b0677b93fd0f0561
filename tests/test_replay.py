"""Replay: a captured classic-AG2 run played again with every model call served from the record.

Real AG2 agents and a scripted model client. A replay runs against a *fresh* script that would answer
otherwise (or has no answers at all): what the replayed run says, and that the fresh script was never
asked, show the answers came from the record. Runs in every classic flavour target.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

pytest.importorskip("autogen")  # a flavour target without it fails in conftest, never skips silently

from autogen import (
    AssistantAgent,
    ConversableAgent,
    GroupChat,
    GroupChatManager,
    UserProxyAgent,
    register_function,
)

from cmbagent_events import ReplayDivergence, capture_run, replay, replayable
from cmbagent_events.cli.main import main as cli
from cmbagent_events.read import open_async_store
from cmbagent_events.testing.script import Script, ToolCall
from cmbagent_events.testing.scripted_client import (
    register_scripted_client,
    scripted_llm_config,
    scripted_speaker_selection,
)

logging.getLogger("autogen.oai.client").setLevel(logging.WARNING)
pytestmark = [pytest.mark.ag2, pytest.mark.usefixtures("chat_cwd")]

SYSTEM = "You add numbers with the add tool, then say the sum and TERMINATE."


def TERM(m: dict) -> bool:
    return "TERMINATE" in (m.get("content") or "")


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def tool_pair(script: Script, system: str = SYSTEM) -> tuple[AssistantAgent, UserProxyAgent]:
    assistant = AssistantAgent("assistant", system_message=system, llm_config=scripted_llm_config(script))
    user = UserProxyAgent("user", human_input_mode="NEVER", code_execution_config=False, is_termination_msg=TERM)
    register_function(add, caller=assistant, executor=user, description="Add two integers.")
    register_scripted_client(assistant)
    return assistant, user


def recorded_script() -> Script:
    return Script({"assistant": [ToolCall("add", {"a": 2, "b": 3}),
                                 lambda msgs: f"The sum is {msgs[-1]['content']}. TERMINATE"]})


async def shape(db_url: str, run_id: str) -> list[tuple[Any, ...]]:
    """What a run did, without ids and times: type, subtype, agent, depth and the payload that matters."""
    async with open_async_store(db_url) as store:
        events = await store.events(run_id)
    out = []
    for e in events:
        payload: Any = None
        if e["event_type"] == "tool_call":
            payload = (e["inputs"]["arguments"], e["outputs"]["result"])
        elif e["event_subtype"] == "message":
            payload = e["inputs"].get("content")
        out.append((e["event_type"], e["event_subtype"], e["agent_name"], e["depth"], payload))
    return out


async def record(db_url: str, config: Any) -> str:
    assistant, user = tool_pair(recorded_script())
    async with capture_run(db_url, config=config, task_description="add 2 and 3") as run:
        user.initiate_chat(assistant, message="What is 2+3?", max_turns=3)
    return run.run_id


async def test_a_replay_serves_every_call_from_the_record_and_does_the_same(db_url, config, capsys) -> None:
    original = await record(db_url, config)
    fresh = Script({"assistant": []})  # would fail at the first call: the model is never asked
    assistant, user = tool_pair(fresh)
    async with replay(original, db_url) as played, \
            capture_run(db_url, config=config, task_description="add 2 and 3, replayed") as run:
        result = user.initiate_chat(assistant, message="What is 2+3?", max_turns=3)
    assert fresh.calls == []  # no request reached any model
    assert result.chat_history[-1]["content"] == "The sum is 5. TERMINATE"
    assert await shape(db_url, run.run_id) == await shape(db_url, original)
    assert played.report.served == played.report.recorded == 2 and played.report.diverged_at is None
    assert "2 of 2 recorded model calls served" in capsys.readouterr().err
    async with open_async_store(db_url) as store:
        meta = (await store.run(run.run_id))["meta"]
        diff = await store.diff(original, run.run_id)
        calls = await store.llm_calls(run.run_id)
    assert meta["replay_of"] == original and "diverged_at" not in meta
    assert diff["first_divergence"] is None
    assert all(c["replayable"] for c in calls)  # the replayed run can itself be replayed


async def test_a_changed_system_message_stops_at_its_first_call(db_url, config) -> None:
    original = await record(db_url, config)
    assistant, user = tool_pair(Script({"assistant": []}), system=SYSTEM.replace("add tool", "add function"))
    with pytest.raises(ReplayDivergence) as caught:
        async with replay(original, db_url, quiet=True):
            user.initiate_chat(assistant, message="What is 2+3?", max_turns=3)
    error = caught.value
    assert error.agent == "assistant" and error.call == 1
    assert "-You add numbers with the add tool" in error.diff and "+You add numbers with the add function" in error.diff
    assert "diverged at assistant's model call 1" in str(error)


async def test_live_after_a_divergence_forks_the_run_and_diff_shows_where(db_url, config) -> None:
    original = await record(db_url, config)
    live = Script({"assistant": [ToolCall("add", {"a": 2, "b": 3}), "It is five. TERMINATE"]})
    assistant, user = tool_pair(live, system=SYSTEM + " Be brief.")
    async with replay(original, db_url, on_divergence="live", quiet=True) as played, \
            capture_run(db_url, config=config) as run:
        result = user.initiate_chat(assistant, message="What is 2+3?", max_turns=3)
    assert result.chat_history[-1]["content"] == "It is five. TERMINATE"
    assert len(live.calls) == 2 and played.report.served == 0 and played.report.passed_live == 2
    assert played.report.diverged_at == {"agent": "assistant", "call": 1, "seq": played.report.diverged_at["seq"]}
    async with open_async_store(db_url) as store:
        meta = (await store.run(run.run_id))["meta"]
        diff = await store.diff(original, run.run_id)
    assert meta["replay_of"] == original and meta["diverged_at"]["agent"] == "assistant"
    assert diff["first_divergence"] is not None


async def test_ignored_parts_of_a_request_make_no_divergence(db_url, config) -> None:
    script = recorded_script()
    assistant, user = tool_pair(script, system=SYSTEM + " Today is 2026-12-06T07:00:00.")
    async with capture_run(db_url, config=config) as run:
        user.initiate_chat(assistant, message="What is 2+3?", max_turns=3)
    assistant, user = tool_pair(Script({"assistant": []}), system=SYSTEM + " Today is 2027-01-01T12:30:00.")
    async with replay(run.run_id, db_url, ignore=[r"\d{4}-\d\d-\d\dT[\d:]+"], quiet=True) as played:
        user.initiate_chat(assistant, message="What is 2+3?", max_turns=3)
    assert played.report.served == 2


async def test_position_matching_serves_in_order_whatever_is_asked(db_url, config) -> None:
    original = await record(db_url, config)
    assistant, user = tool_pair(Script({"assistant": []}), system="Something else entirely.")
    async with replay(original, db_url, match="position", quiet=True) as played:
        result = user.initiate_chat(assistant, message="What is 2+3?", max_turns=3)
    assert result.chat_history[-1]["content"] == "The sum is 5. TERMINATE" and played.report.served == 2


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_auto_speaker_selection_is_replayed_too(db_url, config, use_async: bool) -> None:
    """The "auto" selection's hidden model calls are served too; an async group chat likewise."""
    def chat(script: Script) -> tuple[list[ConversableAgent], GroupChatManager]:
        cfg = scripted_llm_config(script)
        agents = [ConversableAgent(n, llm_config=cfg, human_input_mode="NEVER", description=n)
                  for n in ("alice", "bob", "carol")]
        register_scripted_client(*agents)
        group = GroupChat(agents, messages=[], max_round=6, speaker_selection_method="auto",
                          **scripted_speaker_selection(script))
        return agents, GroupChatManager(group, llm_config=scripted_llm_config(script, agent_name="chat_manager"),
                                        is_termination_msg=TERM)

    recorded = Script({"alice": ["A1"], "bob": ["B1 TERMINATE"], "carol": ["C1"],
                       "speaker_selection_agent": ["carol", "bob"]})
    agents, manager = chat(recorded)

    async def start(agents: list[ConversableAgent], manager: GroupChatManager) -> Any:
        if use_async:
            return await agents[0].a_initiate_chat(manager, message="start")
        return agents[0].initiate_chat(manager, message="start")

    async with capture_run(db_url, config=config) as run:
        recorded_result = await start(agents, manager)
    fresh = Script({})
    agents, manager = chat(fresh)
    async with replay(run.run_id, db_url, quiet=True) as played:
        result = await start(agents, manager)
    assert [m["content"] for m in manager.groupchat.messages] == ["start", "C1", "B1 TERMINATE"]
    assert result.chat_history == recorded_result.chat_history and fresh.calls == []
    assert played.report.served == played.report.recorded == len(recorded.calls)


async def test_replayable_says_what_can_be_served(db_url, config, capsys) -> None:
    original = await record(db_url, config)
    report = replayable(original[:13], db_url)
    assert report["calls"] == report["servable"] == 2 and report["not_servable"] == []
    assert report["agents"] == {"assistant": 2}
    assert await asyncio.to_thread(cli, ["--db", db_url, "replayable", original]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 model calls can be served" in out and "assistant: 2" in out
    async with capture_run(db_url, config=config.replace(capture_llm_messages=False)) as bare:
        bare.capture_llm_call("a", "m", 1, 1)
    assert replayable(bare.run_id, db_url)["servable"] == 0
    assert await asyncio.to_thread(cli, ["--db", db_url, "replayable", bare.run_id]) == 1
    assert "request and response not recorded" in capsys.readouterr().out


async def test_recorded_tool_results_stand_in_for_the_tools(db_url, config) -> None:
    """tools="recorded": the tool is not run (here it would fail); its recorded result is served."""
    original = await record(db_url, config)
    ran: list[int] = []

    def broken_add(a: int, b: int) -> int:
        """Add two integers."""
        ran.append(a)
        raise RuntimeError("the paid service is down")

    assistant = AssistantAgent("assistant", system_message=SYSTEM, llm_config=scripted_llm_config(Script({})))
    user = UserProxyAgent("user", human_input_mode="NEVER", code_execution_config=False, is_termination_msg=TERM)
    register_function(broken_add, caller=assistant, executor=user, name="add", description="Add two integers.")
    register_scripted_client(assistant)
    async with replay(original, db_url, tools="recorded", quiet=True) as played, \
            capture_run(db_url, config=config) as run:
        result = user.initiate_chat(assistant, message="What is 2+3?", max_turns=3)
    assert ran == [] and result.chat_history[-1]["content"] == "The sum is 5. TERMINATE"
    assert played.report.tools_served == 1 and played.report.tools_live == 0
    assert await shape(db_url, run.run_id) == await shape(db_url, original)
