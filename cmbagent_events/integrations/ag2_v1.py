"""AG2 1.x (the ``ag2`` package, ``import ag2``, ``ag2>=1,<2``): capture through its middleware and hub listeners.

AG2 1.x has no ``autogen`` module and no class-level reply machinery to patch: every turn of an
``ag2.Agent`` (``ask``, ``run`` / ``AgentRun``, ``resume``, continuations, sub-tasks, agents used as
tools, hub turns) goes through ``Agent._drive_scope``, which instantiates the turn's middleware. We
add one middleware there; its hooks are AG2's own, awaited in order on the turn's tasks:

- ``on_turn``: an ``agent_call`` row (start, then complete or error), nested under the caller's
  open call (an agent used as a tool or a sub-task nests under the agent that called it);
- ``on_llm_call``: an ``llm_call`` row (model, provider, tokens from ``Usage``, cost when the
  response carries one, duration); a failing call is an ``error`` event;
- ``on_tool_execution``: a ``tool_call`` row (arguments, result, duration; a tool that raised is a
  failed row with the error);
- ``on_human_input``: a ``human_input`` row (prompt, answer, how long the human took).

Observers are not used: sync observer callbacks run on worker threads and arrive out of order.

Hubs (``ag2.network``): a listener turns each substantive envelope (text or packet) into a
``message`` and, when the channel names the next speaker, a ``handoff`` whose reason is the
packet's routing reason (a ``Handoff`` return or a routing tool) or the channel's transition.
Turn failures the hub reports become ``error`` events unless the turn already recorded them.

Attaching: inside ``capture_run(hooks=True)`` the patches on ``Agent._drive_scope``, ``Hub._fan_out``,
``CodeAdapter.run`` and ``LocalSandbox.exec`` are installed, reference counted across runs and
removed exactly on the last release. Without hooks, ``capture_middleware()`` goes in an agent's
``middleware=[...]`` and ``capture_hub(hub)`` registers the listener on one hub.

Which run: each middleware instance holds the run it was built for: the one passed explicitly, else
the calling turn's (carried in ``context.dependencies``, which AG2 copies into sub-tasks and agents
used as tools), else ``captor_for(agent)`` (the context's run, else the run the agent was last seen
in, else the process-wide one). Its nesting is carried the same way, so a turn whose task lost the
contextvars still lands under its caller in its own run.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..captor import captor_for, get_event_captor
from ..capture import EventCaptureManager
from .ag2_classic.code import (  # flavour-neutral file helpers (no autogen import)
    file_type_for,
    snapshot,
)
from .patching import Gate, PatchSet, gated

log = logging.getLogger("cmbagent_events.ag2_v1")

_perf = time.perf_counter
CARRY_KEY = "cmbagent_events.carry"  # context.dependencies key: (run weakref, open-call stack) of the caller
_AGENT_KEY = "__ag2_agent__"  # ag2.utils.AGENT_CONTEXT_DEPENDENCY_KEY: the Agent a context belongs to
_MARK_ATTR = "__cmbagent_events_captured__"  # set on exceptions already recorded as error events


# -- helpers: names, text, results --------------------------------------------------------------
def _text_of(event: Any) -> Any:
    """What a turn was asked: the request's text parts, or a short description of other triggers."""
    parts = getattr(event, "parts", None)
    if parts is not None:
        texts = [c if isinstance(c := getattr(p, "content", None), str) else None for p in parts]
        if all(t is not None for t in texts):
            return "\n".join(t for t in texts if t is not None)
        return [t if t is not None else type(p).__name__ for t, p in zip(texts, parts)]  # images, files...
    results = getattr(event, "results", None)
    if results is not None:  # a ToolResultsEvent (resume from a trajectory)
        return {"tool_results": [_result_value(getattr(r, "result", None)) for r in results]}
    return type(event).__name__


def _part_value(part: Any) -> Any:
    for attr in ("content", "data", "url"):
        if hasattr(part, attr):
            return getattr(part, attr)
    return repr(part)


def _result_value(result: Any) -> Any:
    """A ToolResult's value: the one part's text/data, or the list of them."""
    parts = getattr(result, "parts", None)
    if parts is None:
        return result
    values = [_part_value(p) for p in parts]
    return values[0] if len(values) == 1 else values


