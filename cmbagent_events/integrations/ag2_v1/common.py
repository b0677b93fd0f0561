"""What the AG2 1.x capture pieces share: the carried run and nesting, the usable run."""

from __future__ import annotations

import weakref

from ...capture import EventCaptureManager

CARRY_KEY = "cmbagent_events.carry"  # context.dependencies key: (run weakref, open-call stack) of the caller


def usable(run: EventCaptureManager | None) -> EventCaptureManager | None:
    return run if run is not None and run.enabled else None


class Carry:
    """What a turn hands to the turns it starts (sub-tasks, agents used as tools): its run and nesting."""

    __slots__ = ("run", "stack")

    def __init__(self, run: weakref.ref[EventCaptureManager], stack: tuple[str, ...]) -> None:
        self.run = run
        self.stack = stack
