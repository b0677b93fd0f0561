"""What every AG2 hook shares: the patch registry, the one generator of sync/async wrappers, and
the small helpers (names, the message replied to, error recording, thread-hop nesting)."""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from ...capture import EventCaptureManager
from ..patching import Gate, apply_patch, gated, restore_patches

log = logging.getLogger("cmbagent_events.ag2")

CALL_ATTR = "_cmbagent_events_call"  # id of the agent's innermost open agent_call

perf = time.perf_counter
in_selection: contextvars.ContextVar[bool] = contextvars.ContextVar("cmbagent_events_in_selection", default=False)

patches: list[tuple[Any, str, Any, Any]] = []  # (owner, attribute, original or MISSING when inherited, ours)
unavailable: list[str] = []  # patch points ("Class.method") the installed AG2 lacks: what they capture is not captured


def point_name(owner: Any, name: str) -> str:
    """``Class.method`` (or ``module.function``) naming a patch point in reports."""
    return f"{getattr(owner, '__name__', str(owner)).rsplit('.', 1)[-1]}.{name}"


def patch(owner: Any, name: str, replacement: Any) -> None:
    """Replace ``owner.name``, remembering what to restore (see install.py); a dormant wrapper of ours
    still in another library's chain is switched back on instead (integrations/patching.py)."""
    apply_patch(patches, owner, name, replacement)


def unpatch_all() -> None:
    """Undo every patch, newest first, where ours is still the outermost; elsewhere ours becomes a
    pass-through, so another library's patch over it is never removed."""
    restore_patches(patches)


# -- the one wrapper generator ----------------------------------------------------------------------
class CallHook:
    """What a wrapper does around one AG2 method: ``start`` before the call (its state, or None to
    call the original uncaptured), ``end`` after it with the result or the exception. Neither may
    change arguments or results; the exception is re-raised unchanged after ``end``."""

    def start(self, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return None

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        pass


def _start(hook: CallHook, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return hook.start(obj, args, kwargs)
    except Exception:
        log.debug("cmbagent-events: hook start failed", exc_info=True)
        return None


def _end(hook: CallHook, state: Any, result: Any, error: BaseException | None, where: str) -> None:
    try:
        hook.end(state, result, error, where)
    except Exception:
        log.debug("cmbagent-events: hook end failed", exc_info=True)


def wrap_call(original: Callable[..., Any], hook: CallHook, where: str) -> Callable[..., Any]:
    """A wrapper of ``original`` (sync or async, chosen by what ``original`` is) that runs ``hook``.

    ``functools.wraps`` keeps the original's ``__name__``: AG2 0.14 pairs sync and async reply
    functions by name. The async wrapper only ever awaits the async original (AG2's async paths
    never call the sync methods, so each must be hooked on its own).
    """
    gate = Gate()  # off: a pass-through, once another library has wrapped us and we were removed
    if inspect.iscoroutinefunction(original):
        @functools.wraps(original)
        async def async_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            state = _start(hook, self, args, kwargs) if gate.on else None
            if state is None:
                return await original(self, *args, **kwargs)
            try:
                result = await original(self, *args, **kwargs)
            except BaseException as exc:
                _end(hook, state, None, exc, where)
                raise
            _end(hook, state, result, None, where)
            return result

        return gated(async_wrapper, gate)

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        state = _start(hook, self, args, kwargs) if gate.on else None
        if state is None:
            return original(self, *args, **kwargs)
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            _end(hook, state, None, exc, where)
            raise
        _end(hook, state, result, None, where)
        return result

    return gated(wrapper, gate)


def patch_call(cls: type, name: str, hook: CallHook) -> None:
    """Hook ``cls.name`` with :func:`wrap_call`; a method this AG2 lacks is noted as unavailable."""
    original = getattr(cls, name, None)
    if original is None:
        unavailable.append(point_name(cls, name))
        return
    patch(cls, name, wrap_call(original, hook, name))


def patch_pair(cls: type, name: str, hook: CallHook) -> None:
    """Hook the sync method ``name`` and its async twin ``a_<name>`` with the same hook."""
    patch_call(cls, name, hook)
    patch_call(cls, "a_" + name, hook)


def arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any = None) -> Any:
    """A call's argument, given by position (after self) or by keyword."""
    return args[index] if len(args) > index else kwargs.get(name, default)


# -- small helpers ----------------------------------------------------------------------------------
def name_of(agent: Any) -> str | None:
    return getattr(agent, "name", None) if agent is not None else None


def adopt_hop_parent(captor: EventCaptureManager, agent: Any) -> bool:
    """On a thread that lost the context, nest under the agent's open call; True when adopted
    (the caller then calls ``captor.adopt_stack(())`` when done). Plain code, not a context
    manager: this runs on every model call."""
    if agent is None or captor.event_stack():
        return False
    call = getattr(agent, "__dict__", {}).get(CALL_ATTR)
    if call is None:
        return False
    captor.adopt_stack((call,))
    return True


def record_error(captor: EventCaptureManager, agent_name: str | None, exc: BaseException, where: str) -> None:
    """An error event for ``exc``, with its traceback, unless this run already recorded it."""
    try:
        captor.capture_exception(agent_name or where, exc, where)
    except Exception:
        log.debug("cmbagent-events: could not record error", exc_info=True)


def record_hop_error(captor: EventCaptureManager, agent: Any, exc: BaseException, where: str) -> None:
    adopted = adopt_hop_parent(captor, agent)
    record_error(captor, name_of(agent), exc, where)
    if adopted:
        captor.adopt_stack(())
