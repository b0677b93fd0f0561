"""MARS (mars-cmbagent 2.2.5 on ag2 0.14.0): its real one_shot, offline against the fake model server,
run with capture off and with ``capture_callbacks()``; the two runs must not differ, and the capture
must hold the whole run (make test-clients, CMBAGENT_EVENTS_CLIENT=mars)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from client_checks import (
    StoredRun,
    check_capture,
    check_llm_calls,
    normalized_history,
    produced_files,
    replay_offline,
    run_twice,
    shape,
)

from cmbagent_events import create_callbacks_with_event_capture
from cmbagent_events.testing.fake_openai import FakeOpenAI

MODEL = "gpt-4o-mini"
TASK = "Compute the sum of the first 10 integers and save it to sum.txt"
CODE = "total = sum(range(1, 11))\nwith open('sum.txt', 'w') as f:\n    f.write(str(total))\nprint('sum =', total)\n"
MANAGER = "main_cmbagent_chat"  # MARS's GroupChatManager


def _mars() -> Any:
    """MARS's workflows and callbacks, or a failure (this target exists to run them)."""
    try:
        from cmbagent import callbacks
        from cmbagent.workflows import one_shot
    except Exception as exc:
        pytest.fail(f"MARS (mars-cmbagent) is not importable in the test-clients venv: {exc!r}")
    return one_shot, callbacks


def _script(fake: FakeOpenAI) -> None:
    """The model's side of the run: the formatter returns code that writes sum.txt, the execution
    evaluator reports success, the controller marks the step completed (then MARS terminates)."""
    fake.set_fields("EngineerResponse", filename="sum_script", python_code=CODE,
                    code_explanation="Sums 1..10 and writes the total to sum.txt.")
    fake.set_fields("post_execution_transfer", next_agent_suggestion="controller", execution_status="success")
    fake.set_fields("record_status", step_status="completed")


def _one_shot(work_dir: Path, **kwargs: Any) -> dict[str, Any]:
    one_shot, _ = _mars()
    logging.getLogger("cmbagent").setLevel(logging.WARNING)
    options: dict[str, Any] = {"max_rounds": 12, "engineer_model": MODEL, "researcher_model": MODEL,
                               "camb_context_model": MODEL, "default_llm_model": MODEL,
                               "default_evaluator_model": MODEL, "work_dir": str(work_dir)}
    return one_shot(TASK, **{**options, **kwargs})


