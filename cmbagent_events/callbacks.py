"""Workflow callbacks (CMBAgent's ``cmbagent/callbacks.py`` types) and their event-capture wiring.

CMBAgent's planning-and-control workflows report progress through a :class:`WorkflowCallbacks`
object: planning started/finished, each step started/completed/failed, the workflow
started/completed/failed. :func:`create_callbacks_with_event_capture` returns callbacks that
record those moments as events of a run and still call the user's own callbacks.

What a step looks like in the database: ``on_step_start`` sets the step context
(``step_id="step_<n>"``) and opens one ``agent_call`` row for the step (status ``running``);
``on_step_complete`` completes *that* row (the seed lost its id and wrote a second, unlinked row);
``on_step_failed`` records an ``error`` event (``step_failure``) under the step and closes the
step's row as ``failed``. While a step's call is open, the events captured in the same task or
thread (the AG2 hooks' agent calls, tools, code) nest under it.

Callbacks never break the workflow. The ``invoke_*`` helpers (what a workflow engine should call)
catch any ``Exception`` a callback raises, log it, count it in ``callback_errors`` and record it as
an ``error`` event (``callback_error``) on the run in ``event_captor`` when there is one; the workflow carries
on. ``BaseException`` (KeyboardInterrupt, cancellation) is not swallowed. Callbacks are plain
synchronous functions: one that returns an awaitable (an ``async def``) is reported as an error and
its coroutine closed, never left un-awaited. Calling a field directly
(``callbacks.on_step_start(info)``) is the unprotected seed style and raises what the callback raises.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, cast

from .workflow_capture import WorkflowCapture
from .workflow_capture import field_of as field_of

if TYPE_CHECKING:
    from .capture import EventCaptureManager

log = logging.getLogger("cmbagent_events.callbacks")

__all__ = ["PlanInfo", "StepInfo", "StepStatus", "WorkflowCallbacks", "create_callbacks_with_event_capture"]


class StepStatus(Enum):
    """Where a workflow step stands."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass
class StepInfo:
    """One step of a plan, as passed to the step callbacks.

    ``execution_time`` is in seconds; ``started_at`` is a ``time.time()`` timestamp.
    """

    step_number: int
    agent: str
    description: str
    status: StepStatus = StepStatus.PENDING
    result: Any = None
    error: str | None = None
    execution_time: float | None = None
    started_at: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def goal(self) -> str:
        """CMBAgent's later name for ``description``."""
        return self.description


@dataclass
class PlanInfo:
    """The plan a planner produced, as passed to ``on_planning_complete``."""

    task: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "planning_and_control"
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return len(self.steps)


Callback = Callable[..., Any]


@dataclass
class WorkflowCallbacks:
    """Optional hooks a workflow calls as it runs; the fields and signatures of CMBAgent / MARS
    (``cmbagent.callbacks.WorkflowCallbacks``), so either library can be handed this object.

    - ``on_planning_start(task: str, config: dict)``, ``on_planning_complete(plan: PlanInfo)``
    - ``on_step_start(step: StepInfo)``, ``on_step_complete(step)``, ``on_step_failed(step)``
    - ``on_workflow_start(task: str, config: dict)``,
      ``on_workflow_complete(final_context: dict, total_time: float)``,
      ``on_workflow_failed(error: str, step_number: int | None)``
    - MARS's others: ``on_progress(message, data)``, ``on_agent_start(agent, step_number)``,
      ``on_agent_complete(agent, step_number, data)``, ``on_cost_update(cost_data)``,
      ``on_agent_message(agent, role, content, metadata)``, ``on_code_execution(agent, code, language, result)``,
      ``on_tool_call(agent, tool_name, arguments, result)``, ``on_phase_change(phase, step_number)``;
      ``should_continue() -> bool`` and ``on_pause_check()`` (MARS's ``merge_callbacks`` reads these two
      directly: they must exist, and None means "no opinion").

    Workflows should call the ``invoke_*`` helpers, which never let a callback's exception
    escape (see the module docstring).
    """

    on_planning_start: Callback | None = None
    on_planning_complete: Callback | None = None
    on_step_start: Callback | None = None
    on_step_complete: Callback | None = None
    on_step_failed: Callback | None = None
    on_workflow_start: Callback | None = None
    on_workflow_complete: Callback | None = None
    on_workflow_failed: Callback | None = None
    on_progress: Callback | None = None
    on_agent_start: Callback | None = None
    on_agent_complete: Callback | None = None
    should_continue: Callable[[], bool] | None = None
    on_pause_check: Callable[[], None] | None = None
    on_cost_update: Callback | None = None
    on_agent_message: Callback | None = None
    on_code_execution: Callback | None = None
    on_tool_call: Callback | None = None
    on_phase_change: Callback | None = None
    event_captor: EventCaptureManager | None = None  # the run; named as the contract's parameter
    callback_errors: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def _invoke(self, name: str, *args: Any) -> Any:
        callback = getattr(self, name)
        if callback is None:
            return None
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()  # never awaited: close it rather than leak a warning
                raise TypeError(f"{name} returned an awaitable; workflow callbacks must be synchronous")
            return result
        except Exception as exc:
            self.callback_errors[name] = self.callback_errors.get(name, 0) + 1
            log.exception("cmbagent-events: callback %s failed (the workflow continues)", name)
            run = self.event_captor
            if run is not None:
                run.capture_error("workflow_callbacks", f"{name}: {type(exc).__name__}: {exc}",
                                  "callback_error", {"callback": name})
            return None

    def invoke_planning_start(self, task: str, config: dict[str, Any] | None = None) -> None:
        self._invoke("on_planning_start", task, config if config is not None else {})

    def invoke_planning_complete(self, plan_info: PlanInfo) -> None:
        self._invoke("on_planning_complete", plan_info)

    def invoke_step_start(self, step_info: StepInfo) -> None:
        self._invoke("on_step_start", step_info)

    def invoke_step_complete(self, step_info: StepInfo) -> None:
        self._invoke("on_step_complete", step_info)

    def invoke_step_failed(self, step_info: StepInfo) -> None:
        self._invoke("on_step_failed", step_info)

    def invoke_workflow_start(self, task: str, config: dict[str, Any] | None = None) -> None:
        self._invoke("on_workflow_start", task, config if config is not None else {})

    def invoke_workflow_complete(self, final_context: dict[str, Any] | None = None, total_time: float = 0.0) -> None:
        self._invoke("on_workflow_complete", final_context if final_context is not None else {}, total_time)

    def invoke_workflow_failed(self, error: str, step_number: int | None = None) -> None:
        self._invoke("on_workflow_failed", error, step_number)

    def invoke_phase_change(self, phase: str, step_number: int | None = None) -> None:
        self._invoke("on_phase_change", phase, step_number)

    def invoke_progress(self, message: str, data: dict[str, Any] | None = None) -> None:
        self._invoke("on_progress", message, data if data is not None else {})

    def invoke_cost_update(self, cost_data: dict[str, Any]) -> None:
        self._invoke("on_cost_update", cost_data)

    def invoke_agent_message(self, agent: str, role: str, content: str, metadata: dict[str, Any] | None = None) -> None:
        self._invoke("on_agent_message", agent, role, content, metadata or {})

    def invoke_code_execution(self, agent: str, code: str, language: str, result: str | None = None) -> None:
        self._invoke("on_code_execution", agent, code, language, result)

    def invoke_tool_call(self, agent: str, tool_name: str, arguments: dict[str, Any], result: Any = None) -> None:
        self._invoke("on_tool_call", agent, tool_name, arguments, result)

    def check_should_continue(self) -> bool:
        """``should_continue()``; True when there is none or it failed (as MARS does)."""
        if self.should_continue is None:
            return True
        answer = self._invoke("should_continue")
        return True if answer is None else bool(answer)

    def invoke_pause_check(self) -> None:
        self._invoke("on_pause_check")


