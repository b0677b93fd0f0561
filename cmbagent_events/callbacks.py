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
an ``error`` event (``callback_error``) on ``event_captor`` when there is one; the workflow carries
on. ``BaseException`` (KeyboardInterrupt, cancellation) is not swallowed. Callbacks are plain
synchronous functions: one that returns an awaitable (an ``async def``) is reported as an error and
its coroutine closed, never left un-awaited. Calling a field directly
(``callbacks.on_step_start(info)``) is the unprotected seed style and raises what the callback raises.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

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
    """Optional hooks a workflow calls as it runs; signatures as in CMBAgent.

    - ``on_planning_start(task: str, config: dict)``, ``on_planning_complete(plan: PlanInfo)``
    - ``on_step_start(step: StepInfo)``, ``on_step_complete(step)``, ``on_step_failed(step)``
    - ``on_workflow_start(task: str, config: dict)``,
      ``on_workflow_complete(final_context: dict, total_time: float)``,
      ``on_workflow_failed(error: str, step_number: int | None)``

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
    event_captor: EventCaptureManager | None = None
    callback_errors: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def _invoke(self, name: str, *args: Any) -> None:
        callback = getattr(self, name)
        if callback is None:
            return
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()  # never awaited: close it rather than leak a warning
                raise TypeError(f"{name} returned an awaitable; workflow callbacks must be synchronous")
        except Exception as exc:
            self.callback_errors[name] = self.callback_errors.get(name, 0) + 1
            log.exception("cmbagent-events: callback %s failed (the workflow continues)", name)
            captor = self.event_captor
            if captor is not None:
                captor.capture_error("workflow_callbacks", f"{name}: {type(exc).__name__}: {exc}",
                                     "callback_error", {"callback": name})

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


_WRAPPED = ("on_planning_start", "on_planning_complete", "on_step_start", "on_step_complete", "on_step_failed",
            "on_workflow_start", "on_workflow_complete", "on_workflow_failed")


class _StepCapture:
    """The capture half of :func:`create_callbacks_with_event_capture`: one open call per step."""

    def __init__(self, captor: EventCaptureManager) -> None:
        self.captor = captor
        self._open: dict[int, tuple[str, str]] = {}  # step_number -> (agent_call id, agent name)
        self._lock = threading.Lock()

    @staticmethod
    def _step_meta(info: StepInfo) -> dict[str, Any]:
        status = info.status.value if isinstance(info.status, StepStatus) else info.status
        meta: dict[str, Any] = {"workflow_step": info.step_number, "step_status": status}
        if info.metadata:
            meta["step_metadata"] = info.metadata
        return meta

    def _take(self, step_number: int) -> tuple[str, str] | None:
        with self._lock:
            return self._open.pop(step_number, None)

    def step_start(self, info: StepInfo) -> None:
        captor = self.captor
        step_id = f"step_{info.step_number}"
        captor.set_context(step_id=step_id)
        stale = self._take(info.step_number)
        if stale is not None:  # a restart (retry) of a step whose first attempt never reported back
            captor.finish_agent_call(stale[0], error=f"step {info.step_number} restarted before it finished")
        context = {"step_number": info.step_number, "step_id": step_id}
        if info.started_at is not None:
            context["started_at"] = info.started_at
        event_id = captor.capture_agent_call(info.agent, info.description, context, self._step_meta(info))
        if event_id is not None:
            with self._lock:
                self._open[info.step_number] = (event_id, info.agent)

    def step_complete(self, info: StepInfo) -> None:
        meta = self._step_meta(info)
        meta["execution_time"] = info.execution_time
        response = info.result if info.result is not None else "completed"
        opened = self._take(info.step_number)
        self.captor.capture_agent_response(info.agent, response, opened[0] if opened else None, meta)

    def step_failed(self, info: StepInfo) -> None:
        error = info.error or f"step {info.step_number} failed"
        meta = self._step_meta(info)
        meta["execution_time"] = info.execution_time
        self.captor.capture_error(info.agent, error, "step_failure", meta)  # nested under the step's call
        opened = self._take(info.step_number)
        if opened is not None:
            self.captor.finish_agent_call(opened[0], error=error, metadata=meta)

    def planning_start(self, task: str, config: dict[str, Any] | None = None) -> None:
        self.captor.capture_event("plan", "start", "planner", {"task": task, "config": config or {}})

    def planning_complete(self, plan: PlanInfo) -> None:
        self.captor.capture_event("plan", "complete", "planner", {"task": plan.task},
                                  {"num_steps": len(plan.steps), "steps": plan.steps},
                                  metadata={"mode": plan.mode, **plan.metadata})

    def workflow_start(self, task: str, config: dict[str, Any] | None = None) -> None:
        self.captor.capture_event("workflow", "start", "workflow", {"task": task, "config": config or {}})

    def workflow_complete(self, final_context: dict[str, Any] | None = None, total_time: float | None = None) -> None:
        self.captor.capture_event("workflow", "complete", "workflow", None, {"final_context": final_context},
                                  total_time * 1000.0 if isinstance(total_time, (int, float)) else None)

    def workflow_failed(self, error: str, step_number: int | None = None) -> None:
        self.captor.capture_error("workflow", str(error), "workflow_failure", {"step_number": step_number})
        with self._lock:
            still_open, self._open = self._open, {}
        for number, (event_id, _agent) in sorted(still_open.items()):  # steps cut short by the failure
            self.captor.finish_agent_call(event_id, error=f"workflow failed during step {number}: {error}")


def create_callbacks_with_event_capture(event_captor: EventCaptureManager | None,
                                        **callbacks: Callback | None) -> WorkflowCallbacks:
    """:class:`WorkflowCallbacks` that capture each workflow moment into ``event_captor``'s run,
    then call the matching callback from ``callbacks`` (if given) with the same arguments.

    The step's ``agent_call`` id is remembered per ``step_number`` between start and completion or
    failure; a step restarted while still open has its first attempt closed as failed. A failed
    workflow closes the steps it left open. With ``event_captor=None`` the originals are returned
    unwrapped. Capture itself never raises (the manager's contract); what the originals raise
    propagates to the caller of the field and is contained by the ``invoke_*`` helpers.

    Raises:
        TypeError: for a keyword that is not a WorkflowCallbacks callback.
    """
    unknown = sorted(set(callbacks) - set(_WRAPPED))
    if unknown:
        raise TypeError(f"unknown workflow callback(s): {', '.join(unknown)}; expected some of {', '.join(_WRAPPED)}")
    if event_captor is None:
        return WorkflowCallbacks(**callbacks)
    capture = _StepCapture(event_captor)
    handlers: dict[str, Callable[..., None]] = {
        "on_planning_start": capture.planning_start,
        "on_planning_complete": capture.planning_complete,
        "on_step_start": capture.step_start,
        "on_step_complete": capture.step_complete,
        "on_step_failed": capture.step_failed,
        "on_workflow_start": capture.workflow_start,
        "on_workflow_complete": capture.workflow_complete,
        "on_workflow_failed": capture.workflow_failed,
    }
    wrapped = {name: _with_capture(name, handlers[name], callbacks.get(name)) for name in _WRAPPED}
    return WorkflowCallbacks(**wrapped, event_captor=event_captor)


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
