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
from typing import TYPE_CHECKING, Any, cast

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
    event_captor: EventCaptureManager | None = None
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
            captor = self.event_captor
            if captor is not None:
                captor.capture_error("workflow_callbacks", f"{name}: {type(exc).__name__}: {exc}",
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


def field_of(obj: Any, *names: str) -> Any:
    """The first of ``names`` that ``obj`` has with a non-empty value (attribute or mapping key), else None."""
    for name in names:
        value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if value is not None and value != "":
            return value
    return None


def _plain(value: Any) -> Any:
    """An enum's value, anything else unchanged."""
    return value.value if isinstance(value, Enum) else value


def _compact(value: Any) -> Any:
    """A workflow's final context as a summary: short scalars kept, big or opaque values named only
    (MARS hands over its whole result: agent objects and the full chat history)."""
    if not isinstance(value, dict):
        return value if isinstance(value, (str, int, float, bool, type(None))) else f"<{type(value).__name__}>"
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, (int, float, bool, type(None))) or (isinstance(item, str) and len(item) <= 500):
            out[str(key)] = item
        elif isinstance(item, (list, tuple, dict, str)):
            out[str(key)] = f"<{type(item).__name__} of {len(item)}>"
        else:
            out[str(key)] = f"<{type(item).__name__}>"
    return out


