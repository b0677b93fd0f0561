"""The MARS integration's capture half without MARS installed (the real MARS runs in make test-clients):
run opened at the first workflow start, phases nested, closed once, bad URLs and a missing MARS told."""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from cmbagent_events import DatabaseURLError, get_event_captor
from cmbagent_events.integrations.mars import MarsRunCapture, capture_callbacks


def _rows(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_workflow_phases_and_steps_make_one_run(tmp_path: Path, config) -> None:
    db = tmp_path / "events.db"
    capture = MarsRunCapture(f"sqlite+aiosqlite:///{db}", config=config, hooks=False)
    on = capture.handlers()
    assert "should_continue" not in on and "on_pause_check" not in on
    on["on_step_start"](SimpleNamespace(step_number=1))  # before any run: ignored, never raised
    on["on_workflow_start"]("Fit the spectrum", {"mode": "deep_research", "agent": "planner",
                                                 "default_llm_model": "gpt-4o-mini"})
    run = capture.handle.run
    assert get_event_captor() is run
    on["on_workflow_start"]("Fit the spectrum", {"phase_id": "planning", "phase_type": "planning"})
    on["on_planning_complete"](SimpleNamespace(task="Fit", num_steps=1, steps=[{"sub_task_agent": "engineer"}],
                                               plan_text="1. engineer", planning_time=0.5))
    on["on_workflow_complete"]({"plan": "ok"}, 0.5)  # the phase ends, the run stays open
    assert capture.handle is not None
    on["on_step_start"](SimpleNamespace(step_number=1, goal="compute", status="running"))
    on["on_cost_update"]({"total_cost": 0.01, "total_tokens": 500})
    on["on_workflow_complete"]({"chat_history": [{"content": "x"}] * 3}, 2.0)
    assert capture.handle is None and get_event_captor() is not run
    on["on_workflow_complete"]({}, 1.0)  # a stray completion after the end: ignored
    (status, mode, agent, model, total), = _rows(db, "SELECT status, mode, agent, model, total_events "
                                                     "FROM workflow_runs")
    assert (status, mode, agent, model) == ("completed", "deep_research", "planner", "gpt-4o-mini")
    events = _rows(db, "SELECT event_type, event_subtype, node_id, agent_name, status "
                       "FROM execution_events ORDER BY seq")
    assert total == len(events)
    assert events == [
        ("workflow", "start", None, "workflow", "completed"),
        ("phase", "start", "planning", "workflow", "completed"),
        ("plan", "complete", "planning", "planner", "completed"),
        ("phase", "complete", "planning", "workflow", "completed"),
        ("agent_call", "error", "planning", "engineer", "failed"),  # closed: the workflow ended during the step
        ("cost", "update", "planning", "workflow", "completed"),
        ("workflow", "complete", "planning", "workflow", "completed"),
    ]
    (final,), = _rows(db, "SELECT outputs FROM execution_events "
                          "WHERE event_type = 'workflow' AND event_subtype = 'complete'")
    assert '"chat_history":"<list of 3>"' in final  # the client's whole result is summarised, not stored


def test_failure_closes_the_run_failed_with_one_error_and_phase_failures_do_not(tmp_path: Path, config) -> None:
    db = tmp_path / "events.db"
    capture = MarsRunCapture(f"sqlite+aiosqlite:///{db}", config=config, hooks=False, mode="one_shot")
    on = capture.handlers()
    on["on_workflow_start"]("task", {})
    on["on_workflow_start"]("task", {"phase_id": "control"})
    on["on_workflow_failed"]("phase broke", 2)
    on["on_workflow_failed"]("out of budget", None)
    on["on_workflow_failed"]("again", None)  # after the end: ignored
    assert _rows(db, "SELECT status, mode FROM workflow_runs") == [("failed", "one_shot")]
    assert _rows(db, "SELECT event_subtype, error_message FROM execution_events "
                     "WHERE event_type = 'error' ORDER BY seq") \
        == [("phase_failure", "phase broke"), ("workflow_failure", "out of budget")]


def _fit_spectrum(lmax: int) -> None:
    raise ValueError(f"ell out of range: {lmax}")


def test_a_failure_reported_from_an_except_block_carries_its_traceback(tmp_path: Path, config) -> None:
    """MARS reports a failure as ``str(exc)`` from inside its ``except``: the error event keeps where it was raised."""
    db = tmp_path / "events.db"
    capture = MarsRunCapture(f"sqlite+aiosqlite:///{db}", config=config, hooks=False)
    on = capture.handlers()
    on["on_workflow_start"]("task", {})
    on["on_step_start"](SimpleNamespace(step_number=1, agent="engineer"))
    try:
        _fit_spectrum(5000)
    except ValueError as exc:
        on["on_step_failed"](SimpleNamespace(step_number=1, error=str(exc)))
        on["on_workflow_failed"](str(exc), 1)  # the same exception: recorded once
    errors = _rows(db, "SELECT event_subtype, agent_name, error_message, json_extract(meta, '$.traceback') "
                       "FROM execution_events WHERE event_type = 'error'")
    ((subtype, agent, message, trace),) = errors
    assert (subtype, agent, message) == ("step_failure", "engineer", "ell out of range: 5000")
    assert "_fit_spectrum" in trace and "test_mars_capture.py" in trace and "ValueError" in trace
    assert _rows(db, "SELECT status FROM workflow_runs") == [("failed",)]


def test_bad_url_fails_at_creation_and_missing_mars_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatabaseURLError):
        MarsRunCapture("mysql://nowhere/db")
    if importlib.util.find_spec("cmbagent") is None:
        with pytest.raises(ImportError, match="pip install mars-cmbagent"):
            capture_callbacks(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
