"""The demo's two workflows (one_shot, planning_and_control), captured, and the stored run read back."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from autogen.io.base import IOStream

from ..callbacks import (
    PlanInfo,
    StepInfo,
    StepStatus,
    WorkflowCallbacks,
    create_callbacks_with_event_capture,
)
from ..capture import EventCaptureManager
from ..config import CaptureConfig
from ..errors import ConfigError, DatabaseURLError
from ..run import capture_run
from .chats import (
    handoff_chat,
    parameter_chat,
    plan_chat,
    spectrum_chat,
)
from .models import (
    TASKS,
    Models,
    NullIOStream,
)
from .report import Outcome


# -- the workflows ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Step:
    number: int
    agent: str
    description: str
    run: Callable[[], Any]


def run_steps(run: EventCaptureManager, callbacks: WorkflowCallbacks, steps: Sequence[Step]) -> list[Any]:
    """Each step under its own node/step context, reported through the callbacks."""
    results = []
    for step in steps:
        run.set_context(node_id=f"node_{step.number}", step_id=f"step_{step.number}")
        info = StepInfo(step.number, step.agent, step.description, StepStatus.RUNNING, started_at=time.time())
        callbacks.invoke_step_start(info)
        started = time.perf_counter()
        try:
            result = step.run()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            callbacks.invoke_step_failed(dataclasses.replace(
                info, status=StepStatus.FAILED, error=error, execution_time=time.perf_counter() - started))
            callbacks.invoke_workflow_failed(error, step.number)
            raise
        callbacks.invoke_step_complete(dataclasses.replace(
            info, status=StepStatus.COMPLETED, result=result, execution_time=time.perf_counter() - started))
        results.append(result)
    return results


def planning_and_control(run: EventCaptureManager, models: Models, work_dir: Path, task: str,
                         progress: list[str]) -> None:
    def note(kind: str) -> Callable[[StepInfo], None]:
        return lambda step: progress.append(f"step {step.step_number} ({step.agent}) {kind}")

    callbacks = create_callbacks_with_event_capture(
        run, on_step_complete=note("completed"), on_step_failed=note("failed"),
        on_planning_complete=lambda plan: progress.append(f"plan: {plan.num_steps} steps"))
    began = time.perf_counter()
    callbacks.invoke_workflow_start(task, {"mode": "planning_and_control", "model": models.model_name})
    run.set_context(node_id="planning", step_id="planning")
    callbacks.invoke_planning_start(task, {"planner": "planner", "model": models.model_name})
    text, plan, parsed = plan_chat(models, task)
    callbacks.invoke_planning_complete(PlanInfo(task, plan, "planning_and_control",
                                                {"parsed": parsed, "plan_text": text}))
    params: dict[str, float] = {}

    def step_parameters() -> dict[str, float]:
        params.update(parameter_chat(models, plan[0]["task"]))
        return params

    def step_spectrum() -> dict[str, Any]:
        values = ", ".join(f"{k}={v}" for k, v in params.items())
        return spectrum_chat(models, work_dir, f"{plan[1]['task']}\nParameters: {values}", params)

    steps = [Step(1, plan[0]["agent"], plan[0]["task"], step_parameters),
             Step(2, plan[1]["agent"], plan[1]["task"], step_spectrum),
             Step(3, plan[2]["agent"], plan[2]["task"], lambda: handoff_chat(models, work_dir, plan[2]["task"]))]
    results = run_steps(run, callbacks, steps)
    callbacks.invoke_workflow_complete({"summary": results[-1], "work_dir": str(work_dir)},
                                       time.perf_counter() - began)


def one_shot(run: EventCaptureManager, models: Models, work_dir: Path, task: str, progress: list[str]) -> None:
    run.set_context(node_id="one_shot", step_id="engineer")
    result = spectrum_chat(models, work_dir, task)
    progress.append(f"engineer wrote {Path(result['file']).name} ({result['size_bytes']} bytes)")


# -- capture and report -------------------------------------------------------------------------------
def quiet_ag2() -> None:
    for name in ("autogen.oai.client", "autogen.oai", "autogen.agentchat", "autogen.coding"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _workflow(run: EventCaptureManager, mode: str, models: Models, work_dir: Path, task: str,
              progress: list[str]) -> None:
    with IOStream.set_default(NullIOStream()):  # context-local: this thread's AG2 prints nothing
        try:
            if mode == "one_shot":
                one_shot(run, models, work_dir, task, progress)
            else:
                planning_and_control(run, models, work_dir, task, progress)
        finally:
            models.close()


async def capture_demo(db_url: str, mode: str, models: Models, work_dir: Path,
                       config: CaptureConfig | None = None) -> Outcome:
    """Run the demo workflow under :func:`capture_run`; AG2 runs on a worker thread so the writer keeps
    draining on this loop while the agents talk (``to_thread`` carries the run's context along)."""
    task = TASKS[mode]
    outcome = Outcome(None, {}, [])
    agent = "planner" if mode == "planning_and_control" else "engineer"
    run: EventCaptureManager | None = None
    try:
        async with capture_run(db_url, task_description=task, mode=mode, agent=agent, model=models.model_name,
                               config=config, meta={"demo": True, "offline": models.offline,
                                                    "work_dir": str(work_dir)}) as run:
            outcome.run_id = run.run_id
            await asyncio.to_thread(_workflow, run, mode, models, work_dir, task, outcome.progress)
    except (DatabaseURLError, ConfigError):
        raise
    except Exception as exc:  # the run is stored as failed; the report still shows what happened
        outcome.error = exc
    if run is not None:
        outcome.stats = run.get_performance_stats()  # after the exit: the final drain is counted
    return outcome