class WorkflowCapture:
    """Workflow moments as events of one run: one open ``agent_call`` per step, plans, phases, costs.

    Reads CMBAgent's and MARS's ``StepInfo`` / ``PlanInfo`` (and look-alikes) by their field names,
    tolerating missing ones: a step's agent is ``step.agent``, else the plan's ``sub_task_agent`` /
    ``agent`` for that step number, else ``"step"``; its text is ``goal`` or ``description``; its
    response ``result``, else ``summary``.
    """

    def __init__(self, captor: EventCaptureManager) -> None:
        self.captor = captor
        self._open: dict[Any, tuple[str, str]] = {}  # step_number -> (agent_call id, agent name)
        self._plan_agents: dict[Any, str] = {}  # step_number -> agent named by the last plan
        self._lock = threading.Lock()

    def _step_meta(self, info: Any) -> dict[str, Any]:
        meta: dict[str, Any] = {"workflow_step": field_of(info, "step_number"),
                                "step_status": _plain(field_of(info, "status"))}
        extra = field_of(info, "metadata")
        if extra:
            meta["step_metadata"] = extra
        return meta

    def _agent(self, info: Any) -> str:
        agent = field_of(info, "agent", "agent_name")
        if agent is None:
            with self._lock:
                agent = self._plan_agents.get(field_of(info, "step_number"))
        return str(agent) if agent is not None else "step"

    def _take(self, step_number: Any) -> tuple[str, str] | None:
        with self._lock:
            return self._open.pop(step_number, None)

    def step_start(self, info: Any) -> None:
        captor = self.captor
        number = field_of(info, "step_number")
        step_id = f"step_{number}"
        captor.set_context(step_id=step_id)
        stale = self._take(number)
        if stale is not None:  # a restart (retry) of a step whose first attempt never reported back
            captor.finish_agent_call(stale[0], error=f"step {number} restarted before it finished")
        context: dict[str, Any] = {"step_number": number, "step_id": step_id}
        started_at = field_of(info, "started_at")
        if started_at is not None:
            context["started_at"] = started_at
        agent = self._agent(info)
        event_id = captor.capture_agent_call(agent, field_of(info, "goal", "description") or "", context,
                                             self._step_meta(info))
        if event_id is not None:
            with self._lock:
                self._open[number] = (event_id, agent)

    def step_complete(self, info: Any) -> None:
        meta = self._step_meta(info)
        meta["execution_time"] = field_of(info, "execution_time")
        response = field_of(info, "result", "summary")
        opened = self._take(field_of(info, "step_number"))
        agent = opened[1] if opened else self._agent(info)
        self.captor.capture_agent_response(agent, response if response is not None else "completed",
                                           opened[0] if opened else None, meta)

    def step_failed(self, info: Any) -> None:
        number = field_of(info, "step_number")
        error = str(field_of(info, "error") or f"step {number} failed")
        meta = self._step_meta(info)
        meta["execution_time"] = field_of(info, "execution_time")
        opened = self._take(number)
        agent = opened[1] if opened else self._agent(info)
        self.captor.capture_error(agent, error, "step_failure", meta)  # nested under the step's call
        if opened is not None:
            self.captor.finish_agent_call(opened[0], error=error, metadata=meta)

    def planning_start(self, task: str, config: dict[str, Any] | None = None) -> None:
        self.captor.capture_event("plan", "start", "planner", {"task": task, "config": config or {}})

    def planning_complete(self, plan: Any) -> None:
        steps = field_of(plan, "steps") or []
        agents = {}
        for position, step in enumerate(steps if isinstance(steps, list) else [], start=1):
            agent = field_of(step, "sub_task_agent", "agent") if isinstance(step, dict) else None
            if agent is not None:
                agents[field_of(step, "step", "step_number") or position] = str(agent)
        with self._lock:
            self._plan_agents = agents
        meta = {"mode": field_of(plan, "mode"), **(field_of(plan, "metadata") or {})}
        planning_time = field_of(plan, "planning_time")
        outputs = {"num_steps": field_of(plan, "num_steps") or len(steps), "steps": steps}
        text = field_of(plan, "plan_text")
        if text is not None:
            outputs["plan_text"] = text
        self.captor.capture_event("plan", "complete", "planner", {"task": field_of(plan, "task")}, outputs,
                                  planning_time * 1000.0 if isinstance(planning_time, (int, float)) else None,
                                  metadata={k: v for k, v in meta.items() if v is not None})

    def workflow_start(self, task: str, config: dict[str, Any] | None = None) -> None:
        self.captor.capture_event("workflow", "start", "workflow", {"task": task, "config": config or {}})

    def workflow_complete(self, final_context: Any = None, total_time: float | None = None) -> None:
        self.captor.capture_event("workflow", "complete", "workflow", None, {"final_context": _compact(final_context)},
                                  total_time * 1000.0 if isinstance(total_time, (int, float)) else None)

    def workflow_failed(self, error: str, step_number: int | None = None) -> None:
        self.captor.capture_error("workflow", str(error), "workflow_failure", {"step_number": step_number})
        self.close_open_steps(f"workflow failed during step {{}}: {error}")

    def close_open_steps(self, reason: str) -> None:
        """Fail the steps still open; ``reason``'s first ``{}`` is replaced by the step number."""
        with self._lock:
            still_open, self._open = self._open, {}
        for number, (event_id, _agent) in sorted(still_open.items(), key=lambda item: str(item[0])):
            self.captor.finish_agent_call(event_id, error=reason.replace("{}", str(number), 1))

    def phase_change(self, phase: str, step_number: int | None = None) -> None:
        """A new phase (planning, control, execution): the following events belong to its node."""
        self.captor.set_context(node_id=str(phase))
        self.captor.capture_event("phase", "change", "workflow", {"phase": phase, "step_number": step_number})

    def cost_update(self, cost_data: Any) -> None:
        data = cost_data if isinstance(cost_data, dict) else {"cost_data": cost_data}
        self.captor.capture_event("cost", "update", "workflow", None, data,
                                  metadata={"total_cost": data.get("total_cost"),
                                            "total_tokens": data.get("total_tokens")})

    def handlers(self) -> dict[str, Callable[..., None]]:
        """The capture half of each wrapped callback, by field name."""
        return {
            "on_planning_start": self.planning_start,
            "on_planning_complete": self.planning_complete,
            "on_step_start": self.step_start,
            "on_step_complete": self.step_complete,
            "on_step_failed": self.step_failed,
            "on_workflow_start": self.workflow_start,
            "on_workflow_complete": self.workflow_complete,
            "on_workflow_failed": self.workflow_failed,
            "on_phase_change": self.phase_change,
            "on_cost_update": self.cost_update,
        }


def create_callbacks_with_event_capture(event_captor: EventCaptureManager | None,
                                        **callbacks: Callback | None) -> WorkflowCallbacks:
    """:class:`WorkflowCallbacks` that capture each workflow moment into ``event_captor``'s run,
    then call the matching callback from ``callbacks`` (if given) with the same arguments.

    Works with CMBAgent's and MARS's ``StepInfo`` / ``PlanInfo`` (see :class:`WorkflowCapture`).
    The step's ``agent_call`` id is remembered per ``step_number`` between start and completion or
    failure; a step restarted while still open has its first attempt closed as failed. A failed
    workflow closes the steps it left open. Phase changes set the node context; cost updates are
    ``cost`` events. ``should_continue``, ``on_pause_check`` and MARS's per-agent callbacks are passed
    through as given (None when not given), so MARS's ``merge_callbacks`` keeps the other callbacks'
    stop and pause checks whatever the merge order. With ``event_captor=None`` the originals are
    returned unwrapped. Capture itself never raises (the manager's contract); what the originals raise
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
