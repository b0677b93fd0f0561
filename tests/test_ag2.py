"""Real AG2 conversations (ConversableAgent, GroupChat, group patterns) driven offline by the
scripted model client, captured by the hooks, and checked against AG2's own record of them.

Runs on whichever ag2 the venv holds (0.14 in .venv, 0.10.3 in .venv-ag2-0103: `make test-ag2-0103`).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

autogen = pytest.importorskip("autogen")

from autogen import (  # noqa: E402
    AssistantAgent,
    ConversableAgent,
    GroupChat,
    GroupChatManager,
    OpenAIWrapper,
    UserProxyAgent,
    register_function,
)
from autogen.agentchat.group import (  # noqa: E402
    AgentTarget,
    ContextExpression,
    ContextVariables,
    ExpressionContextCondition,
    OnCondition,
    OnContextCondition,
    ReplyResult,
    StringLLMCondition,
    TerminateTarget,
)
from autogen.coding import LocalCommandLineCodeExecutor  # noqa: E402

from cmbagent_events import (  # noqa: E402
    ExecutionEvent,
    File,
    Message,
    WorkflowRun,
    capture_run,
    hooks_report,
    install_ag2_hooks,
    uninstall_ag2_hooks,
)
from cmbagent_events.integrations import ag2_classic as hooks  # noqa: E402
from cmbagent_events.integrations.patching import CallHook, PatchSet  # noqa: E402
from cmbagent_events.read import open_async_store  # noqa: E402
from cmbagent_events.testing.script import Script, ScriptExhaustedError, ToolCall  # noqa: E402
from cmbagent_events.testing.scripted_client import (  # noqa: E402
    register_scripted_client,
    scripted_llm_config,
    scripted_speaker_selection,
)

logging.getLogger("autogen.oai.client").setLevel(logging.WARNING)
pytestmark = [pytest.mark.ag2, pytest.mark.usefixtures("chat_cwd")]


def TERM(m: dict) -> bool:
    return "TERMINATE" in (m.get("content") or "")


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def count_generate_reply(*agents: ConversableAgent) -> Counter:
    """Count real generate_reply / a_generate_reply calls per agent (instance attributes over the hooks)."""
    counts: Counter = Counter()
    for agent in agents:
        # Look the class method up at call time, so the hooks installed later are what runs.
        def counted(*a, _agent=agent, **k):
            counts[_agent.name] += 1
            return type(_agent).generate_reply(_agent, *a, **k)

        async def a_counted(*a, _agent=agent, **k):
            counts[_agent.name] += 1
            return await type(_agent).a_generate_reply(_agent, *a, **k)

        agent.generate_reply = counted
        agent.a_generate_reply = a_counted
    return counts


async def events_of(db_session, run_id: str, event_type: str | None = None) -> list[ExecutionEvent]:
    query = select(ExecutionEvent).where(ExecutionEvent.run_id == run_id)
    if event_type:
        query = query.where(ExecutionEvent.event_type == event_type)
    return list((await db_session.scalars(query.order_by(ExecutionEvent.seq))).all())


def split_messages(events: list[ExecutionEvent]) -> tuple[list[ExecutionEvent], list[ExecutionEvent]]:
    msgs = [e for e in events if e.event_type == "agent_call" and e.event_subtype == "message"]
    turns = [e for e in msgs if not (e.meta or {}).get("broadcast") and not (e.meta or {}).get("speaker_selection")]
    return msgs, turns


def tool_agents(script: Script) -> tuple[AssistantAgent, UserProxyAgent]:
    assistant = AssistantAgent("assistant", llm_config=scripted_llm_config(script, price=(1.0, 2.0)))
    user = UserProxyAgent("user", human_input_mode="NEVER", code_execution_config=False, is_termination_msg=TERM)
    register_function(add, caller=assistant, executor=user, description="Add two integers.")
    register_scripted_client(assistant)
    return assistant, user


async def test_two_agent_tool_chat_is_captured_exactly(db_url, db_session, config) -> None:
    script = Script({"assistant": [ToolCall("add", {"a": 2, "b": 3}),
                                   lambda msgs: f"The sum is {msgs[-1]['content']}. TERMINATE"]})
    assistant, user = tool_agents(script)
    counts = count_generate_reply(assistant, user)
    async with capture_run(db_url, config=config) as run:
        result = user.initiate_chat(assistant, message="What is 2+3?", max_turns=3)
    events = await events_of(db_session, run.run_id)

    calls = [e for e in events if e.event_type == "agent_call" and e.event_subtype != "message"]
    assert Counter(e.agent_name for e in calls) == counts  # one agent_call row per generate_reply
    assert all(e.status == "completed" and e.event_subtype == "complete" and e.duration_ms >= 0 for e in calls)
    msgs, turns = split_messages(events)
    assert len(turns) == len(result.chat_history) == len(msgs)  # no manager here: no broadcasts

    (tool,) = [e for e in events if e.event_type == "tool_call"]
    assert tool.inputs == {"tool_name": "add", "arguments": {"a": 2, "b": 3}}
    assert tool.outputs == {"result": "5"} and tool.meta["success"] is True and tool.status == "completed"
    parent = next(e for e in calls if e.id == tool.parent_event_id)
    assert parent.agent_name == "user" and tool.depth == parent.depth + 1
    assert parent.inputs["message"]["tool_calls"][0]["function"]["name"] == "add"  # what the call answered

    llm = [e for e in events if e.event_type == "llm_call"]
    usage = script.usage()
    assert len(llm) == usage["calls"] == 2
    assert sum(e.outputs["usage"]["prompt_tokens"] for e in llm) == usage["prompt_tokens"]
    assert sum(e.outputs["usage"]["completion_tokens"] for e in llm) == usage["completion_tokens"]
    assert all(e.agent_name == "assistant" and e.parent_event_id in {c.id for c in calls} for e in llm)
    row = await db_session.get(WorkflowRun, run.run_id)
    assert row.meta["usage"]["total_tokens"] == usage["total_tokens"]
    assert row.meta["usage"]["cost"] == pytest.approx(usage["cost"])
    assert row.total_events == len(events) and row.dropped_events == 0
    await _llm_calls_as_sent(db_url, llm, script)


async def _llm_calls_as_sent(db_url: str, llm: list[ExecutionEvent], script: Script) -> None:
    """Each stored model call is the request the client received and the response it returned."""
    async with open_async_store(db_url) as store:
        stored = [await store.llm_call(e.id) for e in llm]
    served = script.calls
    assert len(stored) == len(served)
    for call, sent in zip(stored, served):
        assert call["request"]["messages"] == sent.params["messages"]  # as sent: AG2 changed its dicts since
        assert call["request"]["tools"] == sent.params.get("tools")
        assert call["request"]["model"] == sent.params["model"] and call["replayable"]
        message = call["response"]["choices"][0]["message"]
        if isinstance(sent.reply, str):
            assert message["content"] == sent.reply
        else:
            assert [t["function"]["name"] for t in message["tool_calls"]] == [c.name for c in sent.reply]
        assert call["cost"] == pytest.approx(sent.cost) and call["cost_source"] == "ag2_price_table"


async def test_async_chat_with_tool_is_captured_and_nested_across_the_executor_hop(db_url, db_session, config) -> None:
    script = Script({"assistant": [ToolCall("add", {"a": 20, "b": 22}), "It is 42. TERMINATE"]})
    assistant, user = tool_agents(script)
    counts = count_generate_reply(assistant, user)
    async with capture_run(db_url, config=config) as run:
        result = await user.a_initiate_chat(assistant, message="What is 20+22?", max_turns=3)
    events = await events_of(db_session, run.run_id)
    calls = [e for e in events if e.event_type == "agent_call" and e.event_subtype != "message"]
    assert Counter(e.agent_name for e in calls) == counts
    _, turns = split_messages(events)
    assert len(turns) == len(result.chat_history)
    (tool,) = [e for e in events if e.event_type == "tool_call"]
    assert tool.outputs == {"result": "42"} and tool.inputs["arguments"] == {"a": 20, "b": 22}
    llm = [e for e in events if e.event_type == "llm_call"]
    assert len(llm) == 2
    # create() ran on AG2's executor thread (no contextvars): still nested under the assistant's call
    call_ids = {c.id: c.agent_name for c in calls}
    assert all(call_ids.get(e.parent_event_id) == "assistant" for e in llm)


async def test_code_execution_success_failure_and_created_file(db_url, db_session, config, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "untouched.txt").write_text("already here")
    good = "```python\nfrom pathlib import Path\nPath('spectrum.csv').write_text('ell,cl\\n2,1.0\\n')\nprint('ok')\n```"
    bad = "```python\nraise SystemExit(3)\n```"
    script = Script({"coder": [good, bad, "Done. TERMINATE"]})
    coder = AssistantAgent("coder", llm_config=scripted_llm_config(script))
    runner = ConversableAgent("runner", llm_config=False, human_input_mode="NEVER", is_termination_msg=TERM,
                              code_execution_config={"executor": LocalCommandLineCodeExecutor(work_dir=work)})
    register_scripted_client(coder)
    async with capture_run(db_url, config=config) as run:
        runner.initiate_chat(coder, message="write the spectrum", max_turns=4)
    events = await events_of(db_session, run.run_id)
    execs = [e for e in events if e.event_type == "code_exec"]
    assert [e.meta["exit_code"] for e in execs] == [0, 3]
    assert [e.event_subtype for e in execs] == ["complete", "error"]
    assert "ok" in execs[0].outputs["result"] and "spectrum.csv" in execs[0].inputs["code"]
    assert all(e.agent_name == "runner" and e.duration_ms > 0 for e in execs)
    files = (await db_session.scalars(select(File).where(File.run_id == run.run_id))).all()
    assert [Path(f.file_path).name for f in files] == ["spectrum.csv"]  # not tmp_code_*, not untouched.txt
    assert files[0].size_bytes == (work / "spectrum.csv").stat().st_size and files[0].file_type == "data"
    file_event = next(e for e in events if e.id == files[0].event_id)
    assert file_event.event_type == "file_gen" and file_event.meta["code_exec_id"] == execs[0].id


async def test_legacy_run_code_is_captured(db_url, db_session, config, tmp_path: Path) -> None:
    code = "```python\nopen('legacy.txt', 'w').write('x')\nprint('legacy ran')\n```"
    script = Script({"coder": [code, "Done. TERMINATE"]})
    coder = AssistantAgent("coder", llm_config=scripted_llm_config(script))
    runner = ConversableAgent("runner", llm_config=False, human_input_mode="NEVER", is_termination_msg=TERM,
                              code_execution_config={"work_dir": str(tmp_path), "use_docker": False})
    register_scripted_client(coder)
    async with capture_run(db_url, config=config) as run:
        runner.initiate_chat(coder, message="go", max_turns=3)
    execs = await events_of(db_session, run.run_id, "code_exec")
    assert len(execs) == 1 and execs[0].meta["exit_code"] == 0 and "legacy ran" in execs[0].outputs["result"]
    files = await events_of(db_session, run.run_id, "file_gen")
    assert [Path(f.inputs["file_path"]).name for f in files] == ["legacy.txt"]


def group(script: Script, method: str) -> tuple[list[ConversableAgent], GroupChat, GroupChatManager]:
    cfg = scripted_llm_config(script)
    agents = [ConversableAgent(n, llm_config=cfg, human_input_mode="NEVER", description=n)
              for n in ("alice", "bob", "carol")]
    register_scripted_client(*agents)
    extra = scripted_speaker_selection(script) if method == "auto" else {}
    chat = GroupChat(agents, messages=[], max_round=6, speaker_selection_method=method, **extra)
    manager = GroupChatManager(chat, llm_config=scripted_llm_config(script, agent_name="chat_manager")
                               if method == "auto" else False, is_termination_msg=TERM)
    return agents, chat, manager


@pytest.mark.parametrize("mode", ["fold", "each"])
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_group_chat_handoffs_follow_the_speaker_order(db_url, db_session, config, use_async: bool,
                                                            mode: str) -> None:
    script = Script({"alice": ["A1"], "bob": ["B1"], "carol": ["C1 TERMINATE"]})
    agents, chat, manager = group(script, "round_robin")
    config = config.replace(broadcasts=mode)
    async with capture_run(db_url, config=config) as run:
        if use_async:
            await agents[0].a_initiate_chat(manager, message="start")
        else:
            agents[0].initiate_chat(manager, message="start")
    events = await events_of(db_session, run.run_id)
    speakers = [m["name"] for m in chat.messages]
    assert speakers == ["alice", "bob", "carol", "alice"][: len(speakers)]
    handoffs = [e for e in events if e.event_type == "handoff"]
    assert [(h.inputs["from_agent"], h.inputs["to_agent"]) for h in handoffs] == list(itertools.pairwise(speakers))
    assert all(h.meta["reason"] == "speaker_selection" and h.inputs["context"]["method"] == "round_robin"
               for h in handoffs)
    msgs, turns = split_messages(events)
    broadcasts = [m for m in msgs if (m.meta or {}).get("broadcast")]
    assert len(turns) == len(chat.messages)  # each turn once: the send to the manager
    relayed = Counter(b.inputs["content"] for b in broadcasts)  # the manager relays each turn to the others
    others = {m["content"]: [a.name for a in agents if a.name != m["name"]] for m in chat.messages}
    per_message = 1 if mode == "fold" else len(agents) - 1  # folded: one event names every recipient
    for m in chat.messages[:-1]:
        assert relayed[m["content"]] == per_message
    assert relayed[chat.messages[-1]["content"]] in (0, per_message)  # the final one: sync relays, async not
    assert sum(relayed.values()) == len(broadcasts)
    assert all(b.inputs["sender"] == "chat_manager" for b in broadcasts)
    if mode == "fold":
        assert all(b.agent_name == "chat_manager" and b.meta["recipients"] == others[b.inputs["content"]]
                   for b in broadcasts)
    else:
        assert all("recipients" not in b.meta for b in broadcasts)
        assert [b.agent_name for b in broadcasts] == [n for b in broadcasts[::2] for n in others[b.inputs["content"]]]
    # the messages table holds the conversation's turns once each; relays are events only
    rows = (await db_session.scalars(select(Message).where(Message.run_id == run.run_id))).all()
    assert sorted(r.event_id for r in rows) == sorted(t.id for t in turns)
    manager_call = next(e for e in events if e.event_type == "agent_call" and e.event_subtype != "message"
                        and e.agent_name == "chat_manager")
    inner = [e for e in events if e.event_type == "agent_call" and e.event_subtype != "message"
             and e.agent_name in {"bob", "carol"}]
    assert inner and all(e.parent_event_id == manager_call.id for e in inner)
    assert all(b.parent_event_id == manager_call.id for b in broadcasts)  # relayed inside the manager's call


async def test_auto_speaker_selection_inner_chat_is_marked(db_url, db_session, config) -> None:
    script = Script({"alice": ["A1"], "bob": ["B1 TERMINATE"], "carol": ["C1"],
                     "speaker_selection_agent": ["carol", "bob"]})
    agents, chat, manager = group(script, "auto")
    async with capture_run(db_url, config=config) as run:
        agents[0].initiate_chat(manager, message="start")
    events = await events_of(db_session, run.run_id)
    handoffs = [(h.inputs["from_agent"], h.inputs["to_agent"]) for h in events if h.event_type == "handoff"]
    assert handoffs == [("alice", "carol"), ("carol", "bob")]
    marked = [e for e in events if (e.meta or {}).get("speaker_selection")]
    assert {e.agent_name for e in marked if e.event_type == "agent_call" and e.event_subtype != "message"} >= {
        "speaker_selection_agent"}
    _, turns = split_messages(events)
    assert len(turns) == len(chat.messages)


def support_pattern() -> Any:
    """A group pattern whose handoffs take every transition kind: OnCondition, ReplyResult,
    OnContextCondition, AfterWork (the chat ends through a TerminateTarget)."""
    from autogen.agentchat.group.patterns import DefaultPattern

    script = Script({"triage": [ToolCall("transfer_to_tech_1")],
                     "tech": [ToolCall("record_issue", {"issue": "wifi down"})],
                     "general": ["Anything else?"],
                     "closer": ["Goodbye."]})
    cfg = scripted_llm_config(script)

    def record_issue(issue: str, context_variables: ContextVariables) -> ReplyResult:
        """Record the issue."""
        context_variables["issue"] = issue
        context_variables["solved"] = True
        return ReplyResult(message=f"recorded {issue}", target=AgentTarget(tech),
                             context_variables=context_variables)

    # AG2 builds the tool schema with pydantic, which cannot resolve this module's postponed annotations
    record_issue.__annotations__ = {"issue": str, "context_variables": ContextVariables, "return": ReplyResult}

    triage = ConversableAgent("triage", llm_config=cfg)
    tech = ConversableAgent("tech", llm_config=cfg, functions=[record_issue])
    general = ConversableAgent("general", llm_config=cfg)
    closer = ConversableAgent("closer", llm_config=cfg)
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER")
    register_scripted_client(triage, tech, general, closer)
    triage.handoffs.add_llm_condition(OnCondition(target=AgentTarget(tech),
                                                    condition=StringLLMCondition("technical issue")))
    tech.handoffs.add_context_condition(OnContextCondition(
        target=AgentTarget(general), condition=ExpressionContextCondition(ContextExpression("${solved} == True"))))
    general.handoffs.set_after_work(AgentTarget(closer))
    closer.handoffs.set_after_work(TerminateTarget())
    pattern = DefaultPattern(initial_agent=triage, agents=[triage, tech, general, closer], user_agent=user,
                             context_variables=ContextVariables(data={"solved": False}),
                             group_after_work=TerminateTarget())
    return pattern


async def test_group_pattern_transition_reasons(db_url, db_session, config) -> None:
    """Every handoff with its reason, the same on every classic flavour: the fork sends no
    transition events, so there the reasons are inferred from group state."""
    from autogen.agentchat import initiate_group_chat

    async with capture_run(db_url, config=config) as run:
        initiate_group_chat(pattern=support_pattern(), messages="My wifi is down", max_rounds=12)
    events = await events_of(db_session, run.run_id)
    handoffs = [(h.inputs["from_agent"], h.inputs["to_agent"], h.meta["reason"],
                 (h.inputs.get("context") or {}).get("transition")) for h in events if h.event_type == "handoff"]
    executor = "_Group_Tool_Executor"
    assert handoffs == [
        ("user", "triage", "speaker_selection", None),
        ("triage", executor, "speaker_selection", None),
        (executor, "tech", "OnCondition", {"source": "triage", "target": "tech"}),
        ("tech", executor, "speaker_selection", None),
        (executor, "tech", "ReplyResult", {"source": "tech", "target": "tech"}),
        ("tech", "general", "OnContextCondition", {"source": "tech", "target": "general"}),
        ("general", "closer", "AfterWork", {"source": "general", "target": "closer"}),
    ]
    tools = [e for e in events if e.event_type == "tool_call"]
    assert [t.inputs["tool_name"] for t in tools] == ["transfer_to_tech_1", "record_issue"]
    # the chat ends through a TerminateTarget, which AG2 signals with NoEligibleSpeakerError: not an error
    assert [e for e in events if e.event_type == "error"] == []
    assert (await db_session.get(WorkflowRun, run.run_id)).status == "completed"


async def test_inferred_transition_hooks_are_gated_and_pass_through_without_a_run(db_url, config) -> None:
    """The hooks that infer transitions (installed on AG2 that sends none: the fork) are gated like
    every hook, and do nothing while no run captures the agents; with a run open the same hooks
    infer (so this test can fail). Installed here on their own, on whichever classic AG2 this is."""
    from autogen.agentchat import initiate_group_chat
    from autogen.agentchat.group import group_utils
    from autogen.agentchat.group.group_tool_executor import GroupToolExecutor

    from cmbagent_events.integrations.ag2_classic.groupchat import take_transition
    from cmbagent_events.integrations.ag2_classic.inferred_transitions import patch_inferred_transitions
    from cmbagent_events.integrations.patching import gate_of

    uninstall_ag2_hooks()
    points = ((group_utils, "determine_next_agent"), (group_utils, "_run_oncontextconditions"),
              (GroupToolExecutor, "_generate_group_tool_reply"))
    originals = [owner.__dict__[name] for owner, name in points]
    patches = PatchSet("inferred transitions", lambda p: patch_inferred_transitions(p, group_utils, GroupToolExecutor))
    assert patches.install()
    try:
        assert sorted(patches.points()) == ["GroupToolExecutor._generate_group_tool_reply",
                                            "group_utils._run_oncontextconditions", "group_utils.determine_next_agent"]
        for owner, name in points:
            assert gate_of(owner.__dict__[name]) is not None, name
        take_transition()
        initiate_group_chat(pattern=support_pattern(), messages="My wifi is down", max_rounds=12)
        assert take_transition() is None  # no run: every inferred-transition hook passed straight through
        async with capture_run(db_url, config=config, hooks=False):
            initiate_group_chat(pattern=support_pattern(), messages="My wifi is down", max_rounds=12)
        assert take_transition() is not None  # a run open: the same hooks inferred the transitions
    finally:
        patches.uninstall()
    assert [owner.__dict__[name] for owner, name in points] == originals


class BrokenHook(CallHook):
    """A hook whose own code fails: in ``start``, or (``at="end"``) after the call."""

    def __init__(self, at: str) -> None:
        self.at = at
        self.ends = 0

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.at == "start":
            raise RuntimeError("broken hook start")
        return args[0]

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        self.ends += 1
        raise RuntimeError("broken hook end")


@pytest.mark.parametrize("at", ["start", "end"])
def test_a_hooks_own_failure_never_reaches_ag2(at: str, caplog: pytest.LogCaptureFixture) -> None:
    """A hook that raises (our bug, a flavour we did not foresee) on real AG2 methods: the chat goes on
    exactly as without it, AG2's own exceptions pass through unchanged, and the failure is logged at
    DEBUG with its traceback."""
    from cmbagent_events.testing.tool_chat import adding_pair

    def chat() -> list[Any]:
        user, assistant = adding_pair(2, 3)
        return [(m.get("role"), m.get("content")) for m in
                user.initiate_chat(assistant, message="What is 2+3?", max_turns=3).chat_history]

    uninstall_ag2_hooks()
    expected = chat()
    hook = BrokenHook(at)
    patches = PatchSet("broken", lambda p: [p.patch_call(ConversableAgent, name, hook)
                                            for name in ("generate_reply", "send", "execute_function")])
    assert patches.install()
    try:
        with caplog.at_level(logging.DEBUG, logger="cmbagent_events"):
            assert chat() == expected
            failure = ValueError("AG2's own")
            agent = ConversableAgent("raiser", llm_config=False, human_input_mode="NEVER")

            def raising_reply(*args: Any, **kwargs: Any) -> Any:
                raise failure

            agent.register_reply([ConversableAgent, None], raising_reply, position=0)
            with pytest.raises(ValueError) as raised:
                agent.generate_reply(messages=[{"role": "user", "content": "hi"}])
            assert raised.value is failure
    finally:
        patches.uninstall()
    assert (hook.ends > 0) == (at == "end")
    logged = [r for r in caplog.records if r.getMessage() == f"cmbagent-events: hook {at} failed"]
    assert logged and logged[0].levelno == logging.DEBUG and logged[0].exc_info is not None
    assert str(logged[0].exc_info[1]) == f"broken hook {at}"


async def test_model_error_is_recorded_once_and_reraised_unchanged(db_url, db_session, config) -> None:
    script = Script({"assistant": []})  # exhausted on the first call
    assistant = AssistantAgent("assistant", llm_config=scripted_llm_config(script))
    user = UserProxyAgent("user", human_input_mode="NEVER", code_execution_config=False)
    register_scripted_client(assistant)
    async with capture_run(db_url, config=config) as run:
        with pytest.raises(ScriptExhaustedError) as info:
            user.initiate_chat(assistant, message="hello", max_turns=2)
        assert type(info.value) is ScriptExhaustedError
    errors = await events_of(db_session, run.run_id, "error")
    assert len(errors) == 1 and errors[0].event_subtype == "ScriptExhaustedError"
    call = next(e for e in await events_of(db_session, run.run_id, "agent_call")
                if e.agent_name == "assistant" and e.event_subtype != "message")
    assert call.status == "failed" and call.event_subtype == "error"
    assert errors[0].parent_event_id == call.id
    assert "ScriptExhaustedError" in call.error_message


def _ag2_attributes() -> dict[tuple[str, str], Any]:
    from autogen.agentchat.group import group_utils
    from autogen.agentchat.group.group_tool_executor import GroupToolExecutor
    from autogen.io.base import IOStream

    owners = {"ConversableAgent": ConversableAgent, "GroupChat": GroupChat, "OpenAIWrapper": OpenAIWrapper,
              "LocalCommandLineCodeExecutor": LocalCommandLineCodeExecutor, "IOStream": IOStream,
              "group_utils": group_utils, "GroupToolExecutor": GroupToolExecutor}
    return {(n, k): v for n, owner in owners.items() for k, v in vars(owner).items()}


def test_uninstall_restores_ag2_exactly() -> None:
    before = _ag2_attributes()
    generate_reply = ConversableAgent.generate_reply
    assert install_ag2_hooks() is True
    assert install_ag2_hooks() is True  # idempotent
    assert ConversableAgent.generate_reply is not generate_reply
    assert ConversableAgent.generate_reply.__name__ == "generate_reply"  # 0.14 pairs reply funcs by name
    assert inspect.iscoroutinefunction(ConversableAgent.a_generate_reply)
    uninstall_ag2_hooks()
    uninstall_ag2_hooks()
    after = _ag2_attributes()
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before)
    assert not hooks.hooks_installed()


CORE_PATCH_POINTS = {"ConversableAgent.generate_reply", "ConversableAgent.a_generate_reply", "ConversableAgent.send",
                     "ConversableAgent.a_send", "ConversableAgent.execute_function",
                     "ConversableAgent.a_execute_function", "ConversableAgent.run_code", "OpenAIWrapper.create",
                     "GroupChat.select_speaker", "GroupChat.a_select_speaker",
                     "LocalCommandLineCodeExecutor.execute_code_blocks"}


def test_hooks_report_names_the_flavour_and_its_patch_points() -> None:
    from importlib.metadata import version

    wanted = os.environ.get("CMBAGENT_EVENTS_AG2", "")
    assert install_ag2_hooks() is True
    try:
        report = hooks_report()
        if wanted:  # set by the flavour targets: <distribution>==<version>
            assert f"{report.distribution}=={report.version}" == wanted
        assert report.version == version(report.distribution)
        assert report.active and set(report.installed) >= CORE_PATCH_POINTS
        assert len(set(report.installed)) == len(report.installed)
        assert not set(report.installed) & set(report.unavailable)
        if report.transitions == "inferred":  # the cmbagent fork: no transition events to read
            assert {"group_utils.determine_next_agent", "GroupToolExecutor._generate_group_tool_reply"} <= set(
                report.installed)
            assert any(u.startswith("IOStream.get_default") for u in report.unavailable)
        else:
            assert report.transitions == "events" and "IOStream.get_default" in report.installed
        assert report.message.startswith(f"cmbagent-events: AG2 hooks on {report.distribution} {report.version}")
    finally:
        uninstall_ag2_hooks()
    after = hooks_report()
    assert not after.active and after.unavailable == report.unavailable


def test_a_patch_point_missing_from_the_flavour_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flavour without some method (as the fork lacks 0.14's transition events) still gets the rest."""
    monkeypatch.delattr(ConversableAgent, "a_execute_function")
    try:
        assert install_ag2_hooks() is True
        report = hooks_report()
        assert "ConversableAgent.a_execute_function" in report.unavailable
        assert "ConversableAgent.a_execute_function" not in report.installed
        assert "ConversableAgent.execute_function" in report.installed
    finally:
        uninstall_ag2_hooks()
    assert "a_execute_function" not in ConversableAgent.__dict__ and not hooks.hooks_installed()


