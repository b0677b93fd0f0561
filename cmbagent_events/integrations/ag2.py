"""AG2 (ag2 0.10.3 - 0.14, ``import autogen``) hooks: every agent call, message, tool call, code run,
file, speaker change, group-pattern transition, model call and error, captured automatically.

Where AG2 really does its work (see notes/ag2_hooks_survey.md, measured on both versions):

- agent calls: ``ConversableAgent.generate_reply`` / ``a_generate_reply`` (one agent_call row each);
- messages: ``send`` / ``a_send`` (the async path never calls the sync one); a manager's
  ``request_reply=False`` sends are broadcasts and are marked ``broadcast`` in meta;
- tools: ``execute_function`` / ``a_execute_function``;
- code: a code executor's ``execute_code_blocks`` (new-style executors) and ``run_code`` (legacy);
  files created or changed in the work_dir become file_gen events (``tmp_code_*`` excluded);
- speaker changes: ``GroupChat.select_speaker`` / ``a_select_speaker``; events inside them (the
  "auto" method's hidden inner chat) are marked ``speaker_selection``;
- group-pattern transitions (OnCondition, OnContextCondition, AfterWork, ReplyResult): AG2 sends
  them through ``IOStream.get_default().send``; the streams it hands out are instrumented once,
  and the transition becomes the reason of the next speaker change on that thread;
- model calls: ``OpenAIWrapper.create(..., agent=...)``, with tokens and cost.

The hooks only patch classes (methods AG2 looks up at call time, so agents built before
installation are covered), keep ``functools.wraps`` names (0.14 pairs sync/async reply functions
by ``__name__``), never change arguments or results, and never raise into AG2: a capture failure is
swallowed and counted by the manager. Errors AG2 raises are captured once (innermost) and
re-raised unchanged.

Thread hops: contextvars do not cross ``run()``, ``run_in_executor`` or ``_run_async_in_thread``.
Each agent remembers (weakly) the run it was last seen in, so work on AG2's own threads lands in
the right run; the agent's open call is adopted as parent where the hop lost the nesting.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import capture as _capture
from ..capture import EventCaptureManager, _current

log = logging.getLogger("cmbagent_events.ag2")

_CAPTOR_ATTR = "_cmbagent_events_run"  # weakref to the EventCaptureManager an agent was last seen in
_CALL_ATTR = "_cmbagent_events_call"  # id of the agent's innermost open agent_call
_MARK_ATTR = "__cmbagent_events_captured__"  # set on exceptions already recorded as error events
MAX_SCAN_ENTRIES = 5000  # work_dir entries compared before/after code execution

_perf = time.perf_counter
_in_selection: contextvars.ContextVar[bool] = contextvars.ContextVar("cmbagent_events_in_selection", default=False)
_pending_transition = threading.local()  # .value: (reason, source, target) awaiting its speaker change

TRANSITION_REASONS = {
    "on_condition_l_l_m_transition": "OnCondition",
    "on_condition_llm_transition": "OnCondition",
    "on_context_condition_transition": "OnContextCondition",
    "after_works_transition": "AfterWork",
    "after_work_transition": "AfterWork",
    "reply_result_transition": "ReplyResult",
}

_MISSING = object()
_lock = threading.RLock()
_patches: list[tuple[type, str, Any]] = []  # (owner, attribute, original or _MISSING when inherited)
_explicit = False  # installed by install_ag2_hooks(), not only by capture_run
_refcount = 0
_streams: weakref.WeakSet[Any] = weakref.WeakSet()  # IOStream instances whose send is instrumented


# -- which run an event belongs to ------------------------------------------------------------
def _captor_for(agent: Any) -> EventCaptureManager | None:
    """The context's run (binding ``agent`` to it), else the agent's last run, else the global one."""
    captor = _current.get()
    if captor is not None and captor.enabled:
        if agent is not None:
            ref = captor._weakref
            try:
                if agent.__dict__.get(_CAPTOR_ATTR) is not ref:
                    agent.__dict__[_CAPTOR_ATTR] = ref
            except AttributeError:
                pass
        return captor
    if agent is not None:
        ref = getattr(agent, "__dict__", {}).get(_CAPTOR_ATTR)
        if ref is not None:
            captor = ref()
            if captor is not None and captor.enabled:
                return captor
    captor = _capture._global
    return captor if captor is not None and captor.enabled else None


def _name(agent: Any) -> str | None:
    return getattr(agent, "name", None) if agent is not None else None


def _adopt_hop_parent(captor: EventCaptureManager, agent: Any) -> bool:
    """On a thread that lost the context, nest under the agent's open call; True when adopted
    (the caller then calls ``captor.adopt_stack(())`` when done). Plain code, not a context
    manager: this runs on every model call."""
    if agent is None or captor.event_stack():
        return False
    call = getattr(agent, "__dict__", {}).get(_CALL_ATTR)
    if call is None:
        return False
    captor.adopt_stack((call,))
    return True


def _record_error(captor: EventCaptureManager, agent_name: str | None, exc: BaseException, where: str) -> None:
    """An error event for ``exc`` unless an inner hook already recorded this exception."""
    try:
        if getattr(exc, _MARK_ATTR, False):
            return
        try:
            setattr(exc, _MARK_ATTR, True)
        except (AttributeError, TypeError):
            pass
        captor.capture_error(agent_name or where, str(exc) or type(exc).__name__, type(exc).__name__,
                             {"where": where})
    except Exception:
        log.debug("cmbagent-events: could not record error", exc_info=True)


def _record_hop_error(captor: EventCaptureManager, agent: Any, exc: BaseException, where: str) -> None:
    adopted = _adopt_hop_parent(captor, agent)
    _record_error(captor, _name(agent), exc, where)
    if adopted:
        captor.adopt_stack(())


def _last_message(agent: Any, messages: Any, sender: Any) -> Any:
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


# -- agent calls ----------------------------------------------------------------------------------
def _start_call(captor: EventCaptureManager, agent: Any, messages: Any, sender: Any) -> tuple[str | None, Any]:
    meta: dict[str, Any] = {"sender": _name(sender)}
    if _in_selection.get():
        meta["speaker_selection"] = True
    seen = captor._seen_agents
    if id(agent) not in seen:  # the agent's configuration once per run, not on every call
        seen.add(id(agent))
        meta["agent_class"] = type(agent).__name__
        llm_config = getattr(agent, "llm_config", None)
        if llm_config:
            meta["llm_config"] = llm_config  # encoded (and its keys redacted) by the writer
    event_id = captor.capture_agent_call(agent.name, _last_message(agent, messages, sender), None, meta)
    d = agent.__dict__
    previous = d.get(_CALL_ATTR)
    if event_id is not None:
        d[_CALL_ATTR] = event_id
    return event_id, previous


def _end_call(captor: EventCaptureManager, agent: Any, event_id: str | None, previous: Any,
              reply: Any = None, error: BaseException | None = None) -> None:
    agent.__dict__[_CALL_ATTR] = previous
    if event_id is None:
        return
    if error is not None:
        _record_error(captor, agent.name, error, "generate_reply")
        captor.finish_agent_call(event_id, error=error)
    else:
        captor.finish_agent_call(event_id, response=reply)


def _patch_generate_reply(cls: type) -> None:
    original = cls.generate_reply

    @functools.wraps(original)
    def generate_reply(self, messages=None, sender=None, *args, **kwargs):
        captor = _captor_for(self)
        if captor is None:
            return original(self, messages, sender, *args, **kwargs)
        try:
            event_id, previous = _start_call(captor, self, messages, sender)
        except Exception:
            return original(self, messages, sender, *args, **kwargs)
        try:
            reply = original(self, messages, sender, *args, **kwargs)
        except BaseException as exc:
            _end_call(captor, self, event_id, previous, error=exc)
            raise
        _end_call(captor, self, event_id, previous, reply)
        return reply

    _patch(cls, "generate_reply", generate_reply)

    a_original = cls.a_generate_reply

    @functools.wraps(a_original)
    async def a_generate_reply(self, messages=None, sender=None, *args, **kwargs):
        captor = _captor_for(self)
        if captor is None:
            return await a_original(self, messages, sender, *args, **kwargs)
        try:
            event_id, previous = _start_call(captor, self, messages, sender)
        except Exception:
            return await a_original(self, messages, sender, *args, **kwargs)
        try:
            reply = await a_original(self, messages, sender, *args, **kwargs)
        except BaseException as exc:
            _end_call(captor, self, event_id, previous, error=exc)
            raise
        _end_call(captor, self, event_id, previous, reply)
        return reply

    _patch(cls, "a_generate_reply", a_generate_reply)


# -- messages -----------------------------------------------------------------------------------
_manager_types: dict[type, bool] = {}


def _is_manager(cls: type, manager_cls: type) -> bool:
    """issubclass, cached: isinstance on AG2 agents goes through a slow runtime Protocol check."""
    hit = _manager_types.get(cls)
    if hit is None:
        hit = _manager_types[cls] = issubclass(cls, manager_cls)
    return hit


def _capture_send(captor: EventCaptureManager, sender: Any, message: Any, recipient: Any,
                  request_reply: Any, manager_cls: type) -> None:
    try:
        if isinstance(message, dict):
            content = message.get("content")
            if content is None or message.get("tool_calls") or message.get("tool_responses"):
                content = {k: v for k, v in message.items() if k in ("content", "tool_calls", "tool_responses",
                                                                      "function_call", "name", "role")}
        else:
            content = message
        meta = {"speaker_selection": True} if _in_selection.get() else None
        if request_reply is False and _is_manager(type(sender), manager_cls):
            captor.capture_relay(sender.name, _name(recipient), content, meta)  # a manager broadcast
        else:
            captor.capture_message(sender.name, _name(recipient), content, None, meta)
    except Exception:
        log.debug("cmbagent-events: send capture failed", exc_info=True)


def _patch_send(cls: type, manager_cls: type) -> None:
    original = cls.send

    @functools.wraps(original)
    def send(self, message, recipient, *args, **kwargs):
        captor = _captor_for(self)
        if captor is not None:
            request_reply = args[0] if args else kwargs.get("request_reply")
            _capture_send(captor, self, message, recipient, request_reply, manager_cls)
            try:
                return original(self, message, recipient, *args, **kwargs)
            except BaseException as exc:
                _record_error(captor, self.name, exc, "send")
                raise
        return original(self, message, recipient, *args, **kwargs)

    _patch(cls, "send", send)

    a_original = cls.a_send

    @functools.wraps(a_original)
    async def a_send(self, message, recipient, *args, **kwargs):
        captor = _captor_for(self)
        if captor is not None:
            request_reply = args[0] if args else kwargs.get("request_reply")
            _capture_send(captor, self, message, recipient, request_reply, manager_cls)
            try:
                return await a_original(self, message, recipient, *args, **kwargs)
            except BaseException as exc:
                _record_error(captor, self.name, exc, "a_send")
                raise
        return await a_original(self, message, recipient, *args, **kwargs)

    _patch(cls, "a_send", a_send)


# -- tools --------------------------------------------------------------------------------------
def _tool_event(captor: EventCaptureManager, agent: Any, func_call: Any, call_id: Any, started: float,
                outcome: Any) -> None:
    try:
        name = func_call.get("name") if isinstance(func_call, dict) else None
        arguments = func_call.get("arguments") if isinstance(func_call, dict) else func_call
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                pass  # stored as the raw string the model produced
        ok, result = outcome if isinstance(outcome, tuple) and len(outcome) == 2 else (None, outcome)
        content = result.get("content") if isinstance(result, dict) else result
        meta = {"success": bool(ok), "call_id": call_id, "duration_ms": (_perf() - started) * 1000.0}
        if _in_selection.get():
            meta["speaker_selection"] = True
        adopted = _adopt_hop_parent(captor, agent)
        captor.capture_tool_call(agent.name, name, arguments, result=content, metadata=meta)
        if adopted:
            captor.adopt_stack(())
    except Exception:
        log.debug("cmbagent-events: tool capture failed", exc_info=True)


def _patch_execute_function(cls: type) -> None:
    original = cls.execute_function

    @functools.wraps(original)
    def execute_function(self, func_call, *args, **kwargs):
        captor = _captor_for(self)
        if captor is None:
            return original(self, func_call, *args, **kwargs)
        call_id = args[0] if args else kwargs.get("call_id")
        started = _perf()
        try:
            outcome = original(self, func_call, *args, **kwargs)
        except BaseException as exc:
            _record_hop_error(captor, self, exc, "execute_function")
            raise
        _tool_event(captor, self, func_call, call_id, started, outcome)
        return outcome

    _patch(cls, "execute_function", execute_function)

    a_original = cls.a_execute_function

    @functools.wraps(a_original)
    async def a_execute_function(self, func_call, *args, **kwargs):
        captor = _captor_for(self)
        if captor is None:
            return await a_original(self, func_call, *args, **kwargs)
        call_id = args[0] if args else kwargs.get("call_id")
        started = _perf()
        try:
            outcome = await a_original(self, func_call, *args, **kwargs)
        except BaseException as exc:
            _record_hop_error(captor, self, exc, "a_execute_function")
            raise
        _tool_event(captor, self, func_call, call_id, started, outcome)
        return outcome

    _patch(cls, "a_execute_function", a_execute_function)


# -- code execution and files --------------------------------------------------------------------
FILE_TYPES = {
    ".png": "plot", ".jpg": "plot", ".jpeg": "plot", ".svg": "plot", ".pdf": "plot", ".gif": "plot",
    ".py": "code", ".sh": "code", ".ipynb": "code", ".r": "code", ".jl": "code",
    ".csv": "data", ".json": "data", ".txt": "data", ".dat": "data", ".npy": "data", ".npz": "data",
    ".fits": "data", ".h5": "data", ".hdf5": "data", ".parquet": "data", ".tsv": "data", ".yaml": "data",
    ".md": "text", ".log": "log", ".tex": "text",
}


def file_type_for(path: str) -> str:
    return FILE_TYPES.get(os.path.splitext(path)[1].lower(), "other")


def _snapshot(work_dir: Any) -> dict[str, tuple[int, int]] | None:
    """(mtime_ns, size) of the files under ``work_dir`` (bounded); None when there is no work_dir."""
    if work_dir is None:
        return None
    root = str(work_dir)
    if not os.path.isdir(root):
        return {}
    seen: dict[str, tuple[int, int]] = {}
    stack = [root]
    while stack and len(seen) < MAX_SCAN_ENTRIES:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        seen[entry.path] = (st.st_mtime_ns, st.st_size)
        except OSError:
            continue
    return seen


def _capture_files(captor: EventCaptureManager, agent_name: str | None, before: dict | None, work_dir: Any,
                   parent: str | None) -> None:
    """file_gen events for files the code created or changed (the executor's own tmp_code_* excluded)."""
    if before is None:
        return
    after = _snapshot(work_dir) or {}
    root = Path(str(work_dir)).resolve()
    for path, stamp in sorted(after.items()):
        if before.get(path) == stamp or os.path.basename(path).startswith("tmp_code_"):
            continue
        resolved = Path(path).resolve()
        if root not in resolved.parents:  # symlinked or escaping paths are not the run's files
            continue
        captor.capture_file_generation(agent_name or "code_executor", str(resolved), file_type_for(path),
                                       stamp[1], {"created": path not in before, "code_exec_id": parent})


def _code_of(code_blocks: Any) -> tuple[str, str]:
    try:
        blocks = list(code_blocks)
        code = "\n\n".join(getattr(b, "code", str(b)) for b in blocks)
        language = getattr(blocks[0], "language", "python") if blocks else "python"
        return code, language
    except Exception:
        return repr(code_blocks), "unknown"


def _patch_executor(cls: type) -> None:
    original = cls.execute_code_blocks

    @functools.wraps(original)
    def execute_code_blocks(self, code_blocks, *args, **kwargs):
        captor = _captor_for(None)
        if captor is None:
            return original(self, code_blocks, *args, **kwargs)
        agent_name = captor.open_call_agent(captor.current_parent())  # the agent whose reply runs the code
        work_dir = getattr(self, "work_dir", None)
        try:
            before = _snapshot(work_dir) if captor._on["file_gen"] else None
        except Exception:
            before = None
        started = _perf()
        try:
            result = original(self, code_blocks, *args, **kwargs)
        except BaseException as exc:
            _record_error(captor, agent_name, exc, "execute_code_blocks")
            raise
        try:
            code, language = _code_of(code_blocks)
            exit_code = getattr(result, "exit_code", None)
            event_id = captor.capture_code_execution(
                agent_name or "code_executor", code, language, getattr(result, "output", None), exit_code,
                (_perf() - started) * 1000.0,
                {"executor": type(self).__name__, "code_file": getattr(result, "code_file", None),
                 "blocks": len(code_blocks) if hasattr(code_blocks, "__len__") else None})
            _capture_files(captor, agent_name, before, work_dir, event_id)
        except Exception:
            log.debug("cmbagent-events: code capture failed", exc_info=True)
        return result

    _patch(cls, "execute_code_blocks", execute_code_blocks)


def _patch_run_code(cls: type) -> None:
    original = cls.run_code

    @functools.wraps(original)
    def run_code(self, code, **kwargs):
        captor = _captor_for(self)
        if captor is None:
            return original(self, code, **kwargs)
        config = getattr(self, "_code_execution_config", None)
        work_dir = kwargs.get("work_dir") or (config.get("work_dir") if isinstance(config, dict) else None)
        try:
            before = _snapshot(work_dir) if captor._on["file_gen"] else None
        except Exception:
            before = None
        started = _perf()
        try:
            result = original(self, code, **kwargs)
        except BaseException as exc:
            _record_error(captor, self.name, exc, "run_code")
            raise
        try:
            exit_code, logs = (result[0], result[1]) if isinstance(result, tuple) else (None, result)
            event_id = captor.capture_code_execution(self.name, code, kwargs.get("lang") or "python", logs,
                                                     exit_code, (_perf() - started) * 1000.0,
                                                     {"executor": "legacy run_code"})
            _capture_files(captor, self.name, before, work_dir, event_id)
        except Exception:
            log.debug("cmbagent-events: run_code capture failed", exc_info=True)
        return result

    _patch(cls, "run_code", run_code)


# -- speaker changes and transitions --------------------------------------------------------------
def _method_name(groupchat: Any) -> str:
    method = getattr(groupchat, "speaker_selection_method", None)
    return method if isinstance(method, str) else getattr(method, "__name__", type(method).__name__)


def _capture_speaker_change(captor: EventCaptureManager, groupchat: Any, last: Any, chosen: Any) -> None:
    try:
        pending = getattr(_pending_transition, "value", None)
        _pending_transition.value = None
        context: dict[str, Any] = {"method": _method_name(groupchat)}
        reason = "speaker_selection"
        if pending is not None:
            reason, source, target = pending
            context["transition"] = {"source": source, "target": target}
        captor.capture_handoff(_name(last), _name(chosen), context, reason)
    except Exception:
        log.debug("cmbagent-events: speaker capture failed", exc_info=True)


def _patch_select_speaker(cls: type) -> None:
    original = cls.select_speaker

    @functools.wraps(original)
    def select_speaker(self, last_speaker, selector, *args, **kwargs):
        captor = _captor_for(selector)
        if captor is None:
            return original(self, last_speaker, selector, *args, **kwargs)
        token = _in_selection.set(True)
        try:
            chosen = original(self, last_speaker, selector, *args, **kwargs)
        except BaseException as exc:
            _record_selection_error(captor, selector, exc, "select_speaker")
            raise
        finally:
            _in_selection.reset(token)
        _capture_speaker_change(captor, self, last_speaker, chosen)
        return chosen

    _patch(cls, "select_speaker", select_speaker)

    a_original = cls.a_select_speaker

    @functools.wraps(a_original)
    async def a_select_speaker(self, last_speaker, selector, *args, **kwargs):
        captor = _captor_for(selector)
        if captor is None:
            return await a_original(self, last_speaker, selector, *args, **kwargs)
        token = _in_selection.set(True)
        try:
            chosen = await a_original(self, last_speaker, selector, *args, **kwargs)
        except BaseException as exc:
            _record_selection_error(captor, selector, exc, "a_select_speaker")
            raise
        finally:
            _in_selection.reset(token)
        _capture_speaker_change(captor, self, last_speaker, chosen)
        return chosen

    _patch(cls, "a_select_speaker", a_select_speaker)


def _record_selection_error(captor: EventCaptureManager, selector: Any, exc: BaseException, where: str) -> None:
    """AG2 ends group chats by raising NoEligibleSpeakerError from speaker selection: that is its
    normal stop (e.g. a TerminateTarget), not an error of the run."""
    if type(exc).__name__ == "NoEligibleSpeakerError":
        try:
            setattr(exc, _MARK_ATTR, True)
        except (AttributeError, TypeError):
            pass
        return
    _record_error(captor, _name(selector), exc, where)


def _transition_seen(message: Any) -> None:
    """Remember a group-pattern transition as the reason of this thread's next speaker change."""
    reason = TRANSITION_REASONS.get(getattr(message, "type", None))  # type: ignore[arg-type]
    if reason is None:
        return
    try:
        event = getattr(message, "content", message)
        source = getattr(event, "source_agent", None)
        target = getattr(event, "transition_target", None)
        target_name = None
        if target is not None:
            target_name = getattr(target, "agent_name", None)
            if target_name is None and hasattr(target, "display_name"):
                target_name = target.display_name()
        _pending_transition.value = (reason, _name(source) or str(source), target_name)
    except Exception:
        log.debug("cmbagent-events: transition capture failed", exc_info=True)


_SEND_FLAG = "_cmbagent_events_send"


def _instrument_stream(stream: Any) -> None:
    if getattr(stream, _SEND_FLAG, False):  # cheap check: get_default() runs on every AG2 print
        return
    original_send = stream.send

    def send(message: Any, *args: Any, **kwargs: Any) -> Any:
        _transition_seen(message)
        return original_send(message, *args, **kwargs)

    try:
        stream.send = send
        setattr(stream, _SEND_FLAG, True)
        _streams.add(stream)
    except (AttributeError, TypeError):  # slots or frozen stream: transitions from it are not seen
        pass


def _patch_iostream(io_cls: type) -> None:
    original = io_cls.__dict__["get_default"].__func__

    @functools.wraps(original)
    def get_default(*args: Any, **kwargs: Any) -> Any:
        stream = original(*args, **kwargs)
        try:
            _instrument_stream(stream)
        except Exception:
            pass
        return stream

    _patch(io_cls, "get_default", staticmethod(get_default))


# -- model calls ----------------------------------------------------------------------------------
def _patch_create(cls: type) -> None:
    original = cls.create

    @functools.wraps(original)
    def create(self, **config):
        agent = config.get("agent")
        captor = _captor_for(agent)
        if captor is None:
            return original(self, **config)
        started = _perf()
        try:
            response = original(self, **config)
        except BaseException as exc:
            _record_hop_error(captor, agent, exc, "llm_create")
            raise
        try:
            usage = getattr(response, "usage", None)
            meta = {"model": getattr(response, "model", None),
                    "cached": getattr(response, "cost", None) is not None and usage is None}
            if _in_selection.get():
                meta["speaker_selection"] = True
            adopted = _adopt_hop_parent(captor, agent)
            captor.capture_llm_call(
                _name(agent), getattr(response, "model", None), getattr(usage, "prompt_tokens", None),
                getattr(usage, "completion_tokens", None), getattr(usage, "total_tokens", None),
                getattr(response, "cost", None), (_perf() - started) * 1000.0, meta)
            if adopted:
                captor.adopt_stack(())
        except Exception:
            log.debug("cmbagent-events: llm capture failed", exc_info=True)
        return response

    _patch(cls, "create", create)


# -- thread hops: bind agents to the run before AG2 starts its own threads ---------------------------
def _patch_run(cls: type, name: str) -> None:
    original = getattr(cls, name)

    def bind(self: Any, args: tuple, kwargs: dict) -> None:
        captor = _current.get()
        if captor is None or not captor.enabled:
            return
        _captor_for(self)
        recipient = args[0] if args else kwargs.get("recipient")
        if recipient is not None:
            _captor_for(recipient)

    if name.startswith("a_"):
        @functools.wraps(original)
        async def wrapper(self, *args, **kwargs):
            bind(self, args, kwargs)
            return await original(self, *args, **kwargs)
    else:
        @functools.wraps(original)
        def wrapper(self, *args, **kwargs):
            bind(self, args, kwargs)
            return original(self, *args, **kwargs)

    _patch(cls, name, wrapper)


def _patch_pattern(cls: type) -> None:
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        captor = _current.get()
        if captor is not None and captor.enabled:
            for agent in list(getattr(self, "agents", []) or []) + [getattr(self, "user_agent", None)]:
                if agent is not None:
                    _captor_for(agent)

    _patch(cls, "__init__", __init__)


# -- install / uninstall ----------------------------------------------------------------------------
def _patch(owner: type, name: str, replacement: Any) -> None:
    _patches.append((owner, name, owner.__dict__.get(name, _MISSING)))
    setattr(owner, name, replacement)


def _install() -> None:
    from autogen import ConversableAgent, GroupChat, GroupChatManager, OpenAIWrapper
    from autogen.io.base import IOStream

    try:
        _patch_generate_reply(ConversableAgent)
        _patch_send(ConversableAgent, GroupChatManager)
        _patch_execute_function(ConversableAgent)
        _patch_run_code(ConversableAgent)
        _patch_select_speaker(GroupChat)
        _patch_create(OpenAIWrapper)
        _patch_iostream(IOStream)
        for name in ("run", "a_run"):
            if name in ConversableAgent.__dict__:
                _patch_run(ConversableAgent, name)
        import autogen.coding as coding

        for name in ("LocalCommandLineCodeExecutor", "DockerCommandLineCodeExecutor"):
            executor_cls = getattr(coding, name, None)
            if executor_cls is not None and "execute_code_blocks" in executor_cls.__dict__:
                _patch_executor(executor_cls)
        try:
            from autogen.agentchat.group.patterns.pattern import Pattern
        except ImportError:
            Pattern = None  # noqa: N806 - AG2 without group patterns
        if Pattern is not None:
            _patch_pattern(Pattern)
    except BaseException:
        _uninstall()
        raise


def _uninstall() -> None:
    while _patches:
        owner, name, original = _patches.pop()
        if original is _MISSING:
            try:
                delattr(owner, name)
            except AttributeError:
                pass
        else:
            setattr(owner, name, original)
    for stream in list(_streams):
        for attr in ("send", _SEND_FLAG):
            try:
                delattr(stream, attr)
            except AttributeError:
                pass
    _streams.clear()


def install_ag2_hooks() -> bool:
    """Patch AG2 so every run's events are captured (idempotent). True when the hooks are in place."""
    global _explicit
    with _lock:
        if not _patches:
            try:
                _install()
            except Exception:
                log.exception("cmbagent-events: could not install AG2 hooks")
                return False
        _explicit = True
        return True


def uninstall_ag2_hooks() -> None:
    """Restore every AG2 method exactly as it was (idempotent)."""
    global _explicit, _refcount
    with _lock:
        _explicit = False
        _refcount = 0
        _uninstall()


def hooks_installed() -> bool:
    return bool(_patches)


def acquire_hooks() -> Callable[[], None] | None:
    """Install the hooks for one run; the returned callable releases them (the last release uninstalls,
    unless :func:`install_ag2_hooks` was called explicitly)."""
    global _refcount
    with _lock:
        if not _patches:
            try:
                _install()
            except Exception:
                log.exception("cmbagent-events: could not install AG2 hooks")
                return None
        _refcount += 1
    released = False

    def release() -> None:
        global _refcount
        nonlocal released
        with _lock:
            if released:
                return
            released = True
            _refcount = max(0, _refcount - 1)
            if _refcount == 0 and not _explicit:
                _uninstall()

    return release
