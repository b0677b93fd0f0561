"""Group chats: speaker changes (``select_speaker``), group-pattern transitions (seen on AG2's
IOStream), and the binding of agents to the run before AG2 starts threads of its own (``run``,
``Pattern.__init__``)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ...capture import EventCaptureManager
from ...capture_values import mark_recorded
from ...current_run import current_run, run_for
from ..patching import GATE_ATTR, CallHook, PatchSet, point_name, wrap_call
from .common import arg, in_selection, name_of, patch_pair

TRANSITION_REASONS = {
    "on_condition_l_l_m_transition": "OnCondition",
    "on_condition_llm_transition": "OnCondition",
    "on_context_condition_transition": "OnContextCondition",
    "after_works_transition": "AfterWork",
    "after_work_transition": "AfterWork",
    "reply_result_transition": "ReplyResult",
}

_pending_transition = threading.local()  # .value: (reason, source, target) awaiting its speaker change


# -- speaker changes --------------------------------------------------------------------------------
def _method_name(groupchat: Any) -> str:
    method = getattr(groupchat, "speaker_selection_method", None)
    return method if isinstance(method, str) else getattr(method, "__name__", type(method).__name__)


def take_transition() -> tuple[str, str, str | None] | None:
    """This thread's transition awaiting its speaker change, as (reason, source, target), forgotten."""
    pending: tuple[str, str, str | None] | None = getattr(_pending_transition, "value", None)
    _pending_transition.value = None
    return pending


def _record_selection_error(run: EventCaptureManager, selector: Any, exc: BaseException, where: str) -> None:
    """AG2 ends group chats by raising NoEligibleSpeakerError from speaker selection: that is its
    normal stop (e.g. a TerminateTarget), not an error of the run."""
    if type(exc).__name__ == "NoEligibleSpeakerError":
        mark_recorded(exc, run.run_id)  # not an error: no outer layer records it either
        return
    run.capture_exception(name_of(selector), exc, where)


class SelectSpeakerHook(CallHook):
    """A handoff per speaker change; events inside the selection are marked ``speaker_selection``."""

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        n = len(args)  # the arguments read inline (what common.arg does), as in every hook of each round
        selector = args[2] if n > 2 else kwargs.get("selector")
        run = run_for(selector)
        if run is None:
            return None
        return run, args[0], args[1] if n > 1 else kwargs.get("last_speaker"), selector, in_selection.set(True)

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        run, groupchat, last_speaker, selector, token = state
        in_selection.reset(token)
        if error is not None:
            _pending_transition.value = None  # e.g. an AfterWork to TerminateTarget: never the next chat's reason
            _record_selection_error(run, selector, error, where)
            return
        # the speaker change, with the transition that caused it when one is pending
        pending = take_transition()
        context: dict[str, Any] = {"method": _method_name(groupchat)}
        reason = "speaker_selection"
        if pending is not None:
            reason, source, target = pending
            context["transition"] = {"source": source, "target": target}
        run.capture_handoff(getattr(last_speaker, "name", None), getattr(result, "name", None), context, reason)


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


class TransitionSeenHook(CallHook):
    """An IOStream's ``send``: a transition event AG2 sent (ag2 0.10+; see inferred_transitions.py for
    AG2 without them) becomes the reason of this thread's next speaker change."""

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        message = args[0] if args else kwargs.get("message")
        reason = TRANSITION_REASONS.get(getattr(message, "type", None))  # type: ignore[arg-type]
        if reason is not None:
            event = getattr(message, "content", message)
            remember_transition(reason, getattr(event, "source_agent", None),
                                getattr(event, "transition_target", None))
        return None  # nothing to do after the send


_NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})  # the __dict__ of an object without one


class GetDefaultHook(CallHook):
    """``IOStream.get_default()``: each stream AG2 hands out gets its ``send`` instrumented once. These
    instance patches have a patch set of their own, restored with the class patches (``on_restore``):
    they come and go with the streams, and must never make the class patches look installed."""

    def __init__(self, patches: PatchSet) -> None:
        self._streams = PatchSet("AG2 IOStream.send", lambda _: None)
        patches.on_restore.append(self._streams.restore)
        self._seen = TransitionSeenHook()

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return True

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        if error is not None:
            return
        # ``get_default()`` runs on every AG2 print: this test inline, no frame of its own. Instrumented
        # already when a wrapper of ours is (or wraps) the stream's own ``send`` (a wrapper's
        # ``__dict__`` carries our gate; ``functools.wraps`` copies it)
        send = getattr(result, "__dict__", _NO_ATTRIBUTES).get("send")
        if send is None or getattr(send, GATE_ATTR, None) is None:
            try:
                self._streams.patch(result, "send", wrap_call(result.send, self._seen, "send"))
            except (AttributeError, TypeError):  # slots or frozen stream: transitions from it are not seen
                pass


# -- thread hops: bind agents to the run before AG2 starts its own threads ---------------------------
class BindRunHook(CallHook):
    """``run`` / ``a_run``: bind the agent and its recipient to the context's run; capture nothing."""

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if current_run() is not None:
            run_for(args[0])
            recipient = arg(args, kwargs, 1, "recipient")
            if recipient is not None:
                run_for(recipient)
        return None  # the original is called as is


class PatternHook(CallHook):
    """``Pattern.__init__``: bind the pattern's agents to the context's run before AG2 starts threads."""

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return args[0] if current_run() is not None else None

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        if error is None:
            for agent in [*(getattr(state, "agents", []) or []), getattr(state, "user_agent", None)]:
                if agent is not None:
                    run_for(agent)


def patch_groupchat(patches: PatchSet, agent_cls: type, groupchat_cls: type, io_cls: type | None,
                    pattern_cls: type | None) -> None:
    """Hook speaker selection, the IOStream transitions (``io_cls`` None: AG2 sends none),
    ``run``/``a_run`` and group patterns."""
    patch_pair(patches, groupchat_cls, "select_speaker", SelectSpeakerHook())
    if io_cls is not None:
        patches.patch_call(io_cls, "get_default", GetDefaultHook(patches))
    for name in ("run", "a_run"):
        if name in agent_cls.__dict__:
            patches.patch_call(agent_cls, name, BindRunHook())
        else:
            patches.unavailable.append(point_name(agent_cls, name))
    if pattern_cls is not None:
        patches.patch_call(pattern_cls, "__init__", PatternHook())
    else:
        patches.unavailable.append("Pattern.__init__")
