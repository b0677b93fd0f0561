"""Agent calls (``generate_reply``), messages (``send``) and tool calls (``execute_function``),
each hooked in its sync and async form (AG2's async paths never call the sync ones)."""

from __future__ import annotations

import json
from typing import Any

from ...current_run import run_for
from ..patching import CallHook, PatchSet
from . import tool_errors
from .common import CALL_ATTR, adopt_hop_parent, arg, in_selection, patch_pair, perf, record_hop_error


def last_message(agent: Any, messages: Any, sender: Any) -> Any:
    """The message an agent is replying to (content only: AG2 mutates its message dicts later)."""
    try:
        if not messages:
            messages = agent._oai_messages.get(sender) if sender is not None else None
            if not messages:
                return None
        last = messages[-1]
        if isinstance(last, dict):
            content = last.get("content")
            for key in ("tool_calls", "tool_responses"):
                if last.get(key):  # (AG2 may have stringified an empty content to "None")
                    carried = {key: last[key]}
                    if content not in (None, "", "None"):
                        carried["content"] = content
                    return carried
            return content
        return last
    except Exception:
        return None


def plain_config(config: Any) -> Any:
    """AG2's own ``LLMConfig`` (pydantic) as the dict its ``model_dump()`` gives, made here once per
    agent and run (~4 us of AG2's code): as an object it would be a value only its own code can
    describe, and the writer would leave its cell waiting for the worker thread (a thread hop for the
    batch). Any other object (a user's class) is left for the writer, which never runs it here."""
    kind = type(config)
    if kind.__module__.startswith("autogen.") and kind.__name__ == "LLMConfig":
        try:
            return config.model_dump()
        except Exception:
            return config
    return config


# -- agent calls ------------------------------------------------------------------------------------
class GenerateReplyHook(CallHook):
    """One agent_call row per reply, open while the agent works (its children nest under it)."""

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        obj = args[0]
        run = run_for(obj)
        if run is None:
            return None
        n = len(args)
        messages = args[1] if n > 1 else kwargs.get("messages")
        sender = args[2] if n > 2 else kwargs.get("sender")
        meta: dict[str, Any] = {"sender": getattr(sender, "name", None)}
        if in_selection.get():
            meta["speaker_selection"] = True
        if run.first_sight(obj):  # the agent's configuration once per run, not on every call
            meta["agent_class"] = type(obj).__name__
            llm_config = getattr(obj, "llm_config", None)
            if llm_config:
                meta["llm_config"] = plain_config(llm_config)  # its keys redacted by the writer
        event_id = run.capture_agent_call(obj.name, last_message(obj, messages, sender), None, meta)
        d = obj.__dict__
        previous = d.get(CALL_ATTR)
        if event_id is not None:
            d[CALL_ATTR] = event_id
        return run, obj, event_id, previous

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        run, agent, event_id, previous = state
        agent.__dict__[CALL_ATTR] = previous
        if event_id is None:
            return
        if error is not None:
            run.capture_exception(agent.name, error, "generate_reply")
            run.finish_agent_call(event_id, error=error)
        else:
            run.finish_agent_call(event_id, response=result)


# -- messages -------------------------------------------------------------------------------------
class SendHook(CallHook):
    """A message row per send; a group chat manager's ``request_reply=False`` sends are broadcasts
    (relays), folded into one event per message unless ``CMBAGENT_CAPTURE_BROADCASTS=each``.

    Every message of a chat passes here (a group chat's relays several times over), so the body is
    inline: names read with ``getattr(x, "name", None)`` (what ``name_of`` does, without its frame),
    the manager test once per call from a per-class cache."""

    errors_only = True  # end() records what a send raised; nothing after a send that returned

    def __init__(self, manager_cls: type) -> None:
        self._manager_cls = manager_cls
        self._manager_types: dict[type, bool] = {}

    def _is_manager(self, cls: type) -> bool:
        """issubclass, cached: isinstance on AG2 agents goes through a slow runtime Protocol check."""
        hit = self._manager_types[cls] = issubclass(cls, self._manager_cls)
        return hit

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        obj = args[0]
        run = run_for(obj)
        if run is None:
            return None
        n = len(args)
        message = args[1] if n > 1 else kwargs.get("message")
        recipient = getattr(args[2] if n > 2 else kwargs.get("recipient"), "name", None)
        relay: bool | None = (args[3] if n > 3 else kwargs.get("request_reply")) is False
        if relay:
            cls = type(obj)
            relay = self._manager_types.get(cls)
            if relay is None:
                relay = self._is_manager(cls)
            if relay and run.extend_fold(obj.name, recipient, message):
                return run, obj  # one more member of a broadcast already being folded: nothing else to do
        if isinstance(message, dict):
            content = message.get("content")
            if content is None or message.get("tool_calls") or message.get("tool_responses"):
                content = {k: v for k, v in message.items()
                           if k in ("content", "tool_calls", "tool_responses", "function_call", "name", "role")}
        else:
            content = message
        meta = {"speaker_selection": True} if in_selection.get() else None
        if relay:  # a manager broadcast: the same message object goes to each member in turn (folded by default)
            run.capture_relay(obj.name, recipient, content, meta, message=message)
        else:
            run.capture_message(obj.name, recipient, content, None, meta)
        return run, obj

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        if error is not None:
            run, sender = state
            run.capture_exception(sender.name, error, where)


# -- tools ----------------------------------------------------------------------------------------
class ExecuteFunctionHook(CallHook):
    """A tool_call row per function the agent executes, with its arguments and result."""

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        obj = args[0]
        run = run_for(obj)
        if run is None:
            return None
        func_call = arg(args, kwargs, 1, "func_call")
        name = func_call.get("name") if isinstance(func_call, dict) else None
        put_back = tool_errors.watch(getattr(obj, "_function_map", None), name)
        holder: list[BaseException] = []
        token = tool_errors.raised.set(holder)
        return run, obj, func_call, arg(args, kwargs, 2, "call_id"), perf(), put_back, holder, token

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        run, agent, func_call, call_id, started, put_back, holder, token = state
        try:
            tool_errors.raised.reset(token)
        except ValueError:  # ended in another context (a hop): it is that context's to drop
            pass
        if put_back is not None:
            put_back()
        if error is not None:
            record_hop_error(run, agent, error, where)
            return
        name = func_call.get("name") if isinstance(func_call, dict) else None
        arguments = func_call.get("arguments") if isinstance(func_call, dict) else func_call
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                pass  # stored as the raw string the model produced
        ok, value = result if isinstance(result, tuple) and len(result) == 2 else (None, result)
        content = value.get("content") if isinstance(value, dict) else value
        meta = {"success": bool(ok), "call_id": call_id, "duration_ms": (perf() - started) * 1000.0}
        if in_selection.get():
            meta["speaker_selection"] = True
        adopted = adopt_hop_parent(run, agent)
        run.capture_tool_call(agent.name, name, arguments, result=content, metadata=meta)
        for exc in holder:  # what the tool raised, that AG2 turned into its result text
            run.capture_exception(agent.name, exc, "tool", {"tool_name": name, "call_id": call_id})
        if adopted:
            run.adopt_stack(())


def patch_agents(patches: PatchSet, agent_cls: type, manager_cls: type) -> None:
    """Hook ``ConversableAgent``'s replies, sends and tool executions (sync and async)."""
    patch_pair(patches, agent_cls, "generate_reply", GenerateReplyHook())
    patch_pair(patches, agent_cls, "send", SendHook(manager_cls))
    patch_pair(patches, agent_cls, "execute_function", ExecuteFunctionHook())