def _response_value(response: Any) -> Any:
    """A ModelResponse as stored: its text, or the tool calls it asks for."""
    content = getattr(response, "content", None)
    calls = getattr(getattr(response, "tool_calls", None), "calls", None)
    if calls:
        listed = [{"name": c.name, "arguments": c.arguments} for c in calls]
        return {"content": content, "tool_calls": listed} if content else {"tool_calls": listed}
    return content


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw  # stored as the raw string the model produced
    return raw


def _tokens(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


def _mark(exc: BaseException) -> bool:
    """Mark ``exc`` as recorded; False when it already was (an inner hook recorded it)."""
    if getattr(exc, _MARK_ATTR, False):
        return False
    try:
        setattr(exc, _MARK_ATTR, True)
    except (AttributeError, TypeError):
        pass
    return True


def _record_error(captor: EventCaptureManager, agent_name: str | None, exc: BaseException, where: str) -> None:
    try:
        if _mark(exc):
            captor.capture_error(agent_name or where, str(exc) or type(exc).__name__, type(exc).__name__,
                                 {"where": where, "framework": "ag2"})
    except Exception:
        log.debug("cmbagent-events: could not record error", exc_info=True)


def _usable(captor: EventCaptureManager | None) -> EventCaptureManager | None:
    return captor if captor is not None and captor.enabled else None


class _Carry:
    """What a turn hands to the turns it starts (sub-tasks, agents used as tools): its run and nesting."""

    __slots__ = ("run", "stack")

    def __init__(self, run: weakref.ref[EventCaptureManager], stack: tuple[str, ...]) -> None:
        self.run = run
        self.stack = stack


# The tool call running in this task (tool calls run on tasks of their own): an agent started by a
# tool (``as_tool``, a sub-task, a direct ``ask``) records which call started it.
_tool_call: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "cmbagent_events_ag2_tool_call", default=None)


# -- the middleware --------------------------------------------------------------------------------
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
            captor = _usable(self._run())
        elif carry is not None:
            captor = _usable(carry.run())
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
        """One turn of one agent, captured into one run (see the module doc)."""

        def __init__(self, event: Any, context: Any, captor: EventCaptureManager, agent: Any,
                     carry: _Carry | None) -> None:
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
                    meta["config"] = _config_summary(config)
            return meta

        async def on_turn(self, call_next: Any, event: Any, context: Any) -> Any:
            captor = self.captor
            try:
                carry = self.carry
                previous = None
                if carry is not None and captor.event_stack() != carry.stack:
                    previous = captor.event_stack()
                    captor.adopt_stack(carry.stack)  # the caller's nesting, carried across a lost context
                self.call_id = captor.capture_agent_call(self.agent_name, _text_of(event), None,
                                                         self._turn_meta(context))
                self.stack = captor.event_stack()
                deps = context.dependencies
                own = _Carry(captor.ref, self.stack)
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

        def _end_turn(self, context: Any, own: _Carry, outer: Any, previous: tuple[str, ...] | None,
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
                            _record_error(captor, self.agent_name, error, "turn")
                        captor.finish_agent_call(self.call_id, error=error)
                    else:
                        captor.finish_agent_call(self.call_id, response=_response_value(response))
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
                    _record_error(self.captor, self.agent_name, exc, "llm_call")
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
                    self.agent_name, model, _tokens(usage.prompt_tokens), _tokens(usage.completion_tokens),
                    _tokens(usage.total_tokens), cost if isinstance(cost, (int, float)) else None, duration, meta)
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
                        _record_error(self.captor, self.agent_name, exc, "tool_execution")
                elif isinstance(result, ToolErrorEvent):
                    error = result.error
                    value = f"{type(error).__name__}: {error}"
                    meta["success"] = False
                    meta["error_type"] = type(error).__name__
                elif isinstance(result, ToolResultEvent):
                    value = _result_value(result.result)
                    meta["success"] = True
                else:  # ClientToolCallEvent: the caller's client runs it
                    value = None
                    meta["success"] = True
                    meta["client_side"] = True
                self.captor.capture_tool_call(self.agent_name, event.name, _arguments(event.arguments), value, meta)
            except Exception:
                log.debug("cmbagent-events: tool capture failed", exc_info=True)

        async def on_human_input(self, call_next: Any, event: Any, context: Any) -> Any:
            started = _perf()
            previous = self._enter()
            try:
                message = await call_next(event, context)
            except BaseException as exc:
                if isinstance(exc, Exception):
                    _record_error(self.captor, self.agent_name, exc, "human_input")
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


