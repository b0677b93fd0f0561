"""CMBAgent (cmbagent 0.0.1.post63 on its AG2 fork cmbagent-autogen 0.0.91.post11): its real one_shot,
offline against the fake model server, with capture off and inside ``capture_run_sync`` (it has no
workflow callbacks: the AG2 hooks capture it); the runs must not differ and the capture must hold
the whole run (make test-clients, CMBAGENT_EVENTS_CLIENT=cmbagent)."""

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

from cmbagent_events import capture_run_sync
from cmbagent_events.testing.fake_openai import FakeOpenAI

MODEL = "gpt-4o-mini"
TASK = "Compute the sum of the first 10 integers and save it to sum.txt"
CODE = "total = sum(range(1, 11))\nwith open('sum.txt', 'w') as f:\n    f.write(str(total))\nprint('sum =', total)\n"
MANAGER = "main_cmbagent_chat"


def _one_shot(work_dir: Path) -> dict[str, Any]:
    try:
        from cmbagent import one_shot
    except Exception as exc:
        pytest.fail(f"cmbagent is not importable in the test-clients venv: {exc!r}")
    logging.getLogger("cmbagent").setLevel(logging.WARNING)
    return one_shot(TASK, max_rounds=12, engineer_model=MODEL, researcher_model=MODEL, plot_judge_model=MODEL,
                    camb_context_model=MODEL, default_llm_model=MODEL, default_formatter_model=MODEL,
                    work_dir=str(work_dir))


@pytest.fixture(scope="module")
def runs(fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The model's side: code that writes sum.txt, execution reported a success, the step completed."""
    fake_openai.set_fields("EngineerResponse", filename="sum_script", python_code=CODE,
                           code_explanation="Sums 1..10 and writes the total to sum.txt.")
    fake_openai.set_fields("post_execution_transfer", next_agent_suggestion="control", execution_status="success")
    fake_openai.set_fields("record_status", current_status="completed")
    base = tmp_path_factory.mktemp("cmbagent")
    off_dir, on_dir, db = base / "off", base / "on", base / "events.db"
    opened: list[str] = []

    def captured() -> dict[str, Any]:
        with capture_run_sync(f"sqlite+aiosqlite:///{db}", task_description=TASK, mode="one_shot", agent="engineer",
                              model=MODEL) as run:
            opened.append(run.run_id)
            return _one_shot(on_dir)

    runs = run_twice(fake_openai, lambda: _one_shot(off_dir), captured)
    return {**runs, "off_dir": off_dir, "on_dir": on_dir,
            "stored": StoredRun.read(db, opened[0]), "db": db}


def test_capture_changes_nothing_in_the_run(runs: dict[str, Any]) -> None:
    off, on = runs["off"], runs["on"]
    assert normalized_history(on["chat_history"], runs["on_dir"]) == \
        normalized_history(off["chat_history"], runs["off_dir"])
    assert produced_files(runs["on_dir"]) == produced_files(runs["off_dir"])
    assert runs["served"] == runs["served_off"]


def test_the_capture_holds_the_whole_run(runs: dict[str, Any]) -> None:
    stored = runs["stored"]
    # The fork (ag2 0.9.1) reports no group transitions: AfterWork / ReplyResult are inferred by the hooks.
    check_capture(stored, runs["served"], MANAGER, runs["on_dir"], {"sum.txt": "data"},
                  {"AfterWork", "ReplyResult", "speaker_selection"})
    check_llm_calls(runs["db"], stored.run["id"], runs["requests"], runs["replies"])
    by_type = stored.by_type()
    assert set(t for t, _ in by_type) == {"agent_call", "handoff", "llm_call", "tool_call", "code_exec", "file_gen"}
    print(f"\ncmbagent one_shot captured: {dict(sorted(by_type.items()))}; "
          f"{runs['seconds_off']:.1f} s off, {runs['seconds_on']:.1f} s on")


def test_a_replay_runs_offline_from_the_record(runs: dict[str, Any], fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """The captured one_shot again with no model server: every call served from the record, the same
    event tree, the same chat and files."""
    replay_db, work = tmp_path / "replayed.db", tmp_path / "replayed"
    asked = len(fake_openai.requests)

    def replayed_run() -> dict[str, Any]:
        with capture_run_sync(f"sqlite+aiosqlite:///{replay_db}", task_description=TASK, mode="one_shot"):
            return _one_shot(work)

    result, report, seconds = replay_offline(runs["db"], runs["stored"].run["id"], replayed_run)
    assert len(fake_openai.requests) == asked
    replayed = StoredRun.read(replay_db)
    assert shape(replayed) == shape(runs["stored"])
    assert normalized_history(result["chat_history"], work) == \
        normalized_history(runs["on"]["chat_history"], runs["on_dir"])
    assert report.served == report.recorded > 0 and report.diverged_at is None
    assert replayed.run["meta"]["replay_of"] == runs["stored"].run["id"]
    print(f"\ncmbagent one_shot replayed: {report.recorded} recorded model calls, {report.served} served; "
          f"{runs['seconds_on']:.1f} s recorded, {seconds:.1f} s replayed")
