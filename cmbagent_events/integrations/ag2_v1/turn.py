"""The capturing middleware of one AG2 1.x turn: agent calls, model calls, tools, human input.

This module imports ``ag2``: :class:`~.middleware.CaptureMiddlewareFactory` imports it on the
first captured turn, so importing cmbagent_events (or the factory) never imports ag2 (~2 s).
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

from ag2.events import ToolErrorEvent, ToolResultEvent
from ag2.middleware import BaseMiddleware

from ...capture import EventCaptureManager
from ...replay import active_replay
from ..guard import Guard
from .common import CARRY_KEY, Carry
from .values import (
    ChatCompletionOf,
    SentMessages,
    config_summary,
    model_response,
    response_value,
    result_value,
    text_of,
    tokens,
    tool_arguments,
)

perf = time.perf_counter
FRAMEWORK = {"framework": "ag2"}  # the meta of every AG2 1.x error event (copied by capture_exception)
TURN_START, TURN_END = Guard("turn start capture"), Guard("turn end capture")
LLM, TOOL, HUMAN = Guard("llm capture"), Guard("tool capture"), Guard("human input capture")

# The tool call running in this task (tool calls run on tasks of their own): an agent started by a
# tool (``as_tool``, a sub-task, a direct ``ask``) records which call started it.
tool_call: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "cmbagent_events_ag2_tool_call", default=None)


class CaptureMiddleware(BaseMiddleware):
    """One turn of one agent, captured into one run (see the package doc)."""

    def __init__(self, event: Any, context: Any, run: EventCaptureManager, agent: Any,
                 carry: Carry | None) -> None:
        super().__init__(event, context)
        self.run = run
        self.agent_name = getattr(agent, "name", None) or "agent"
        self.agent = agent
        self.carry = carry
        self.call_id: str | None = None
        self.stack: tuple[str, ...] = ()

    # Nesting: on a task that lost the turn's contextvars, events are parented explicitly.
    def _enter(self) -> tuple[str, ...] | None:
        run = self.run
        current = run.event_stack()
        if current == self.stack:
            return None
        run.adopt_stack(self.stack)
        return current

    def _turn_meta(self, context: Any) -> dict[str, Any]:
        run = self.run
        meta: dict[str, Any] = {"framework": "ag2"}
        stream = getattr(context, "stream", None)
        if stream is not None:
            meta["stream_id"] = str(getattr(stream, "id", ""))
        tool = tool_call.get()
        if tool is not None:
            meta["via_tool"], meta["tool_call_id"] = tool
        agent = self.agent
        if agent is not None and run.first_sight(agent):  # the agent's configuration once per run
            meta["agent_class"] = type(agent).__name__
            config = getattr(agent, "config", None)
            if config is not None:
                meta["config"] = config_summary(config)
        return meta

    async def on_turn(self, call_next: Any, event: Any, context: Any) -> Any:
        started = self._start_turn(event, context)
        if started is None:
            return await call_next(event, context)
        own, outer, previous = started
        try:
            response = await call_next(event, context)
        except BaseException as exc:
            self._end_turn(context, own, outer, previous, error=exc)
            raise
        self._end_turn(context, own, outer, previous, response=response)
        return response

    @TURN_START
    def _start_turn(self, event: Any, context: Any) -> tuple[Carry, Any, tuple[str, ...] | None]:
        """The agent_call opened, and this turn's run and nesting carried to the turns it starts:
        (what it carries, what was carried before, the nesting to restore)."""
        run = self.run
        carry = self.carry
        previous = None
        if carry is not None and run.event_stack() != carry.stack:
            previous = run.event_stack()
            run.adopt_stack(carry.stack)  # the caller's nesting, carried across a lost context
        self.call_id = run.capture_agent_call(self.agent_name, text_of(event), None, self._turn_meta(context))
        self.stack = run.event_stack()
        deps = context.dependencies
        own = Carry(run.ref, self.stack)
        outer = deps.get(CARRY_KEY, None)
        deps[CARRY_KEY] = own
        return own, outer, previous

    @TURN_END
    def _end_turn(self, context: Any, own: Carry, outer: Any, previous: tuple[str, ...] | None,
                  response: Any = None, error: BaseException | None = None) -> None:
        run = self.run
        deps = context.dependencies
        if deps.get(CARRY_KEY) is own:
            if outer is None:
                deps.pop(CARRY_KEY, None)
            else:
                deps[CARRY_KEY] = outer
        if self.call_id is not None:
            if error is not None:
                if isinstance(error, Exception):
                    run.capture_exception(self.agent_name, error, "turn", FRAMEWORK)
                run.finish_agent_call(self.call_id, error=error)
            else:
                run.finish_agent_call(self.call_id, response=response_value(response))
        if previous is not None:
            run.adopt_stack(previous)

    async def on_llm_call(self, call_next: Any, events: Any, context: Any) -> Any:
        started = perf()
        replayed = self._replayed(events, context)
        if replayed is not None:  # a replay is open: the recorded response, the model not called
            self._llm_event(events, context, replayed, started)
            return replayed
        try:
            response = await call_next(events, context)
        except BaseException as exc:
            if isinstance(exc, Exception):
                previous = self._enter()
                self.run.capture_exception(self.agent_name, exc, "llm_call", FRAMEWORK)
                if previous is not None:
                    self.run.adopt_stack(previous)
            raise
        self._llm_event(events, context, response, started)
        return response

    def _replayed(self, events: Any, context: Any) -> Any:
        """The recorded response when a replay is open and serves this call (None: call the model).

        Raises:
            ReplayDivergence: the call diverges from the recorded run and the replay stops there.
        """
        replayer = active_replay()
        if replayer is None:
            return None
        messages = SentMessages(events, getattr(context, "prompt", ())).model_dump()
        data = replayer.serve(self.agent, {"messages": messages}, raw=True)
        return None if data is replayer.LIVE else model_response(data)

    @LLM
    def _llm_event(self, events: Any, context: Any, response: Any, started: float) -> None:
        duration = (perf() - started) * 1000.0
        usage = response.usage
        model = response.model
        meta: dict[str, Any] = {"model": model, "provider": response.provider, "framework": "ag2"}
        if response.finish_reason:
            meta["finish_reason"] = response.finish_reason
        calls = response.tool_calls.calls
        if calls:
            meta["tool_calls"] = [c.name for c in calls]
        cost = (response.metadata or {}).get("cost")
        previous = self._enter()
        reported = isinstance(cost, (int, float)) and not isinstance(cost, bool)
        self.run.capture_llm_call(
            self.agent_name, model, tokens(usage.prompt_tokens), tokens(usage.completion_tokens),
            tokens(usage.total_tokens), cost if reported else None, duration, meta,
            request={"model": model, "messages": SentMessages(events, getattr(context, "prompt", ()))},
            response=ChatCompletionOf(response), cached_tokens=tokens(usage.cache_read_input_tokens),
            reasoning_tokens=tokens(usage.thinking_tokens), cost_source="reported" if reported else "unknown")
        if previous is not None:
            self.run.adopt_stack(previous)

    async def on_tool_execution(self, call_next: Any, event: Any, context: Any) -> Any:
        token = tool_call.set((event.name, event.id))
        previous = self._enter()
        started = perf()
        try:
            result = await call_next(event, context)
        except BaseException as exc:
            self._tool_event(event, started, None, exc)
            raise
        else:
            self._tool_event(event, started, result, None)
        finally:
            if previous is not None:
                self.run.adopt_stack(previous)
            tool_call.reset(token)
        return result

    @TOOL
    def _tool_event(self, event: Any, started: float, result: Any, exc: BaseException | None) -> None:
        meta: dict[str, Any] = {"call_id": event.id, "duration_ms": (perf() - started) * 1000.0, "framework": "ag2"}
        if exc is not None:
            value: Any = f"{type(exc).__name__}: {exc}"
            meta["success"] = False
            meta["error_type"] = type(exc).__name__
            if isinstance(exc, Exception):
                self.run.capture_exception(self.agent_name, exc, "tool_execution", FRAMEWORK)
        elif isinstance(result, ToolErrorEvent):
            error = result.error
            value = f"{type(error).__name__}: {error}"
            meta["success"] = False
            meta["error_type"] = type(error).__name__
        elif isinstance(result, ToolResultEvent):
            value = result_value(result.result)
            meta["success"] = True
        else:  # ClientToolCallEvent: the caller's client runs it
            value = None
            meta["success"] = True
            meta["client_side"] = True
        self.run.capture_tool_call(self.agent_name, event.name, tool_arguments(event.arguments), value, meta)

    async def on_human_input(self, call_next: Any, event: Any, context: Any) -> Any:
        started = perf()
        previous = self._enter()
        try:
            message = await call_next(event, context)
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.run.capture_exception(self.agent_name, exc, "human_input", FRAMEWORK)
            if previous is not None:
                self.run.adopt_stack(previous)
            raise
        self._human_event(event, message, started)
        if previous is not None:
            self.run.adopt_stack(previous)
        return message

    @HUMAN
    def _human_event(self, event: Any, message: Any, started: float) -> None:
        self.run.capture_event(
            "human_input", "response", self.agent_name, {"prompt": getattr(event, "content", None)},
            {"response": getattr(message, "content", None)}, (perf() - started) * 1000.0,
            {"request_id": getattr(event, "id", None), "framework": "ag2"})
