"""The capturing middleware AG2 1.x runs on every agent turn: agent calls, model calls, tools, human input."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import weakref
from typing import Any

from ...captor import captor_for
from ...capture import EventCaptureManager
from .common import CARRY_KEY, Carry, record_error, usable
from .values import config_summary, response_value, result_value, text_of, tokens, tool_arguments

log = logging.getLogger("cmbagent_events.ag2_v1")

_perf = time.perf_counter
_AGENT_KEY = "__ag2_agent__"  # ag2.utils.AGENT_CONTEXT_DEPENDENCY_KEY: the Agent a context belongs to

# The tool call running in this task (tool calls run on tasks of their own): an agent started by a
# tool (``as_tool``, a sub-task, a direct ``ask``) records which call started it.
_tool_call: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "cmbagent_events_ag2_tool_call", default=None)


def _base_middleware() -> type:
    from ag2.middleware import BaseMiddleware

    return BaseMiddleware


class CaptureMiddlewareFactory:
    """``middleware=[capture_middleware()]``: builds one capturing middleware per turn.

    ``run`` pins every turn to one run; without it the turn's run is found when the turn starts (the
    caller's carried run, else the current captor). ``agent`` names the agent when the hooks add the
    factory (the context's agent is used otherwise).
    """

    def __init__(self, run: EventCaptureManager | None = None, *, agent: Any = None) -> None:
        self._run = weakref.ref(run) if run is not None else None
        self._agent = agent

    def describe(self) -> Any:  # AG2's Agent.middleware introspection
        from ag2.middleware import MiddlewareDescription

        return MiddlewareDescription(kind=type(self).__qualname__, config={})

    def __call__(self, event: Any, context: Any) -> Any:
        deps = getattr(context, "dependencies", None)
        carry = deps.get(CARRY_KEY) if deps is not None else None
        agent = self._agent if self._agent is not None else (deps.get(_AGENT_KEY) if deps is not None else None)
        captor = None
        if self._run is not None:
            captor = usable(self._run())
        elif carry is not None:
            captor = usable(carry.run())
        if captor is None and self._run is None:
            captor = captor_for(agent)  # the context's run (binding the agent), else the agent's last run
        if captor is None:
            return _base_middleware()(event, context)
        return _middleware_class()(event, context, captor, agent, carry)


_middleware_cls: type | None = None
_middleware_lock = threading.Lock()


def _middleware_class() -> type:
    """The capturing middleware class, built on first use (so importing this module never imports ag2)."""
    global _middleware_cls
    if _middleware_cls is None:
        with _middleware_lock:
            if _middleware_cls is None:
                _middleware_cls = _build_middleware_class()
    return _middleware_cls


def _build_middleware_class() -> type:
    from ag2.events import ToolErrorEvent, ToolResultEvent

    base = _base_middleware()

    class CaptureMiddleware(base):  # type: ignore[misc, valid-type]
        """One turn of one agent, captured into one run (see the package doc)."""

        def __init__(self, event: Any, context: Any, captor: EventCaptureManager, agent: Any,
                     carry: Carry | None) -> None:
            super().__init__(event, context)
            self.captor = captor
            self.agent_name = getattr(agent, "name", None) or "agent"
            self.agent = agent
            self.carry = carry
            self.call_id: str | None = None
            self.stack: tuple[str, ...] = ()

        # Nesting: on a task that lost the turn's contextvars, events are parented explicitly.
        def _enter(self) -> tuple[str, ...] | None:
            captor = self.captor
            current = captor.event_stack()
            if current == self.stack:
                return None
            captor.adopt_stack(self.stack)
            return current

        def _turn_meta(self, context: Any) -> dict[str, Any]:
            captor = self.captor
            meta: dict[str, Any] = {"framework": "ag2"}
            stream = getattr(context, "stream", None)
            if stream is not None:
                meta["stream_id"] = str(getattr(stream, "id", ""))
            tool = _tool_call.get()
            if tool is not None:
                meta["via_tool"], meta["tool_call_id"] = tool
            agent = self.agent
            if agent is not None and captor.first_sight(agent):  # the agent's configuration once per run
                meta["agent_class"] = type(agent).__name__
                config = getattr(agent, "config", None)
                if config is not None:
                    meta["config"] = config_summary(config)
            return meta

        async def on_turn(self, call_next: Any, event: Any, context: Any) -> Any:
            captor = self.captor
            try:
                carry = self.carry
                previous = None
                if carry is not None and captor.event_stack() != carry.stack:
                    previous = captor.event_stack()
                    captor.adopt_stack(carry.stack)  # the caller's nesting, carried across a lost context
                self.call_id = captor.capture_agent_call(self.agent_name, text_of(event), None,
                                                         self._turn_meta(context))
                self.stack = captor.event_stack()
                deps = context.dependencies
                own = Carry(captor.ref, self.stack)
                outer = deps.get(CARRY_KEY, None)
                deps[CARRY_KEY] = own
            except Exception:
                log.debug("cmbagent-events: turn start capture failed", exc_info=True)
                return await call_next(event, context)
            try:
                response = await call_next(event, context)
            except BaseException as exc:
                self._end_turn(context, own, outer, previous, error=exc)
                raise
            self._end_turn(context, own, outer, previous, response=response)
            return response

        def _end_turn(self, context: Any, own: Carry, outer: Any, previous: tuple[str, ...] | None,
                      response: Any = None, error: BaseException | None = None) -> None:
            captor = self.captor
            try:
                deps = context.dependencies
                if deps.get(CARRY_KEY) is own:
                    if outer is None:
                        deps.pop(CARRY_KEY, None)
                    else:
                        deps[CARRY_KEY] = outer
                if self.call_id is not None:
                    if error is not None:
                        if isinstance(error, Exception):
                            record_error(captor, self.agent_name, error, "turn")
                        captor.finish_agent_call(self.call_id, error=error)
                    else:
                        captor.finish_agent_call(self.call_id, response=response_value(response))
                if previous is not None:
                    captor.adopt_stack(previous)
            except Exception:
                log.debug("cmbagent-events: turn end capture failed", exc_info=True)

        async def on_llm_call(self, call_next: Any, events: Any, context: Any) -> Any:
            started = _perf()
            try:
                response = await call_next(events, context)
            except BaseException as exc:
                if isinstance(exc, Exception):
                    previous = self._enter()
                    record_error(self.captor, self.agent_name, exc, "llm_call")
                    if previous is not None:
                        self.captor.adopt_stack(previous)
                raise
            try:
                duration = (_perf() - started) * 1000.0
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
                self.captor.capture_llm_call(
                    self.agent_name, model, tokens(usage.prompt_tokens), tokens(usage.completion_tokens),
                    tokens(usage.total_tokens), cost if isinstance(cost, (int, float)) else None, duration, meta)
                if previous is not None:
                    self.captor.adopt_stack(previous)
            except Exception:
                log.debug("cmbagent-events: llm capture failed", exc_info=True)
            return response

        async def on_tool_execution(self, call_next: Any, event: Any, context: Any) -> Any:
            token = _tool_call.set((event.name, event.id))
            previous = self._enter()
            started = _perf()
            try:
                result = await call_next(event, context)
            except BaseException as exc:
                self._tool_event(event, started, None, exc)
                raise
            else:
                self._tool_event(event, started, result, None)
            finally:
                if previous is not None:
                    self.captor.adopt_stack(previous)
                _tool_call.reset(token)
            return result

        def _tool_event(self, event: Any, started: float, result: Any, exc: BaseException | None) -> None:
            try:
                meta: dict[str, Any] = {"call_id": event.id, "duration_ms": (_perf() - started) * 1000.0,
                                        "framework": "ag2"}
                if exc is not None:
                    value: Any = f"{type(exc).__name__}: {exc}"
                    meta["success"] = False
                    meta["error_type"] = type(exc).__name__
                    if isinstance(exc, Exception):
                        record_error(self.captor, self.agent_name, exc, "tool_execution")
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
                self.captor.capture_tool_call(self.agent_name, event.name, tool_arguments(event.arguments), value, meta)
            except Exception:
                log.debug("cmbagent-events: tool capture failed", exc_info=True)

        async def on_human_input(self, call_next: Any, event: Any, context: Any) -> Any:
            started = _perf()
            previous = self._enter()
            try:
                message = await call_next(event, context)
            except BaseException as exc:
                if isinstance(exc, Exception):
                    record_error(self.captor, self.agent_name, exc, "human_input")
                if previous is not None:
                    self.captor.adopt_stack(previous)
                raise
            try:
                self.captor.capture_event(
                    "human_input", "response", self.agent_name, {"prompt": getattr(event, "content", None)},
                    {"response": getattr(message, "content", None)}, (_perf() - started) * 1000.0,
                    {"request_id": getattr(event, "id", None), "framework": "ag2"})
            except Exception:
                log.debug("cmbagent-events: human input capture failed", exc_info=True)
            if previous is not None:
                self.captor.adopt_stack(previous)
            return message

    return CaptureMiddleware


def capture_middleware(run: EventCaptureManager | None = None) -> CaptureMiddlewareFactory:
    """A middleware factory for ``Agent(..., middleware=[capture_middleware()])`` (or ``ask(middleware=...)``).

    With ``run``, every turn goes to that run; without, to the run current when the turn starts.
    Turns inside ``capture_run(hooks=True)`` are already captured: the hooks skip agents that carry
    this factory, so nothing is recorded twice.
    """
    return CaptureMiddlewareFactory(run)