def test_hooks_report_is_logged_once_at_info_in_a_fresh_process() -> None:
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(levelname)s %(message)s')\n"
        "from cmbagent_events import install_ag2_hooks, uninstall_ag2_hooks\n"
        "for _ in range(3):\n"
        "    assert install_ag2_hooks()\n"
        "    uninstall_ag2_hooks()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    lines = [line for line in out.splitlines() if "AG2 hooks on" in line]
    assert len(lines) == 1 and lines[0].startswith("INFO cmbagent-events: AG2 hooks on "), out


async def test_capture_run_installs_and_removes_hooks(sqlite_url, config) -> None:
    before = ConversableAgent.send
    async with capture_run(sqlite_url, config=config):
        assert ConversableAgent.send is not before
        async with capture_run(sqlite_url, config=config):
            pass
        assert hooks.hooks_installed()  # the outer run still holds them
    assert ConversableAgent.send is before


async def test_two_runs_in_threads_with_ag2_run_never_mix(db_url, db_session, config) -> None:
    """AG2's run() starts its own thread (contextvars lost): each run still gets only its own events."""
    from cmbagent_events import capture_run_sync

    results: dict[str, Any] = {}

    def one(tag: str) -> None:
        script = Script({f"{tag}_assistant": [f"{tag} reply one", f"{tag} reply two TERMINATE"],
                         f"{tag}_user": [f"{tag} ok"]})
        cfg = scripted_llm_config(script)
        assistant = ConversableAgent(f"{tag}_assistant", llm_config=cfg, human_input_mode="NEVER")
        user = ConversableAgent(f"{tag}_user", llm_config=cfg, human_input_mode="NEVER")
        register_scripted_client(assistant, user)
        with capture_run_sync(db_url, config=config, task_description=tag) as run:
            if hasattr(user, "run"):
                response = user.run(assistant, message="go", max_turns=2)
                for _ in response.events:  # drain: the chat runs on AG2's thread
                    pass
            else:
                user.initiate_chat(assistant, message="go", max_turns=2)
            results[tag] = run.run_id

    threads = [threading.Thread(target=one, args=(tag,)) for tag in ("red", "blue")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for tag, run_id in results.items():
        events = await events_of(db_session, run_id)
        names = {e.agent_name for e in events}
        assert events and all(name.startswith(tag) for name in names), (tag, names)
        assert len([e for e in events if e.event_type == "llm_call"]) == 3
    assert len(results) == 2


def test_hooks_do_not_change_results() -> None:
    """The same scripted chat gives the same history with and without the hooks."""

    def chat() -> list[dict]:
        script = Script({"assistant": [ToolCall("add", {"a": 1, "b": 2}), "3. TERMINATE"]})
        assistant, user = tool_agents(script)
        return user.initiate_chat(assistant, message="1+2?", max_turns=3).chat_history

    plain = chat()
    install_ag2_hooks()
    try:
        hooked = asyncio.run(_in_run(chat))
    finally:
        uninstall_ag2_hooks()

    def strip_ids(h: list[dict]) -> list[dict]:
        return [{k: v for k, v in m.items() if k not in ("tool_calls", "tool_responses")} for m in h]

    assert strip_ids(hooked) == strip_ids(plain)


async def _in_run(fn):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        async with capture_run(f"sqlite+aiosqlite:///{d}/x.db", hooks=True) as run:
            out = fn()
            assert run.get_performance_stats()["total_events"] > 0
    return out


async def test_group_pattern_ending_by_terminate_target_is_not_an_error(db_url, db_session, config) -> None:
    from autogen.agentchat import initiate_group_chat
    from autogen.agentchat.group.patterns import DefaultPattern

    script = Script({"solo": ["All done here."]})
    solo = ConversableAgent("solo", llm_config=scripted_llm_config(script))
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER")
    register_scripted_client(solo)
    pattern = DefaultPattern(initial_agent=solo, agents=[solo], user_agent=user, group_after_work=TerminateTarget())
    async with capture_run(db_url, config=config) as run:
        initiate_group_chat(pattern=pattern, messages="finish up", max_rounds=5)
    events = await events_of(db_session, run.run_id)
    assert [e.event_subtype for e in events if e.event_type == "error"] == []
    assert any(e.event_type == "agent_call" and e.agent_name == "solo" and e.status == "completed" for e in events)


async def test_file_capture_stays_inside_the_work_dir(sqlite_url, db_session_sqlite, config, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    code = ("```python\nimport os\nopen('inside.txt', 'w').write('ok')\nopen('../escape.txt', 'w').write('no')\n"
            "os.symlink('/etc/hostname', 'link.txt')\n```")
    script = Script({"coder": [code, "Done. TERMINATE"]})
    coder = AssistantAgent("coder", llm_config=scripted_llm_config(script))
    runner = ConversableAgent("runner", llm_config=False, human_input_mode="NEVER", is_termination_msg=TERM,
                              code_execution_config={"executor": LocalCommandLineCodeExecutor(work_dir=work)})
    register_scripted_client(coder)
    async with capture_run(sqlite_url, config=config) as run:
        runner.initiate_chat(coder, message="go", max_turns=3)
    assert (tmp_path / "escape.txt").exists() and (work / "link.txt").is_symlink()  # the code really did it
    files = (await db_session_sqlite.scalars(select(File).where(File.run_id == run.run_id))).all()
    assert [Path(f.file_path) for f in files] == [(work / "inside.txt").resolve()]


async def test_concurrent_async_tool_calls_are_each_captured(db_url, db_session, config) -> None:
    async def slow_add(a: int, b: int) -> int:
        """Add two integers, slowly."""
        await asyncio.sleep(0.05)
        return a + b

    script = Script({"assistant": [[ToolCall("slow_add", {"a": 1, "b": 2}), ToolCall("slow_add", {"a": 3, "b": 4})],
                                   "Both done. TERMINATE"]})
    assistant = AssistantAgent("assistant", llm_config=scripted_llm_config(script))
    user = UserProxyAgent("user", human_input_mode="NEVER", code_execution_config=False, is_termination_msg=TERM)
    register_function(slow_add, caller=assistant, executor=user, description="Add two integers, slowly.")
    register_scripted_client(assistant)
    async with capture_run(db_url, config=config) as run:
        await user.a_initiate_chat(assistant, message="Add both pairs.", max_turns=3)
    events = await events_of(db_session, run.run_id)
    tools = sorted((e for e in events if e.event_type == "tool_call"), key=lambda e: e.inputs["arguments"]["a"])
    assert [(t.inputs["arguments"], t.outputs["result"]) for t in tools] == [({"a": 1, "b": 2}, "3"),
                                                                             ({"a": 3, "b": 4}, "7")]
    user_calls = {e.id for e in events if e.event_type == "agent_call" and e.agent_name == "user"
                  and e.event_subtype != "message"}
    assert all(t.parent_event_id in user_calls and t.meta["success"] and t.duration_ms > 0 for t in tools)


def test_agent_llm_config_is_stored_as_a_plain_dict_made_at_first_sight() -> None:
    """AG2's own LLMConfig becomes its model_dump() dict at capture (else the writer would fill its cell
    on the worker thread); a user's own object is left alone."""
    from cmbagent_events.integrations.ag2_classic.agents import plain_config

    agent = ConversableAgent("planner", llm_config=scripted_llm_config(Script(fallback="ok")),
                             human_input_mode="NEVER")
    config = plain_config(agent.llm_config)
    assert type(config) is dict and config["config_list"][0]["model"] == "scripted"

    class Mine:
        pass

    mine = Mine()
    assert plain_config(mine) is mine


def _fit_spectrum(data: str) -> str:  # a helper deep inside a reply function: the traceback must name it
    raise ValueError(f"cannot fit {data!r}: no multipoles")  # RAISED_HERE


async def test_an_error_in_a_reply_function_is_one_event_with_its_traceback(db_url, db_session, config) -> None:
    """The exception crosses the reply hook, generate_reply, the chat and capture_run: it is recorded
    once (it was recorded by the hook and again by capture_run), with a traceback that names the
    function's file and line."""
    analyst = ConversableAgent("analyst", llm_config=False, human_input_mode="NEVER")
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER")

    def reply(recipient, messages=None, sender=None, config=None):
        return True, _fit_spectrum("cmb_tt_spectrum.csv")

    analyst.register_reply([ConversableAgent, None], reply, position=0)
    with pytest.raises(ValueError, match="no multipoles"):
        async with capture_run(db_url, config=config) as run:
            user.initiate_chat(analyst, message="fit it", max_turns=1)
    errors = await events_of(db_session, run.run_id, "error")
    assert len(errors) == 1, [(e.agent_name, e.error_message) for e in errors]
    traceback_text = errors[0].meta["traceback"]
    raise_line = next(i for i, line in enumerate(Path(__file__).read_text().splitlines(), 1)
                      if line.endswith("# RAISED_HERE"))
    assert f'File "{__file__}", line {raise_line}, in _fit_spectrum' in traceback_text
    assert traceback_text.rstrip().endswith("ValueError: cannot fit 'cmb_tt_spectrum.csv': no multipoles")
    assert errors[0].agent_name == "analyst" and errors[0].event_subtype == "ValueError"
    assert (await db_session.get(WorkflowRun, run.run_id)).status == "failed"


def _camb_lmax(lmax: int) -> int:  # deep inside a tool: AG2 catches what it raises, the traceback names it
    raise ValueError(f"lmax {lmax} is beyond the data")


def spectrum(lmax: int) -> int:
    """Compute the spectrum up to lmax."""
    return _camb_lmax(lmax)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_a_tool_that_raises_is_recorded_with_its_traceback(db_url, db_session, config, use_async: bool) -> None:
    script = Script({"assistant": [ToolCall("spectrum", {"lmax": 9000}), "It failed. TERMINATE"]})
    assistant = AssistantAgent("assistant", llm_config=scripted_llm_config(script))
    user = UserProxyAgent("user", human_input_mode="NEVER", code_execution_config=False, is_termination_msg=TERM)
    register_function(spectrum, caller=assistant, executor=user, description="Compute the spectrum.")
    register_scripted_client(assistant)
    registered = user._function_map["spectrum"]
    async with capture_run(db_url, config=config) as run:
        if use_async:
            await user.a_initiate_chat(assistant, message="Spectrum to 9000?", max_turns=3)
        else:
            user.initiate_chat(assistant, message="Spectrum to 9000?", max_turns=3)
    assert user._function_map["spectrum"] is registered  # our wrapper is gone once the call ended
    events = await events_of(db_session, run.run_id)
    (tool,) = [e for e in events if e.event_type == "tool_call"]
    assert tool.meta["success"] is False and "lmax 9000 is beyond the data" in tool.outputs["result"]
    assert tool.status == "failed" and tool.error_message == tool.outputs["result"]  # on its own row too
    (error,) = [e for e in events if e.event_type == "error"]  # the tool's exception, once
    assert error.event_subtype == "ValueError" and error.meta["where"] == "tool"
    assert error.meta["tool_name"] == "spectrum" and error.parent_event_id == tool.parent_event_id
    raise_line = inspect.getsourcelines(_camb_lmax)[1] + 1
    assert f'File "{__file__}", line {raise_line}, in _camb_lmax' in error.meta["traceback"]


async def test_the_real_openai_client_is_stored_as_the_server_received_it(db_url, config) -> None:
    """AG2's own OpenAI client against the fake model server: each stored request is what the server
    received and each stored response what it sent, message for message, a tool call's round trip
    included."""
    pytest.importorskip("openai")  # installed in every flavour target: a skip fails there (conftest)
    from cmbagent_events.testing.fake_openai import FakeOpenAI

    with FakeOpenAI(text_suffix=" TERMINATE") as fake:
        llm_config = {"config_list": [{"model": "gpt-4o-mini", "api_key": "sk-fake-key-for-the-local-fake",
                                       "base_url": fake.base_url}]}
        assistant = AssistantAgent("assistant", llm_config=llm_config)
        user = UserProxyAgent("user", human_input_mode="NEVER", code_execution_config=False, is_termination_msg=TERM)
        register_function(add, caller=assistant, executor=user, description="Add two integers.")
        async with capture_run(db_url, config=config) as run:
            user.initiate_chat(assistant, message="What is 2+3?", max_turns=3)
        requests, replies = list(fake.requests), list(fake.replies)
    async with open_async_store(db_url) as store:
        calls = await store.llm_calls(run.run_id)
    assert len(calls) == len(requests) == 2 and replies[0]["tool_calls"]  # a tool call, then its answer
    for call, request, reply in zip(calls, requests, replies):
        assert call["request"]["messages"] == request["messages"]
        assert call["request"]["tools"] == request["tools"] and call["request"]["model"] == request["model"]
        message = call["response"]["choices"][0]["message"]
        assert message["content"] == reply.get("content")
        assert [c["function"] for c in message.get("tool_calls") or []] == \
            [c["function"] for c in reply.get("tool_calls") or []]
        assert call["replayable"]
    assert calls[1]["request"]["messages"][-1]["role"] == "tool"