_WRAPPED = ("on_planning_start", "on_planning_complete", "on_step_start", "on_step_complete", "on_step_failed",
            "on_workflow_start", "on_workflow_complete", "on_workflow_failed", "on_phase_change", "on_cost_update")
_PASSED = ("on_progress", "on_agent_start", "on_agent_complete", "on_agent_message", "on_code_execution",
           "on_tool_call", "should_continue", "on_pause_check")  # handed through unwrapped: the AG2 hooks
# already capture agents, messages, code and tools; stop/pause answers are the user's alone.



def create_callbacks_with_event_capture(event_captor: EventCaptureManager | None,
                                        **callbacks: Callback | None) -> WorkflowCallbacks:
    """:class:`WorkflowCallbacks` that capture each workflow moment into the run ``event_captor``,
    then call the matching callback from ``callbacks`` (if given) with the same arguments.

    Works with CMBAgent's and MARS's ``StepInfo`` / ``PlanInfo`` (see :class:`WorkflowCapture`).
    The step's ``agent_call`` id is remembered per ``step_number`` between start and completion or
    failure; a step restarted while still open has its first attempt closed as failed. A failed
    workflow closes the steps it left open. Phase changes set the node context; cost updates are
    ``cost`` events. ``should_continue``, ``on_pause_check`` and MARS's per-agent callbacks are passed
    through as given (None when not given), so MARS's ``merge_callbacks`` keeps the other callbacks'
    stop and pause checks whatever the merge order. With ``event_captor=None`` the originals are
    returned unwrapped. Capture itself never raises (the run's contract); what the originals raise
    propagates to the caller of the field and is contained by the ``invoke_*`` helpers.

    Raises:
        TypeError: for a keyword that is not a WorkflowCallbacks callback.
    """
    unknown = sorted(set(callbacks) - set(_WRAPPED) - set(_PASSED))
    if unknown:
        raise TypeError(f"unknown workflow callback(s): {', '.join(unknown)}; expected some of "
                        f"{', '.join(_WRAPPED + _PASSED)}")
    if event_captor is None:
        return WorkflowCallbacks(**cast("dict[str, Any]", callbacks))
    handlers = WorkflowCapture(event_captor).handlers()
    wrapped = {name: _with_capture(name, handlers[name], callbacks.get(name)) for name in _WRAPPED}
    passed = {name: callbacks[name] for name in _PASSED if name in callbacks}
    fields: dict[str, Any] = {**wrapped, **passed}
    return WorkflowCallbacks(**fields, event_captor=event_captor)


def _with_capture(name: str, capture: Callable[..., None], original: Callback | None) -> Callback:
    def callback(*args: Any) -> Any:
        try:
            capture(*args)
        except Exception:  # a malformed StepInfo must not cost the user their own callback
            log.exception("cmbagent-events: capturing %s failed", name)
        return original(*args) if original is not None else None

    callback.__name__ = callback.__qualname__ = f"{name}_with_capture"
    callback.__wrapped__ = original  # type: ignore[attr-defined]
    return callback