def _config_summary(config: Any) -> dict[str, Any]:
    """A model config as stored: class, provider and model (scripted configs raise on the last two)."""
    summary: dict[str, Any] = {"class": type(config).__name__}
    for attr in ("provider", "model"):
        try:
            value = getattr(config, attr)
        except (NotImplementedError, AttributeError):  # ag2.testing.TestConfig has neither
            continue
        summary[attr] = value if isinstance(value, str) else str(value)
    return summary


def capture_middleware(run: EventCaptureManager | None = None) -> CaptureMiddlewareFactory:
    """A middleware factory for ``Agent(..., middleware=[capture_middleware()])`` (or ``ask(middleware=...)``).

    With ``run``, every turn goes to that run; without, to the run current when the turn starts.
    Turns inside ``capture_run(hooks=True)`` are already captured: the hooks skip agents that carry
    this factory, so nothing is recorded twice.
    """
    return CaptureMiddlewareFactory(run)


# -- hubs ------------------------------------------------------------------------------------------
_SUBSTANTIVE = ("ag2.msg.text", "ag2.packet")


class CaptureHubListener:
    """A ``HubListener`` for one hub: messages, handoffs with their reason, and turn failures.

    ``hub.register_listener(CaptureHubListener(hub))``, or :func:`capture_hub`. Listener calls run
    on the posting agent's task; the run is ``run`` when given, else the current captor.
    """

    def __init__(self, hub: Any, run: EventCaptureManager | None = None) -> None:
        self._hub = weakref.ref(hub)
        self._run = weakref.ref(run) if run is not None else None

    def _captor(self) -> EventCaptureManager | None:
        if self._run is not None:
            return _usable(self._run())
        return _usable(get_event_captor())

    async def on_envelope_posted(self, envelope: Any, metadata: Any) -> None:
        if envelope.event_type not in _SUBSTANTIVE:
            return
        captor = self._captor()
        hub = self._hub()
        if captor is None or hub is None:
            return
        try:
            _capture_envelope(captor, hub, envelope)
        except Exception:
            log.debug("cmbagent-events: hub envelope capture failed", exc_info=True)

    async def on_turn_failed(self, channel_id: str, agent_id: str, envelope_id: str, exc: BaseException) -> None:
        captor = self._captor()
        hub = self._hub()
        if captor is None or hub is None:
            return
        try:
            if _mark(exc):
                captor.capture_error(hub.name_for(agent_id), str(exc) or type(exc).__name__, type(exc).__name__,
                                     {"where": "hub_turn", "channel_id": channel_id, "envelope_id": envelope_id,
                                      "framework": "ag2"})
        except Exception:
            log.debug("cmbagent-events: hub turn failure capture failed", exc_info=True)


def _capture_envelope(captor: EventCaptureManager, hub: Any, envelope: Any) -> None:
    """One substantive envelope: a message, and a handoff when the channel says who speaks next."""
    data = envelope.event_data or {}
    sender = hub.name_for(envelope.sender_id)
    routing = data.get("routing") or {} if isinstance(data, dict) else {}
    content = data.get("text", data.get("body")) if isinstance(data, dict) else data
    next_id = routing.get("target") if routing.get("kind") == "handoff" else None
    if next_id is None:
        state = hub.adapter_state(envelope.channel_id)
        next_id = getattr(state, "expected_next_speaker", None)
    if next_id is None and envelope.audience and len(envelope.audience) == 1:
        next_id = envelope.audience[0]
    recipient = hub.name_for(next_id) if next_id else f"channel:{envelope.channel_id}"
    meta = {"channel_id": envelope.channel_id, "envelope_id": envelope.envelope_id, "framework": "ag2"}
    captor.capture_message(sender, recipient, content, None, meta)
    if next_id is None or (next_id == envelope.sender_id and routing.get("kind") != "handoff"):
        return
    kind = routing.get("kind") or "text"
    reason = routing.get("reason") or (f"tool {routing['tool']}" if routing.get("tool") else
                                       ("handoff" if kind == "handoff" else "transition"))
    context = {"channel_id": envelope.channel_id, "envelope_id": envelope.envelope_id, "routing": kind,
               "event_type": envelope.event_type}
    if routing.get("tool"):
        context["tool"] = routing["tool"]
    captor.capture_handoff(sender, hub.name_for(next_id), context, reason)


