"""The middleware factory AG2 1.x runs on every agent turn: it finds the turn's run and builds the
capturing middleware (turn.py, which imports ag2) only for a turn that is captured."""

from __future__ import annotations

import weakref
from typing import Any

from ...capture import EventCaptureManager
from ...current_run import run_for
from .common import CARRY_KEY, usable

AGENT_KEY = "__ag2_agent__"  # ag2.utils.AGENT_CONTEXT_DEPENDENCY_KEY: the Agent a context belongs to


def _base_middleware() -> type:
    from ag2.middleware import BaseMiddleware

    return BaseMiddleware


class CaptureMiddlewareFactory:
    """``middleware=[capture_middleware()]``: builds one capturing middleware per turn.

    ``run`` pins every turn to one run; without it the turn's run is found when the turn starts (the
    caller's carried run, else the current run). ``agent`` names the agent when the hooks add the
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
        agent = self._agent if self._agent is not None else (deps.get(AGENT_KEY) if deps is not None else None)
        run = None
        if self._run is not None:
            run = usable(self._run())
        elif carry is not None:
            run = usable(carry.run())
        if run is None and self._run is None:
            run = run_for(agent)  # the context's run (binding the agent), else the agent's last run
        if run is None:
            return _base_middleware()(event, context)
        from .turn import CaptureMiddleware  # imports ag2: only once a turn is captured

        return CaptureMiddleware(event, context, run, agent, carry)


def capture_middleware(run: EventCaptureManager | None = None) -> CaptureMiddlewareFactory:
    """A middleware factory for ``Agent(..., middleware=[capture_middleware()])`` (or ``ask(middleware=...)``).

    With ``run``, every turn goes to that run; without, to the run current when the turn starts.
    Turns inside ``capture_run(hooks=True)`` are already captured: the hooks skip agents that carry
    this factory, so nothing is recorded twice.
    """
    return CaptureMiddlewareFactory(run)
