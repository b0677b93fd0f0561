"""What the AG2 1.x capture pieces share: the carried run and nesting, error marking, the usable captor."""

from __future__ import annotations

import logging
import weakref

from ...capture import EventCaptureManager

log = logging.getLogger("cmbagent_events.ag2_v1")

CARRY_KEY = "cmbagent_events.carry"  # context.dependencies key: (run weakref, open-call stack) of the caller
def record_error(captor: EventCaptureManager, agent_name: str | None, exc: BaseException, where: str) -> None:
    """An error event for ``exc``, with its traceback, unless this run already recorded it."""
    try:
        captor.capture_exception(agent_name or where, exc, where, {"framework": "ag2"})
    except Exception:
        log.debug("cmbagent-events: could not record error", exc_info=True)


def usable(captor: EventCaptureManager | None) -> EventCaptureManager | None:
    return captor if captor is not None and captor.enabled else None


class Carry:
    """What a turn hands to the turns it starts (sub-tasks, agents used as tools): its run and nesting."""

    __slots__ = ("run", "stack")

    def __init__(self, run: weakref.ref[EventCaptureManager], stack: tuple[str, ...]) -> None:
        self.run = run
        self.stack = stack
