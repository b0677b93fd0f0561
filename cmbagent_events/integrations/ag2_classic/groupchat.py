"""Group chats: speaker changes (``select_speaker``), group-pattern transitions (seen on AG2's
IOStream), and the binding of agents to the run before AG2 starts threads of its own (``run``,
``Pattern.__init__``)."""

from __future__ import annotations

import functools
import threading
import weakref
from typing import Any

from ...captor import captor_for, current_captor
from ...capture import EventCaptureManager
from ...capture_values import mark_recorded
from ..patching import Gate, apply_patch, gated, restore_patches
from .common import (
    CallHook,
    arg,
    in_selection,
    log,
    name_of,
    patch,
    patch_call,
    patch_pair,
    point_name,
    record_error,
    unavailable,
)

TRANSITION_REASONS = {
    "on_condition_l_l_m_transition": "OnCondition",
    "on_condition_llm_transition": "OnCondition",
    "on_context_condition_transition": "OnContextCondition",
    "after_works_transition": "AfterWork",
    "after_work_transition": "AfterWork",
    "reply_result_transition": "ReplyResult",
}

_pending_transition = threading.local()  # .value: (reason, source, target) awaiting its speaker change
_streams: weakref.WeakSet[Any] = weakref.WeakSet()  # IOStream instances whose send is instrumented
_stream_patches: list[tuple[Any, str, Any, Any]] = []  # their ``send`` patches (integrations/patching.py)
_SEND_FLAG = "_cmbagent_events_send"


# -- speaker changes --------------------------------------------------------------------------------
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
        captor.capture_handoff(name_of(last), name_of(chosen), context, reason)
    except Exception:
        log.debug("cmbagent-events: speaker capture failed", exc_info=True)


def _record_selection_error(captor: EventCaptureManager, selector: Any, exc: BaseException, where: str) -> None:
    """AG2 ends group chats by raising NoEligibleSpeakerError from speaker selection: that is its
    normal stop (e.g. a TerminateTarget), not an error of the run."""
    if type(exc).__name__ == "NoEligibleSpeakerError":
        mark_recorded(exc, captor.run_id)  # not an error: no outer layer records it either
        return
    record_error(captor, name_of(selector), exc, where)


class SelectSpeakerHook(CallHook):
    """A handoff per speaker change; events inside the selection are marked ``speaker_selection``."""

    def start(self, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        last_speaker, selector = arg(args, kwargs, 0, "last_speaker"), arg(args, kwargs, 1, "selector")
        captor = captor_for(selector)
        if captor is None:
            return None
        return captor, obj, last_speaker, selector, in_selection.set(True)

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        captor, groupchat, last_speaker, selector, token = state
        in_selection.reset(token)
        if error is not None:
            _pending_transition.value = None  # e.g. an AfterWork to TerminateTarget: never the next chat's reason
            _record_selection_error(captor, selector, error, where)
        else:
            _capture_speaker_change(captor, groupchat, last_speaker, result)


# -- group-pattern transitions --------------------------------------------------------------------
def target_name(target: Any) -> str | None:
    """The name of a TransitionTarget's agent, else its display name (e.g. ``TerminateTarget``)."""
    if target is None:
        return None
    name = getattr(target, "agent_name", None)
    if name is None and hasattr(target, "display_name"):
        name = target.display_name()
    return name


def remember_transition(reason: str, source: Any, target: Any) -> None:
    """Make ``reason`` (OnCondition, ...) the reason of this thread's next speaker change."""
    _pending_transition.value = (reason, name_of(source) or str(source), target_name(target))


def _transition_seen(message: Any) -> None:
    """A transition event AG2 sent on its IOStream (ag2 0.10+; see inferred_transitions.py for AG2 without them)."""
    reason = TRANSITION_REASONS.get(getattr(message, "type", None))  # type: ignore[arg-type]
    if reason is None:
        return
    try:
        event = getattr(message, "content", message)
        remember_transition(reason, getattr(event, "source_agent", None), getattr(event, "transition_target", None))
    except Exception:
        log.debug("cmbagent-events: transition capture failed", exc_info=True)


def _instrument_stream(stream: Any) -> None:
    if getattr(stream, _SEND_FLAG, False):  # cheap check: get_default() runs on every AG2 print
        return
    original_send = stream.send
    gate = Gate()

    def send(message: Any, *args: Any, **kwargs: Any) -> Any:
        if gate.on:
            _transition_seen(message)
        return original_send(message, *args, **kwargs)

    try:
        apply_patch(_stream_patches, stream, "send", gated(send, gate))
        setattr(stream, _SEND_FLAG, True)
        _streams.add(stream)
    except (AttributeError, TypeError):  # slots or frozen stream: transitions from it are not seen
        pass


def restore_streams() -> None:
    """Take the instrumentation off every stream handed out while the hooks were in place (where
    another library wrapped our ``send``, ours only stops looking)."""
    restore_patches(_stream_patches)
    for stream in list(_streams):
        try:
            delattr(stream, _SEND_FLAG)
        except AttributeError:
            pass
    _streams.clear()


def _patch_iostream(io_cls: type) -> None:
    original = getattr(io_cls, "get_default")  # noqa: B009 - the function (a staticmethod read through the class), or whoever wraps it
    gate = Gate()

    @functools.wraps(original)
    def get_default(*args: Any, **kwargs: Any) -> Any:
        stream = original(*args, **kwargs)
        if gate.on and not getattr(stream, _SEND_FLAG, False):  # AG2 calls this on every print
            try:
                _instrument_stream(stream)
            except Exception:
                pass
        return stream

    patch(io_cls, "get_default", staticmethod(gated(get_default, gate)))


# -- thread hops: bind agents to the run before AG2 starts its own threads ---------------------------
class BindRunHook(CallHook):
    """``run`` / ``a_run``: bind the agent and its recipient to the context's run; capture nothing."""

    def start(self, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if current_captor() is not None:
            captor_for(obj)
            recipient = arg(args, kwargs, 0, "recipient")
            if recipient is not None:
                captor_for(recipient)
        return None  # the original is called as is


def _patch_pattern(cls: type) -> None:
    original = cls.__init__  # type: ignore[misc]
    gate = Gate()

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if gate.on and current_captor() is not None:
            for agent in [*(getattr(self, "agents", []) or []), getattr(self, "user_agent", None)]:
                if agent is not None:
                    captor_for(agent)

    patch(cls, "__init__", gated(__init__, gate))


def patch_groupchat(agent_cls: type, groupchat_cls: type, io_cls: type | None, pattern_cls: type | None) -> None:
    """Hook speaker selection, the IOStream transitions (``io_cls`` None: AG2 sends none),
    ``run``/``a_run`` and group patterns."""
    patch_pair(groupchat_cls, "select_speaker", SelectSpeakerHook())
    if io_cls is not None:
        _patch_iostream(io_cls)
    for name in ("run", "a_run"):
        if name in agent_cls.__dict__:
            patch_call(agent_cls, name, BindRunHook())
        else:
            unavailable.append(point_name(agent_cls, name))
    if pattern_cls is not None:
        _patch_pattern(pattern_cls)
    else:
        unavailable.append("Pattern.__init__")
