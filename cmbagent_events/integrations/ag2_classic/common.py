"""What the classic AG2 hooks share: sync/async pairs, argument lookup, names, the speaker-selection
flag and thread-hop nesting. Patching itself (the gated wrapper generator, the registry) is
``integrations/patching.py``'s, common to every flavour."""

from __future__ import annotations

import contextvars
import time
from typing import Any

from ...capture import EventCaptureManager
from ..patching import CallHook, PatchSet

CALL_ATTR = "_cmbagent_events_call"  # id of the agent's innermost open agent_call

perf = time.perf_counter
in_selection: contextvars.ContextVar[bool] = contextvars.ContextVar("cmbagent_events_in_selection", default=False)


def patch_pair(patches: PatchSet, cls: type, name: str, hook: CallHook) -> None:
    """Hook the sync method ``name`` and its async twin ``a_<name>`` with the same hook."""
    patches.patch_call(cls, name, hook)
    patches.patch_call(cls, "a_" + name, hook)


def arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any = None) -> Any:
    """A call's argument, given by position (``args[0]`` is a method's receiver) or by keyword."""
    return args[index] if len(args) > index else kwargs.get(name, default)


# -- small helpers ----------------------------------------------------------------------------------
def name_of(agent: Any) -> str | None:
    return getattr(agent, "name", None) if agent is not None else None


def adopt_hop_parent(run: EventCaptureManager, agent: Any) -> bool:
    """On a thread that lost the context, nest under the agent's open call; True when adopted
    (the caller then calls ``run.adopt_stack(())`` when done). Plain code, not a context
    manager: this runs on every model call."""
    if agent is None or run.event_stack():
        return False
    call = getattr(agent, "__dict__", {}).get(CALL_ATTR)
    if call is None:
        return False
    run.adopt_stack((call,))
    return True


def record_hop_error(run: EventCaptureManager, agent: Any, exc: BaseException, where: str) -> None:
    """An error event for ``exc`` (one per exception per run), nested under ``agent``'s open call
    on a thread that lost the context."""
    adopted = adopt_hop_parent(run, agent)
    run.capture_exception(name_of(agent), exc, where)
    if adopted:
        run.adopt_stack(())
