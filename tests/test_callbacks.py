"""Workflow callbacks with event capture: the rows each callback leaves, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import select

from cmbagent_events import (
    CaptureConfig,
    ExecutionEvent,
    PlanInfo,
    StepInfo,
    StepStatus,
    WorkflowCallbacks,
    capture_run,
    create_callbacks_with_event_capture,
)


async def _events(db_session, run_id: str, event_type: str | None = None) -> list[ExecutionEvent]:
    query = select(ExecutionEvent).where(ExecutionEvent.run_id == run_id).execution_options(populate_existing=True)
    if event_type is not None:
        query = query.where(ExecutionEvent.event_type == event_type)
    return list((await db_session.scalars(query.order_by(ExecutionEvent.seq))).all())


async def test_step_start_and_complete_are_one_row_and_nest_the_step_work(db_url, db_session, config) -> None:
    seen: list[tuple[str, StepInfo]] = []
    async with capture_run(db_url, config=config, hooks=False) as run:
        callbacks = create_callbacks_with_event_capture(
            run, on_step_start=lambda s: seen.append(("start", s)), on_step_complete=lambda s: seen.append(("end", s)))
        assert callbacks.event_captor is run
        step = StepInfo(1, "engineer", "Compute the CMB power spectrum", StepStatus.RUNNING, metadata={"k": 1})
        callbacks.invoke_step_start(step)
        assert run.current_step_id == "step_1"
        tool_id = run.capture_tool_call("engineer", "camb", {"lmax": 2000}, result="ok")
        done = dataclasses.replace(step, status=StepStatus.COMPLETED, result={"file": "cl.csv"}, execution_time=1.5)
        callbacks.invoke_step_complete(done)
        after_id = run.capture_tool_call("engineer", "after", {})
        assert await run.flush(10)
        calls = await _events(db_session, run.run_id, "agent_call")
        tools = {e.id: e for e in await _events(db_session, run.run_id, "tool_call")}
    assert seen == [("start", step), ("end", done)]  # the originals get the same objects
    assert len(calls) == 1, "the completion updates the start row, it does not add one"
    call = calls[0]
    assert (call.agent_name, call.event_subtype, call.status) == ("engineer", "complete", "completed")
    assert call.step_id == "step_1"
    assert call.inputs == {"message": "Compute the CMB power spectrum",
                           "context": {"step_number": 1, "step_id": "step_1"}}
    assert call.outputs == {"response": {"file": "cl.csv"}}
    assert call.meta["workflow_step"] == 1 and call.meta["step_status"] == "completed"
    assert call.meta["execution_time"] == 1.5 and call.meta["step_metadata"] == {"k": 1}
    assert call.completed_at is not None and call.duration_ms is not None
    assert (tools[tool_id].parent_event_id, tools[tool_id].depth, tools[tool_id].step_id) == (call.id, 1, "step_1")
    assert tools[after_id].parent_event_id is None  # the step's call is closed


async def test_step_failure_records_an_error_under_the_step_and_fails_its_row(db_url, db_session, config) -> None:
    failed: list[StepInfo] = []
    async with capture_run(db_url, config=config, hooks=False) as run:
        callbacks = create_callbacks_with_event_capture(run, on_step_failed=failed.append)
        step = StepInfo(2, "executor", "Run the code")
        callbacks.invoke_step_start(step)
        callbacks.invoke_step_failed(dataclasses.replace(step, status=StepStatus.FAILED, error="exit code 1"))
        assert await run.flush(10)
        [call] = await _events(db_session, run.run_id, "agent_call")
        [error] = await _events(db_session, run.run_id, "error")
    assert len(failed) == 1
    assert (call.event_subtype, call.status, call.error_message) == ("error", "failed", "exit code 1")
    assert call.step_id == "step_2" and call.completed_at is not None
    assert (error.event_subtype, error.agent_name, error.error_message) == ("step_failure", "executor", "exit code 1")
    assert error.parent_event_id == call.id and error.step_id == "step_2"
    assert error.meta["workflow_step"] == 2


async def test_interleaved_steps_each_complete_their_own_row(db_url, db_session, config) -> None:
    async with capture_run(db_url, config=config, hooks=False) as run:
        callbacks = create_callbacks_with_event_capture(run)
        one, two = StepInfo(1, "a", "first"), StepInfo(2, "b", "second")
        callbacks.invoke_step_start(one)
        callbacks.invoke_step_start(two)
        callbacks.invoke_step_complete(dataclasses.replace(one, result="r1"))
        callbacks.invoke_step_complete(dataclasses.replace(two, result="r2"))
        assert await run.flush(10)
        calls = await _events(db_session, run.run_id, "agent_call")
    assert [(c.agent_name, c.step_id, c.status, c.outputs) for c in calls] == [
        ("a", "step_1", "completed", {"response": "r1"}), ("b", "step_2", "completed", {"response": "r2"})]


async def test_restarted_step_closes_its_first_attempt(db_url, db_session, config) -> None:
    async with capture_run(db_url, config=config, hooks=False) as run:
        callbacks = create_callbacks_with_event_capture(run)
        step = StepInfo(3, "engineer", "retry me")
        callbacks.invoke_step_start(step)
        callbacks.invoke_step_start(step)
        callbacks.invoke_step_complete(dataclasses.replace(step, result="second try"))
        assert await run.flush(10)
        first, second = await _events(db_session, run.run_id, "agent_call")
    assert (first.status, first.error_message) == ("failed", "step 3 restarted before it finished")
    assert (second.status, second.outputs) == ("completed", {"response": "second try"})


async def test_complete_without_start_is_a_standalone_completion(db_url, db_session, config) -> None:
    async with capture_run(db_url, config=config, hooks=False) as run:
        callbacks = create_callbacks_with_event_capture(run)
        callbacks.invoke_step_complete(StepInfo(9, "engineer", "never started", StepStatus.COMPLETED))
        assert await run.flush(10)
        [call] = await _events(db_session, run.run_id, "agent_call")
    assert (call.event_subtype, call.status, call.outputs) == ("complete", "completed", {"response": "completed"})


async def test_planning_and_workflow_callbacks_capture_and_call_the_originals(db_url, db_session, config) -> None:
    calls: list[tuple] = []
    async with capture_run(db_url, config=config, hooks=False) as run:
        callbacks = create_callbacks_with_event_capture(
            run,
            on_planning_start=lambda task, cfg: calls.append(("plan_start", task, cfg)),
            on_planning_complete=lambda plan: calls.append(("plan_done", plan.num_steps)),
            on_workflow_start=lambda task, cfg: calls.append(("wf_start", task)),
            on_workflow_complete=lambda ctx, t: calls.append(("wf_done", ctx, t)),
        )
        steps = [{"step": 1, "agent": "engineer", "task": "compute"}, {"step": 2, "agent": "researcher", "task": "x"}]
        callbacks.invoke_workflow_start("CMB task", {"max_steps": 2})
        callbacks.invoke_planning_start("CMB task", {"planner": "scripted"})
        callbacks.invoke_planning_complete(PlanInfo("CMB task", steps, metadata={"planner_model": "scripted"}))
        callbacks.invoke_workflow_complete({"steps_done": 2}, 0.25)
        assert await run.flush(10)
        plans = await _events(db_session, run.run_id, "plan")
        workflow = await _events(db_session, run.run_id, "workflow")
    assert calls == [("wf_start", "CMB task"), ("plan_start", "CMB task", {"planner": "scripted"}),
                     ("plan_done", 2), ("wf_done", {"steps_done": 2}, 0.25)]
    start, done = plans
    assert (start.event_subtype, start.agent_name, start.inputs) == (
        "start", "planner", {"task": "CMB task", "config": {"planner": "scripted"}})
    assert done.event_subtype == "complete" and done.outputs == {"num_steps": 2, "steps": steps}
    assert done.meta == {"mode": "planning_and_control", "planner_model": "scripted"}
    assert [(w.event_subtype, w.status) for w in workflow] == [("start", "completed"), ("complete", "completed")]
    assert workflow[1].duration_ms == pytest.approx(250.0)


async def test_workflow_failure_records_the_error_and_fails_open_steps(db_url, db_session, config) -> None:
    async with capture_run(db_url, config=config, hooks=False) as run:
        callbacks = create_callbacks_with_event_capture(run)
        callbacks.invoke_step_start(StepInfo(1, "engineer", "hangs"))
        callbacks.invoke_workflow_failed("out of budget", 1)
        assert await run.flush(10)
        [call] = await _events(db_session, run.run_id, "agent_call")
        [error] = await _events(db_session, run.run_id, "error")
    assert (error.event_subtype, error.error_message, error.meta) == (
        "workflow_failure", "out of budget", {"step_number": 1})
    assert (call.status, call.error_message) == ("failed", "workflow failed during step 1: out of budget")


async def test_a_raising_callback_never_breaks_the_workflow(db_url, db_session, config) -> None:
    def boom(step: StepInfo) -> None:
        raise RuntimeError("user callback bug")

    async def not_sync(step: StepInfo) -> None:
        pass

    async with capture_run(db_url, config=config, hooks=False) as run:
        callbacks = create_callbacks_with_event_capture(run, on_step_start=boom, on_step_complete=not_sync)
        step = StepInfo(1, "engineer", "work")
        callbacks.invoke_step_start(step)  # does not raise
        callbacks.invoke_step_complete(dataclasses.replace(step, result="fine"))
        with pytest.raises(RuntimeError, match="user callback bug"):
            callbacks.on_step_start(StepInfo(2, "engineer", "direct call: the seed's unprotected style"))
        assert await run.flush(10)
        calls = await _events(db_session, run.run_id, "agent_call")
        errors = await _events(db_session, run.run_id, "error")
    assert callbacks.callback_errors == {"on_step_start": 1, "on_step_complete": 1}
    assert calls[0].status == "completed" and calls[0].outputs == {"response": "fine"}  # capture still happened
    assert [(e.event_subtype, e.agent_name, e.meta["callback"]) for e in errors] == [
        ("callback_error", "workflow_callbacks", "on_step_start"),
        ("callback_error", "workflow_callbacks", "on_step_complete")]
    assert "RuntimeError: user callback bug" in errors[0].error_message
    assert "must be synchronous" in errors[1].error_message


async def test_disabled_capture_still_calls_the_originals(db_url, db_session) -> None:
    seen: list[int] = []
    async with capture_run(db_url, config=CaptureConfig(enabled=False), hooks=False) as run:
        callbacks = create_callbacks_with_event_capture(run, on_step_start=lambda s: seen.append(s.step_number),
                                                        on_step_complete=lambda s: seen.append(-s.step_number))
        callbacks.invoke_step_start(StepInfo(1, "engineer", "x"))
        callbacks.invoke_step_complete(StepInfo(1, "engineer", "x"))
        assert run.get_performance_stats()["total_events"] == 0
    assert seen == [1, -1]


def test_plain_callbacks_and_bad_keywords() -> None:
    hits: list[str] = []
    plain = create_callbacks_with_event_capture(None, on_step_start=lambda s: hits.append(s.agent))
    assert isinstance(plain, WorkflowCallbacks) and plain.event_captor is None
    plain.invoke_step_start(StepInfo(1, "engineer", "x"))
    plain.invoke_step_complete(StepInfo(1, "engineer", "x"))  # no callback: nothing to do
    assert hits == ["engineer"]
    with pytest.raises(TypeError, match="on_stepstart"):
        create_callbacks_with_event_capture(None, on_stepstart=print)
    with pytest.raises(TypeError):
        create_callbacks_with_event_capture(None, event_captor=None)
    assert StepInfo(1, "a", "goal text").goal == "goal text"
    assert [s.value for s in StepStatus] == ["pending", "running", "completed", "failed", "skipped"]


# MARS's own shapes (mars-cmbagent 2.2.5, cmbagent/callbacks.py): no ``agent`` on a step, no ``mode`` or
# ``metadata`` on a plan, ``goal`` beside a deprecated ``description``, ``summary``, ``plan_text``.
@dataclasses.dataclass
class MarsStepInfo:
    step_number: int
    goal: str
    description: str
    status: StepStatus = StepStatus.PENDING
    started_at: float | None = None
    completed_at: float | None = None
    execution_time: float | None = None
    error: str | None = None
    result: dict | None = None
    summary: str | None = None


@dataclasses.dataclass
class MarsPlanInfo:
    task: str
    num_steps: int
    steps: list
    plan_text: str
    planning_time: float


async def test_mars_shaped_plan_and_steps_are_captured(db_url, db_session, config) -> None:
    async with capture_run(db_url, config=config, hooks=False) as run:
        callbacks = create_callbacks_with_event_capture(run)
        steps = [{"sub_task": "get parameters", "sub_task_agent": "researcher"},
                 {"sub_task": "compute spectrum", "sub_task_agent": "engineer"}]
        callbacks.invoke_planning_complete(MarsPlanInfo("CMB task", 2, steps, "1. researcher 2. engineer", 1.5))
        callbacks.invoke_step_start(MarsStepInfo(2, "compute spectrum", "", StepStatus.RUNNING, started_at=1.0))
        run.capture_tool_call("engineer", "camb", {})
        callbacks.invoke_step_complete(MarsStepInfo(2, "", "", StepStatus.COMPLETED, execution_time=2.0,
                                                    summary="spectrum written"))
        callbacks.invoke_step_start(MarsStepInfo(3, "", "unplanned step", StepStatus.RUNNING))
        callbacks.invoke_step_failed(MarsStepInfo(3, "", "", StepStatus.FAILED, error="boom"))
        assert await run.flush(10)
        plan = (await _events(db_session, run.run_id, "plan"))[0]
        calls = await _events(db_session, run.run_id, "agent_call")
        tool = (await _events(db_session, run.run_id, "tool_call"))[0]
        error = (await _events(db_session, run.run_id, "error"))[0]
    assert callbacks.callback_errors == {}
    assert plan.outputs["num_steps"] == 2 and plan.outputs["plan_text"] == "1. researcher 2. engineer"
    assert plan.duration_ms == pytest.approx(1500.0)
    step2, step3 = calls
    assert (step2.agent_name, step2.inputs["message"], step2.status) == ("engineer", "compute spectrum", "completed")
    assert step2.outputs == {"response": "spectrum written"} and step2.meta["execution_time"] == 2.0
    assert tool.parent_event_id == step2.id
    assert (step3.agent_name, step3.inputs["message"], step3.status) == ("step", "unplanned step", "failed")
    assert (error.agent_name, error.error_message, error.parent_event_id) == ("step", "boom", step3.id)


async def test_stop_and_pause_checks_are_the_users_never_ours(sqlite_url, config) -> None:
    paused: list[str] = []
    async with capture_run(sqlite_url, config=config, hooks=False) as run:
        plain = create_callbacks_with_event_capture(run)
        assert (plain.should_continue, plain.on_pause_check) == (None, None)  # present: MARS reads them directly
        assert plain.check_should_continue() is True
        stop = create_callbacks_with_event_capture(run, should_continue=lambda: False,
                                                   on_pause_check=lambda: paused.append("checked"))
        assert stop.check_should_continue() is False
        stop.invoke_pause_check()
    assert paused == ["checked"]


async def test_phase_changes_set_the_node_and_cost_updates_are_events(sqlite_url, db_session_sqlite, config) -> None:
    costs: list[dict] = []
    async with capture_run(sqlite_url, config=config, hooks=False) as run:
        callbacks = create_callbacks_with_event_capture(run, on_cost_update=costs.append)
        callbacks.invoke_phase_change("control", 1)
        callbacks.invoke_cost_update({"total_cost": 0.02, "total_tokens": 900, "model_breakdown": []})
        assert await run.flush(10)
        phase = (await _events(db_session_sqlite, run.run_id, "phase"))[0]
        cost = (await _events(db_session_sqlite, run.run_id, "cost"))[0]
    assert costs == [{"total_cost": 0.02, "total_tokens": 900, "model_breakdown": []}]
    assert (phase.node_id, phase.inputs) == ("control", {"phase": "control", "step_number": 1})
    assert (cost.node_id, cost.meta, cost.outputs["total_tokens"]) == (
        "control", {"total_cost": 0.02, "total_tokens": 900}, 900)