def capture_hub(hub: Any, run: EventCaptureManager | None = None) -> CaptureHubListener:
    """Register a :class:`CaptureHubListener` on ``hub`` and return it (``hub.unregister_listener`` removes it)."""
    listener = CaptureHubListener(hub, run)
    hub.register_listener(listener)
    return listener


# -- code execution and files ------------------------------------------------------------------------
# Code run by AG2 1.x's code tool (SandboxCodeTool -> CodeAdapter.run) is a code_exec event; files the
# run creates or changes in a LocalSandbox's work dir are file_gen events linked to it. AG2 writes each
# snippet to ag2_<32 hex>.<ext> in the work dir and removes it after: not the run's file.
_AG2_SNIPPET = re.compile(r"ag2_[0-9a-f]{32}\.\w+$")
_pending_files: contextvars.ContextVar[list[tuple[str, str, int, bool]] | None] = contextvars.ContextVar(
    "cmbagent_events_ag2_pending_files", default=None)


def _code_target(context: Any) -> tuple[EventCaptureManager | None, tuple[str, ...] | None]:
    """The run and nesting of code run from a tool: the calling turn's carry, else the current captor."""
    deps = getattr(context, "dependencies", None)
    carry = deps.get(CARRY_KEY) if deps is not None else None
    if carry is not None:
        captor = _usable(carry.run())
        if captor is not None:
            return captor, carry.stack
    return _usable(get_event_captor()), None


def _changed_files(before: dict[str, tuple[int, int]], work_dir: Any) -> list[tuple[str, str, int, bool]]:
    """(path, file type, size, created) for files the command created or changed under ``work_dir``."""
    after = snapshot(work_dir) or {}
    root = Path(str(work_dir)).resolve()
    found = []
    for path, stamp in sorted(after.items()):
        if before.get(path) == stamp or _AG2_SNIPPET.search(os.path.basename(path)):
            continue
        resolved = Path(path).resolve()
        if root in resolved.parents:  # symlinked or escaping paths are not the run's files
            found.append((str(resolved), file_type_for(path), stamp[1], path not in before))
    return found


def _emit_files(captor: EventCaptureManager, agent_name: str | None, files: list[tuple[str, str, int, bool]],
                code_exec_id: str | None) -> None:
    for path, file_type, size, created in files:
        captor.capture_file_generation(agent_name or "code_executor", path, file_type, size,
                                       {"created": created, "code_exec_id": code_exec_id, "framework": "ag2"})


