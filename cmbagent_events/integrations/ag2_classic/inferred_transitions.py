"""Group-pattern transitions on classic AG2 that announces none: CMBAgent's fork of ag2 0.9.1.

ag2 0.10+ sends a transition event on its IOStream for each OnCondition, OnContextCondition,
agent AfterWork and ReplyResult (groupchat.py reads them there). The fork makes the same decisions
silently, so they are inferred from the state AG2 leaves behind, with the reasons 0.14 gives:

- ReplyResult / OnCondition: ``GroupToolExecutor._generate_group_tool_reply`` sets the executor's
  next target from a tool's return; when a tool called is one of the sender's OnCondition
  functions (``transfer_to_*``) whose target it is, the reason is OnCondition, else ReplyResult;
- OnContextCondition: ``group_utils._run_oncontextconditions`` answered (it sets that next target);
- AfterWork: ``group_utils.determine_next_agent`` got to the speaker's own after-work target (the
  group-level after-work announces nothing on 0.14 either, and is not reported here).

The reason is remembered for this thread's next speaker change, as the IOStream path does.
``_run_oncontextconditions`` is looked up when an agent joins a group and the executor's reply
function when the executor is built, so the wrappers stay registered on such agents after the
hooks are removed: they then only pass through (gated, as every hook); they also pass through
while no run captures the agent.
"""

from __future__ import annotations

import inspect
from typing import Any

from ...current_run import run_for
from ..patching import CallHook, PatchSet
from .common import arg
from .groupchat import remember_transition

PATCH_POINTS = ("group_utils.determine_next_agent", "group_utils._run_oncontextconditions",
                "GroupToolExecutor._generate_group_tool_reply")


def _next_target_of(agent: Any) -> Any:
    """The group tool executor's pending next target in ``agent``'s group, if any."""
    groupchat = getattr(getattr(agent, "_group_manager", None), "groupchat", None)
    for member in getattr(groupchat, "agents", ()):
        target = getattr(member, "_group_next_target", None)
        if target is not None:
            return target
    return None


def _is_on_condition_call(message: dict[str, Any], source: Any, target: Any) -> bool:
    """A tool call in ``message`` is one of ``source``'s OnCondition functions leading to ``target``."""
    conditions = getattr(getattr(source, "handoffs", None), "llm_conditions", ()) or ()
    called = {(c.get("function") or {}).get("name") for c in message.get("tool_calls") or () if isinstance(c, dict)}
    return any(c.llm_function_name in called and c.target is target for c in conditions)


class ToolReplyHook(CallHook):
    """``GroupToolExecutor._generate_group_tool_reply(self, agent, messages, sender, config)``: a tool's
    return set the executor's next target: OnCondition or ReplyResult."""

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if run_for(args[0]) is None:
            return None
        return args[0], arg(args, kwargs, 1, "agent"), arg(args, kwargs, 2, "messages"), arg(args, kwargs, 3, "sender")

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        executor, agent, messages, sender = state
        target = getattr(executor, "_group_next_target", None)
        if error is not None or target is None:
            return
        history = messages if messages is not None else agent._oai_messages[sender]
        message = history[-1]
        source_name = message.get("name")
        groupchat = getattr(getattr(executor, "_group_manager", None), "groupchat", None)
        source = groupchat.agent_by_name(source_name) if groupchat is not None and source_name else None
        reason = "OnCondition" if _is_on_condition_call(message, source, target) else "ReplyResult"
        remember_transition(reason, source if source is not None else source_name, target)


class ContextConditionsHook(CallHook):
    """``group_utils._run_oncontextconditions(agent, ...)``: a context condition answered."""

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return args[0] if run_for(args[0]) is not None else None

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        if error is None and result and result[0]:
            remember_transition("OnContextCondition", state, _next_target_of(state))


def _after_work_source(call: inspect.BoundArguments, had_target: bool) -> Any:
    """The agent whose own after-work decided the next speaker, or None (mirrors the fork's
    determine_next_agent: initial agent, tool call, executor target, tool reply, user turn)."""
    a = call.arguments
    groupchat = a["groupchat"]
    if a["use_initial_agent"] or had_target or not groupchat.messages:
        return None
    last = groupchat.messages[-1]
    if "tool_calls" in last or last.get("role") == "tool":
        return None
    user_agent = a.get("user_agent")
    if user_agent is not None and a["last_speaker"] == user_agent:
        return user_agent if user_agent.handoffs.after_work is not None else None
    speaker = None
    executor_name = getattr(a["tool_executor"], "name", None)
    for message in reversed(groupchat.messages):  # the fork's get_last_agent_speaker
        if message.get("name") in a["group_agent_names"] and message.get("name") != executor_name:
            speaker = groupchat.agent_by_name(name=message["name"])
            break
    return speaker if speaker is not None and speaker.handoffs.after_work is not None else None


class DetermineNextAgentHook(CallHook):
    """``group_utils.determine_next_agent(...)``: the speaker's own after-work decided who is next."""

    def __init__(self, function: Any) -> None:
        self._signature = inspect.signature(function)

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = self._signature.bind(*args, **kwargs)
        if run_for(call.arguments["last_speaker"]) is None:
            return None
        return call, call.arguments["tool_executor"].has_next_target()

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        call, had_target = state
        if error is None and result is not None:
            source = _after_work_source(call, had_target)
            if source is not None:
                remember_transition("AfterWork", source, source.handoffs.after_work)


def patch_inferred_transitions(patches: PatchSet, group_utils: Any, executor_cls: type) -> None:
    """Infer the transitions of an AG2 that sends no transition events (see the module docstring)."""
    patches.patch_call(group_utils, "determine_next_agent", DetermineNextAgentHook(group_utils.determine_next_agent))
    patches.patch_call(group_utils, "_run_oncontextconditions", ContextConditionsHook())
    patches.patch_call(executor_cls, "_generate_group_tool_reply", ToolReplyHook())
