"""Which run an event belongs to: the current run, and the seam integrations use to find it.

The current run is context-local first (a ContextVar, so concurrent runs in one process stay
apart), then process-wide. Framework work that hops to threads of its own loses the context, so
integrations also attach the run to the objects they see (weakly, in the object's ``__dict__``)
and find it there again: :func:`run_for`.

``get_event_captor`` / ``set_event_captor`` are the public contract's names for reading and setting
the current run; "captor" survives only in public names (these two, and ``event_captor`` of the
workflow callbacks).

After ``fork()`` the child's copies of the parent's runs stop capturing (they would share the
parent's writer, connection and queue); a child that wants capture opens its own run.
"""

from __future__ import annotations

import contextvars
import os
import weakref
from collections.abc import Callable
from typing import Any

from .capture import EventCaptureManager, live_runs

RUN_ATTR = "_cmbagent_events_run"  # weakref to the run an object (agent) was last seen in

_current: contextvars.ContextVar[EventCaptureManager | None] = contextvars.ContextVar(
    "cmbagent_events_run", default=None
)
_global: EventCaptureManager | None = None


def get_event_captor() -> EventCaptureManager | None:
    """The run of the current task/thread context, else the process-wide one."""
    return _current.get() or _global


def set_event_captor(captor: EventCaptureManager | None, *, context_only: bool = False) -> Callable[[], None]:
    """Make the run ``captor`` current here (and process-wide unless ``context_only``).

    Returns a function that restores what was there before.
    """
    global _global
    token = _current.set(captor)
    previous_global = _global
    if not context_only:
        _global = captor

    def restore() -> None:
        global _global
        try:
            _current.reset(token)
        except ValueError:  # restored from another context: clear this one instead
            _current.set(None)
        if not context_only and _global is captor:
            _global = previous_global

    return restore


# -- the seam for integrations --------------------------------------------------------------------
def current_run() -> EventCaptureManager | None:
    """The run of this context when it is capturing (the process-wide one is not consulted)."""
    run = _current.get()
    return run if run is not None and run.enabled else None


def run_for(obj: Any) -> EventCaptureManager | None:
    """The capturing run ``obj`` (an agent, or None) works for.

    The context's run first, and then ``obj`` is bound to it (weakly); else the run ``obj`` was last
    bound to (work on a thread that lost the context); else the process-wide run. None when none of
    them is capturing. Cheap: this runs on every hooked call.
    """
    run = _current.get()
    if run is not None and run.enabled:
        if obj is not None:
            ref = run.ref
            try:
                if obj.__dict__.get(RUN_ATTR) is not ref:
                    obj.__dict__[RUN_ATTR] = ref
            except AttributeError:
                pass
        return run
    if obj is not None:
        remembered: weakref.ref[EventCaptureManager] | None = getattr(obj, "__dict__", {}).get(RUN_ATTR)
        if remembered is not None:
            run = remembered()
            if run is not None and run.enabled:
                return run
    run = _global
    return run if run is not None and run.enabled else None


# -- fork safety ------------------------------------------------------------------------------------
def _after_fork_in_child() -> None:
    global _global
    for run in live_runs():
        run.abandon_after_fork()
    _global = None
    _current.set(None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