def _patch_code(patches: PatchSet, adapter_cls: Any, sandbox_cls: Any) -> None:
    run_original = adapter_cls.run

    run_gate = Gate()

    async def run(self: Any, code: Any, language: Any, *, context: Any = None) -> Any:
        captor, stack = _code_target(context) if run_gate.on else (None, None)
        if captor is None:
            return await run_original(self, code, language, context=context)
        files: list[tuple[str, str, int, bool]] = []
        token = _pending_files.set(files)
        previous = None
        if stack is not None and captor.event_stack() != stack:
            previous = captor.event_stack()
            captor.adopt_stack(stack)
        agent_name = captor.open_call_agent(captor.current_parent())
        started = _perf()
        try:
            result = await run_original(self, code, language, context=context)
        except BaseException as exc:
            if isinstance(exc, Exception):
                _record_error(captor, agent_name, exc, "code_run")
            raise
        else:
            try:
                event_id = captor.capture_code_execution(
                    agent_name or "code_executor", code, str(language), getattr(result, "output", None),
                    getattr(result, "exit_code", None), (_perf() - started) * 1000.0,
                    {"executor": type(self).__name__, "framework": "ag2"})
                _emit_files(captor, agent_name, files, event_id)
            except Exception:
                log.debug("cmbagent-events: code capture failed", exc_info=True)
            return result
        finally:
            _pending_files.reset(token)
            if previous is not None:
                captor.adopt_stack(previous)

    functools.update_wrapper(run, run_original)
    patches.patch(adapter_cls, "run", gated(run, run_gate))

    exec_original = sandbox_cls.exec

    exec_gate = Gate()

    async def exec_(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not exec_gate.on:  # removed while another library's patch covered ours: a pass-through
            return await exec_original(self, *args, **kwargs)
        captor = _usable(get_event_captor())
        pending = _pending_files.get()
        if (captor is None and pending is None) or (captor is not None and not captor.captures("file_gen")):
            return await exec_original(self, *args, **kwargs)
        try:
            root = self.host_workdir
            before = snapshot(root) or {}
        except (OSError, AttributeError):
            return await exec_original(self, *args, **kwargs)
        result = await exec_original(self, *args, **kwargs)
        try:
            changed = _changed_files(before, root)
            if pending is not None:
                pending.extend(changed)  # emitted after the code_exec they belong to
            elif captor is not None and changed:
                _emit_files(captor, captor.open_call_agent(captor.current_parent()), changed, None)
        except Exception:
            log.debug("cmbagent-events: file capture failed", exc_info=True)
        return result

    functools.update_wrapper(exec_, exec_original)
    patches.patch(sandbox_cls, "exec", gated(exec_, exec_gate))


# -- install / uninstall --------------------------------------------------------------------------
_hub_listeners: weakref.WeakKeyDictionary[Any, CaptureHubListener] = weakref.WeakKeyDictionary()


def _carries_capture(factories: Any) -> bool:
    return any(isinstance(f, CaptureMiddlewareFactory) for f in factories)


def _patch_agent(patches: PatchSet, agent_cls: Any) -> None:
    original = agent_cls._drive_scope

    gate = Gate()

    def _drive_scope(self: Any, event: Any, *, additional_middleware: Any = (), **kwargs: Any) -> Any:
        if not gate.on:  # removed while another library's patch covered ours: a pass-through
            return original(self, event, additional_middleware=additional_middleware, **kwargs)
        try:
            if not _carries_capture(self._middleware) and not _carries_capture(additional_middleware):
                additional_middleware = (CaptureMiddlewareFactory(agent=self), *additional_middleware)
        except Exception:
            log.debug("cmbagent-events: could not add the capture middleware", exc_info=True)
        return original(self, event, additional_middleware=additional_middleware, **kwargs)

    functools.update_wrapper(_drive_scope, original)
    patches.patch(agent_cls, "_drive_scope", gated(_drive_scope, gate))


def _listener_for(hub: Any) -> CaptureHubListener:
    listener = _hub_listeners.get(hub)
    if listener is None:
        listener = _hub_listeners[hub] = CaptureHubListener(hub)
    return listener


def _patch_hub(patches: PatchSet, hub_cls: Any) -> None:
    original = hub_cls._fan_out

    gate = Gate()

    async def _fan_out(self: Any, method_name: str, *args: Any) -> None:
        await original(self, method_name, *args)
        if not gate.on or method_name not in ("on_envelope_posted", "on_turn_failed"):
            return
        if any(isinstance(listener, CaptureHubListener) for listener in self._listeners):
            return  # the user registered one: it already ran
        try:
            await getattr(_listener_for(self), method_name)(*args)
        except Exception:
            log.debug("cmbagent-events: hub capture failed", exc_info=True)

    functools.update_wrapper(_fan_out, original)
    patches.patch(hub_cls, "_fan_out", gated(_fan_out, gate))


def _install(patches: PatchSet) -> None:
    from ag2.agent import Agent

    _patch_agent(patches, Agent)
    try:  # imported here (~0.3 s, once per process) so that hubs made later in the run are covered too
        from ag2.network.hub.core import Hub
    except ImportError:  # an AG2 1.x without the network package
        pass
    else:
        _patch_hub(patches, Hub)
    try:
        from ag2.tools.sandbox.adapter.code import CodeAdapter
        from ag2.tools.sandbox.local import LocalSandbox
    except ImportError:  # an AG2 1.x without the sandbox code tool
        pass
    else:
        _patch_code(patches, CodeAdapter, LocalSandbox)


PATCHES = PatchSet("AG2 1.x", _install)


def version() -> str | None:
    """The installed AG2 1.x version, or None."""
    from .flavours import v1_version

    return v1_version()


def install_hooks() -> bool:
    """Patch AG2 1.x so every agent turn and hub envelope is captured (idempotent)."""
    return PATCHES.install()


def uninstall_hooks() -> None:
    """Restore ``Agent._drive_scope`` (and ``Hub._fan_out``) exactly as they were (idempotent)."""
    PATCHES.uninstall()


def hooks_installed() -> bool:
    return PATCHES.installed


def patch_points() -> list[str]:
    """The methods currently patched, as ``Class.method``."""
    return PATCHES.points()


def acquire_hooks() -> Callable[[], None] | None:
    """Install the hooks for one run; the returned callable releases them (the last release
    uninstalls, unless :func:`install_hooks` was called explicitly)."""
    return PATCHES.acquire()