@pytest.fixture(scope="module")
def runs(fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same one_shot twice: capture off, then on through capture_callbacks() (timed)."""
    from cmbagent_events.integrations.mars import capture_callbacks

    _script(fake_openai)
    base = tmp_path_factory.mktemp("mars")
    off_dir, on_dir, db = base / "off", base / "on", base / "events.db"
    callbacks = capture_callbacks(f"sqlite+aiosqlite:///{db}")
    runs = run_twice(fake_openai, lambda: _one_shot(off_dir), lambda: _one_shot(on_dir, callbacks=callbacks))
    return {**runs, "off_dir": off_dir, "on_dir": on_dir, "stored": StoredRun.read(db), "db": db}


def test_capture_changes_nothing_in_the_run(runs: dict[str, Any]) -> None:
    off, on = runs["off"], runs["on"]
    assert normalized_history(on["chat_history"], runs["on_dir"]) == \
        normalized_history(off["chat_history"], runs["off_dir"])
    assert produced_files(runs["on_dir"]) == produced_files(runs["off_dir"])
    assert (runs["on_dir"] / "sum.txt").read_text() == "55"
    assert runs["served"] == runs["served_off"]  # the model saw the very same requests


def test_the_capture_holds_the_whole_run(runs: dict[str, Any]) -> None:
    stored = runs["stored"]
    check_capture(stored, runs["served"], MANAGER, runs["on_dir"], {"sum.txt": "data", "sum_script.py": "code"},
                  {"AfterWork", "ReplyResult", "speaker_selection"})
    run = stored.run
    assert (run["task_description"], run["model"]) == (TASK, MODEL)
    assert run["meta"]["client"] == "mars-cmbagent" and run["meta"]["workflow_config"]["max_rounds"] == 12
    check_llm_calls(runs["db"], stored.run["id"], runs["requests"], runs["replies"])
    by_type = stored.by_type()
    assert by_type[("workflow", "start")] == by_type[("workflow", "complete")] == 1
    assert set(t for t, _ in by_type) == {"workflow", "agent_call", "handoff", "llm_call", "tool_call", "code_exec",
                                          "file_gen"}
    assert stored.events[0]["event_type"] == "workflow" and stored.events[-1]["event_type"] == "workflow"
    print(f"\nMARS one_shot captured: {dict(sorted(by_type.items()))}; "
          f"{runs['seconds_off']:.1f} s off, {runs['seconds_on']:.1f} s on")


def test_merge_callbacks_keeps_the_stop_and_pause_checks_in_any_order(sqlite_url: str) -> None:
    _, callbacks = _mars()
    from cmbagent_events import capture_run_sync
    from cmbagent_events.integrations.mars import capture_callbacks

    paused: list[str] = []
    stop = callbacks.WorkflowCallbacks(should_continue=lambda: False, on_pause_check=lambda: paused.append("x"))
    go = callbacks.WorkflowCallbacks(should_continue=lambda: True)
    with capture_run_sync(sqlite_url, hooks=False) as run:
        ours = [capture_callbacks(sqlite_url), create_callbacks_with_event_capture(run)]
        for mine in ours:
            for merged in (callbacks.merge_callbacks(mine, stop), callbacks.merge_callbacks(stop, mine)):
                assert merged.check_should_continue() is False
                merged.invoke_pause_check()
            assert callbacks.merge_callbacks(mine, go).check_should_continue() is True
            assert (mine.should_continue, mine.on_pause_check) == (None, None)
    assert paused == ["x"] * 4


def test_a_failed_workflow_closes_the_run_failed_with_one_error(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    from cmbagent_events.integrations.mars import capture_callbacks

    db = tmp_path / "events.db"
    with pytest.raises(TypeError, match="not iterable"):  # MARS itself rejects a model that is not a name
        _one_shot(tmp_path / "work", engineer_model=42, callbacks=capture_callbacks(f"sqlite+aiosqlite:///{db}"))
    stored = StoredRun.read(db)
    errors = stored.of_type("error")
    assert stored.run["status"] == "failed" and stored.run["completed_at"] is not None
    assert [(e["event_subtype"], e["agent_name"], e["error_message"]) for e in errors] == [
        ("workflow_failure", "workflow", "argument of type 'int' is not iterable")]


def test_a_replay_runs_offline_from_the_record(runs: dict[str, Any], fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """The captured one_shot again with no model server: every call served from the record, the same
    event tree, the same chat and files."""
    from cmbagent_events.integrations.mars import capture_callbacks

    replay_db, work = tmp_path / "replayed.db", tmp_path / "replayed"
    asked = len(fake_openai.requests)
    result, report, seconds = replay_offline(
        runs["db"], runs["stored"].run["id"],
        lambda: _one_shot(work, callbacks=capture_callbacks(f"sqlite+aiosqlite:///{replay_db}")))
    assert len(fake_openai.requests) == asked  # nothing reached the server (nor could: the URL was dead)
    replayed = StoredRun.read(replay_db)
    assert shape(replayed) == shape(runs["stored"])
    assert normalized_history(result["chat_history"], work) == \
        normalized_history(runs["on"]["chat_history"], runs["on_dir"])
    assert (work / "sum.txt").read_text() == "55"
    assert report.served == report.recorded > 0 and report.diverged_at is None
    assert replayed.run["meta"]["replay_of"] == runs["stored"].run["id"]
    print(f"\nMARS one_shot replayed: {report.recorded} recorded model calls, {report.served} served; "
          f"{runs['seconds_on']:.1f} s recorded, {seconds:.1f} s replayed")


def test_the_writer_process_stores_the_same_run(runs: dict[str, Any], fake_openai: FakeOpenAI, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """MARS's one_shot again, with the rows written by the writer process: the same events, the same
    model calls, and the run closed by the writer process."""
    from cmbagent_events.integrations.mars import capture_callbacks

    monkeypatch.setenv("CMBAGENT_EVENT_WRITER", "process")
    _script(fake_openai)
    db = tmp_path / "events.db"
    _one_shot(tmp_path / "work", callbacks=capture_callbacks(f"sqlite+aiosqlite:///{db}"))
    stored = StoredRun.read(db)
    assert stored.run["status"] == "completed" and stored.run["meta"]["capture"]["writer"] == "process"
    assert stored.run["dropped_events"] == 0 and stored.run["total_events"] == len(stored.events)
    assert stored.by_type() == runs["stored"].by_type()
    assert [e["agent_name"] for e in stored.events] == [e["agent_name"] for e in runs["stored"].events]
