"""Workflow moments as events of one run: steps (one open ``agent_call`` each), plans, phases, costs.

The capture behind :func:`~cmbagent_events.callbacks.create_callbacks_with_event_capture` and MARS's
integration; it reads CMBAgent's and MARS's ``StepInfo`` / ``PlanInfo`` (and look-alikes) by field name.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .capture import EventCaptureManager


def handled_exception(error: Any) -> BaseException | None:
    """The exception being handled on this thread when it is the one ``error`` describes (MARS and
    CMBAgent report a failure from inside their ``except`` block, as ``str(exc)``): its traceback is
    then the failure's. None when none is being handled, or it says something else."""
    exc = sys.exc_info()[1]
    if not isinstance(exc, Exception):
        return None
    try:
        return exc if str(exc) in str(error) else None
    except Exception:  # an exception whose __str__ fails: not the one described
        return None


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

    def __init__(self, run: EventCaptureManager) -> None:
        self.run = run
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
        run = self.run
        number = field_of(info, "step_number")
        step_id = f"step_{number}"
        run.set_context(step_id=step_id)
        stale = self._take(number)
        if stale is not None:  # a restart (retry) of a step whose first attempt never reported back
            run.finish_agent_call(stale[0], error=f"step {number} restarted before it finished")
        context: dict[str, Any] = {"step_number": number, "step_id": step_id}
        started_at = field_of(info, "started_at")
        if started_at is not None:
            context["started_at"] = started_at
        agent = self._agent(info)
        event_id = run.capture_agent_call(agent, field_of(info, "goal", "description") or "", context,
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
        self.run.capture_agent_response(agent, response if response is not None else "completed",
                                        opened[0] if opened else None, meta)

    def step_failed(self, info: Any) -> None:
        number = field_of(info, "step_number")
        error = str(field_of(info, "error") or f"step {number} failed")
        meta = self._step_meta(info)
        meta["execution_time"] = field_of(info, "execution_time")
        opened = self._take(number)
        agent = opened[1] if opened else self._agent(info)
        raised = handled_exception(error)
        if raised is None:
            self.run.capture_error(agent, error, "step_failure", meta)  # nested under the step's call
        else:  # with its traceback; once per exception (a hook may have recorded it already)
            self.run.capture_exception(agent, raised, "step", meta, error_type="step_failure")
        if opened is not None:
            self.run.finish_agent_call(opened[0], error=error, metadata=meta)

    def planning_start(self, task: str, config: dict[str, Any] | None = None) -> None:
        self.run.capture_event("plan", "start", "planner", {"task": task, "config": config or {}})

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
        self.run.capture_event("plan", "complete", "planner", {"task": field_of(plan, "task")}, outputs,
                               planning_time * 1000.0 if isinstance(planning_time, (int, float)) else None,
                               metadata={k: v for k, v in meta.items() if v is not None})

    def workflow_start(self, task: str, config: dict[str, Any] | None = None) -> None:
        self.run.capture_event("workflow", "start", "workflow", {"task": task, "config": config or {}})

    def workflow_complete(self, final_context: Any = None, total_time: float | None = None) -> None:
        self.run.capture_event("workflow", "complete", "workflow", None, {"final_context": _compact(final_context)},
                               total_time * 1000.0 if isinstance(total_time, (int, float)) else None)

    def workflow_failed(self, error: str, step_number: int | None = None) -> None:
        raised = handled_exception(error)
        if raised is None:
            self.run.capture_error("workflow", str(error), "workflow_failure", {"step_number": step_number})
        else:  # with its traceback; once per exception (a hook may have recorded it already)
            self.run.capture_exception("workflow", raised, "workflow", {"step_number": step_number},
                                       error_type="workflow_failure")
        self.close_open_steps(f"workflow failed during step {{}}: {error}")

    def close_open_steps(self, reason: str) -> None:
        """Fail the steps still open; ``reason``'s first ``{}`` is replaced by the step number."""
        with self._lock:
            still_open, self._open = self._open, {}
        for number, (event_id, _agent) in sorted(still_open.items(), key=lambda item: str(item[0])):
            self.run.finish_agent_call(event_id, error=reason.replace("{}", str(number), 1))

    def phase_change(self, phase: str, step_number: int | None = None) -> None:
        """A new phase (planning, control, execution): the following events belong to its node."""
        self.run.set_context(node_id=str(phase))
        self.run.capture_event("phase", "change", "workflow", {"phase": phase, "step_number": step_number})

    def cost_update(self, cost_data: Any) -> None:
        data = cost_data if isinstance(cost_data, dict) else {"cost_data": cost_data}
        self.run.capture_event("cost", "update", "workflow", None, data,
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

