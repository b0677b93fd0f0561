"""The main job end to end: a real AG2 run (scripted model), captured into SQLite, checked with plain SQL."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cmbagent_events import demo

EVERY_KIND = {"agent_call", "message", "tool_call", "code_exec", "file_gen", "handoff", "llm_call"}


def _sqlite(tmp_path: Path, name: str = "demo.db") -> tuple[str, Path]:
    path = tmp_path / name
    return f"sqlite+aiosqlite:///{path}", path


def _query(path: Path, sql: str, *params: object) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql, params).fetchall()


def _check_complete_run(path: Path, mode: str, work_dir: Path) -> str:
    """The checks every successful demo run must pass; returns the run id."""
    [(run_id, status, run_mode, total, dropped)] = _query(
        path, "SELECT id, status, mode, total_events, dropped_events FROM workflow_runs")
    assert (status, run_mode, dropped) == ("completed", mode, 0)
    seqs = [s for (s,) in _query(path, "SELECT seq FROM execution_events WHERE run_id = ? ORDER BY seq", run_id)]
    assert seqs == list(range(total)), "every captured event is stored, seq gapless"
    kinds = {("message" if sub == "message" else kind) for kind, sub in _query(
        path, "SELECT DISTINCT event_type, event_subtype FROM execution_events WHERE run_id = ?", run_id)}
    assert kinds >= EVERY_KIND, f"missing: {EVERY_KIND - kinds}"
    assert _query(path, "SELECT count(*) FROM execution_events WHERE run_id = ? AND event_type = 'error'",
                  run_id) == [(0,)]
    assert _query(path, "SELECT count(*) FROM execution_events WHERE run_id = ? AND status = 'running'",
                  run_id) == [(0,)], "every agent call was closed"
    assert _query(path, "SELECT count(*) FROM messages WHERE run_id = ?", run_id)[0][0] >= 5
    csv_path = (work_dir / demo.SPECTRUM_FILE).resolve()
    assert _query(path, "SELECT file_type, size_bytes FROM files WHERE run_id = ? AND file_path = ?",
                  run_id, str(csv_path)) == [("data", csv_path.stat().st_size)]
    [(exit_code, result)] = _query(
        path, "SELECT json_extract(meta, '$.exit_code'), json_extract(outputs, '$.result') FROM execution_events "
              "WHERE run_id = ? AND event_type = 'code_exec'", run_id)
    assert exit_code == 0 and "first acoustic peak at ell=" in result
    assert csv_path.read_text().startswith("ell,D_ell_uK2\n")
    [(tool_calls,)] = _query(path, "SELECT count(*) FROM execution_events WHERE run_id = ? AND "
                                   "event_type = 'tool_call' AND status = 'completed'", run_id)
    assert tool_calls >= 1
    [(calls, tokens)] = _query(path, "SELECT count(*), sum(json_extract(outputs, '$.usage.total_tokens')) "
                                     "FROM execution_events WHERE run_id = ? AND event_type = 'llm_call'", run_id)
    assert calls >= 3 and tokens > 0
    return run_id


def _check_printed(out: str, run_id: str) -> None:
    assert f"run {run_id} [completed]" in out
    assert "├─ #" in out and "└─ #" in out  # the tree
    assert "code_exec python exit=0" in out and "handoff " in out and "tool_call get_planck_parameters" in out
    assert "capture stats (after the run closed):" in out and "total_events" in out
    assert re.search(r"dropped_events +0 ", out) and "enabled" not in out and "execution_order" not in out
    assert "TERMINATING RUN" not in out and ">>>>>>>>" not in out  # AG2's console chatter stays out


def test_planning_and_control(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url, path = _sqlite(tmp_path)
    work = tmp_path / "work"
    assert demo.main(["--db", url, "--work-dir", str(work), "--offline"]) == 0  # the default mode
    run_id = _check_complete_run(path, "planning_and_control", work)
    out = capsys.readouterr().out
    _check_printed(out, run_id)
    assert "handoff _Group_Tool_Executor -> summarizer [OnCondition]" in out
    assert "manager broadcast messages not shown" in out
    assert f"`cmbagent-events --db {url} show {run_id}`" in out  # the hint works as printed: its database

    # The three steps: one agent_call row each, opened and completed by the callbacks, under its context.
    steps = _query(path, "SELECT json_extract(meta, '$.workflow_step'), agent_name, step_id, node_id, status, "
                         "event_subtype FROM execution_events WHERE run_id = ? AND "
                         "json_extract(meta, '$.workflow_step') IS NOT NULL ORDER BY seq", run_id)
    assert steps == [(1, "researcher", "step_1", "node_1", "completed", "complete"),
                     (2, "engineer", "step_2", "node_2", "completed", "complete"),
                     (3, "analyst", "step_3", "node_3", "completed", "complete")]
    # Each step's work nests under its step call: the code ran (and wrote the file) inside step 2.
    [(step2_id,)] = _query(path, "SELECT id FROM execution_events WHERE run_id = ? AND "
                                 "json_extract(meta, '$.workflow_step') = 2", run_id)
    for kind in ("code_exec", "file_gen"):
        for event_id, step_id in _query(path, "SELECT id, step_id FROM execution_events WHERE run_id = ? AND "
                                              "event_type = ?", run_id, kind):
            assert step_id == "step_2"
            ancestors = _query(path, """
                WITH RECURSIVE up(id, parent) AS (
                    SELECT id, parent_event_id FROM execution_events WHERE id = ?
                    UNION ALL SELECT e.id, e.parent_event_id FROM execution_events e JOIN up ON e.id = up.parent)
                SELECT id FROM up""", event_id)
            assert (step2_id,) in ancestors
    plans = _query(path, "SELECT event_subtype, json_extract(outputs, '$.num_steps') FROM execution_events "
                         "WHERE run_id = ? AND event_type = 'plan' ORDER BY seq", run_id)
    assert plans == [("start", None), ("complete", 3)]
    reasons = {r for (r,) in _query(path, "SELECT json_extract(meta, '$.reason') FROM execution_events "
                                          "WHERE run_id = ? AND event_type = 'handoff'", run_id)}
    assert {"speaker_selection", "OnCondition"} <= reasons
    tools = {t for (t,) in _query(path, "SELECT json_extract(inputs, '$.tool_name') FROM execution_events "
                                        "WHERE run_id = ? AND event_type = 'tool_call'", run_id)}
    assert tools == {"get_planck_parameters", "summarize_spectrum", "transfer_to_summarizer_1"}


def test_one_shot_through_the_environment_database(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    url, path = _sqlite(tmp_path, "from_env.db")
    monkeypatch.setenv("CMBAGENT_EVENTS_DB_URL", url)
    work = tmp_path / "work"
    assert demo.main(["--mode", "one_shot", "--work-dir", str(work), "--offline"]) == 0
    run_id = _check_complete_run(path, "one_shot", work)
    _check_printed(capsys.readouterr().out, run_id)
    speakers = _query(path, "SELECT json_extract(inputs, '$.to_agent') FROM execution_events "
                            "WHERE run_id = ? AND event_type = 'handoff' ORDER BY seq", run_id)
    assert [s for (s,) in speakers] == ["engineer", "executor", "engineer", "executor", "engineer"]


def test_a_failing_step_fails_the_run_and_still_prints_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    url, path = _sqlite(tmp_path)
    monkeypatch.setattr(demo.chats, "spectrum_code", lambda params: "```python\nraise SystemExit(3)\n```")
    assert demo.main(["--db", url, "--work-dir", str(tmp_path / "work"), "--offline"]) == 1
    captured = capsys.readouterr()
    assert "the run failed: RuntimeError: the engineer's code did not write cmb_tt_spectrum.csv" in captured.err
    [(run_id, status)] = _query(path, "SELECT id, status FROM workflow_runs")
    assert status == "failed" and f"run {run_id} [failed]" in captured.out
    steps = _query(path, "SELECT json_extract(meta, '$.workflow_step'), status, error_message FROM execution_events "
                         "WHERE run_id = ? AND json_extract(meta, '$.workflow_step') IS NOT NULL "
                         "AND event_type = 'agent_call' ORDER BY seq", run_id)
    assert steps[0][:2] == (1, "completed") and steps[1][:2] == (2, "failed") and len(steps) == 2
    assert "did not write" in steps[1][2]
    errors = _query(path, "SELECT event_subtype, json_extract(meta, '$.traceback') FROM execution_events "
                          "WHERE run_id = ? AND event_type = 'error'", run_id)
    # the step and the workflow report the same exception: one error event, with where it was raised
    [(subtype, trace)] = errors
    assert subtype == "step_failure" and "RuntimeError: the engineer's code did not write" in trace
    assert _query(path, "SELECT json_extract(meta, '$.exit_code') FROM execution_events "
                        "WHERE run_id = ? AND event_type = 'code_exec'", run_id) == [(3,)]


def test_bad_database_url_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--db", "mysql://nowhere/db", "--work-dir", str(tmp_path), "--offline"]) == 2
    assert "cmbagent-events demo:" in capsys.readouterr().err


def test_real_model_config_follows_the_environment() -> None:
    assert demo.real_model_config({}) is None
    assert demo.real_model_config({"OPENAI_API_KEY": "  "}) is None
    assert demo.real_model_config({"OPENAI_API_KEY": "sk-x"}) == {
        "model": "gpt-4o-mini", "api_type": "openai", "api_key": "sk-x"}
    chosen = demo.real_model_config({"OPENAI_API_KEY": "sk-x", "CMBAGENT_EVENTS_DEMO_MODEL": "gpt-4o"})
    assert chosen is not None and chosen["model"] == "gpt-4o"
    assert demo.Models(demo.real_model_config({"OPENAI_API_KEY": "sk-x"})).config()["api_key"] == "sk-x"


def test_a_key_without_the_openai_package_runs_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec  # the package looked for and not found (it is in the dev venv)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "openai" else find_spec(name, *args))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used")
    url, path = _sqlite(tmp_path)
    assert demo.main(["--mode", "one_shot", "--db", url, "--work-dir", str(tmp_path / "work")]) == 0
    captured = capsys.readouterr()
    assert "'openai' package is not installed" in captured.err and "offline, scripted model client" in captured.out
    [(model, meta)] = _query(path, "SELECT model, meta FROM workflow_runs")
    assert model == "scripted" and json.loads(meta)["offline"] is True


def test_python_m_runs_on_the_contract_default_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CMBAGENT_EVENTS_DB_URL", "OPENAI_API_KEY")}
    proc = subprocess.run([sys.executable, "-m", "cmbagent_events.demo", "--mode", "one_shot",
                           "--work-dir", str(tmp_path / "work")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "database: sqlite+aiosqlite:///cmbagent_events.db" in proc.stdout
    assert "capture stats (after the run closed):" in proc.stdout
    assert proc.stderr == ""
    _check_complete_run(tmp_path / "cmbagent_events.db", "one_shot", tmp_path / "work")


def test_the_demo_replays_without_its_model(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Record the demo, then run it again inside replay() with its model client unable to answer:
    every call is served from the record and the run does the same."""
    from cmbagent_events import replay
    from cmbagent_events.testing.scripted_client import ScriptedModelClient

    url, path = _sqlite(tmp_path)
    assert demo.main(["--db", url, "--work-dir", str(tmp_path / "work"), "--offline"]) == 0
    [(original,)] = _query(path, "SELECT id FROM workflow_runs")

    def no_model(self: object, params: dict) -> object:
        raise AssertionError("the model was asked during a replay")

    monkeypatch.setattr(ScriptedModelClient, "create", no_model)
    with replay(original, url) as played:
        assert demo.main(["--db", url, "--work-dir", str(tmp_path / "again"), "--offline"]) == 0
    assert played.report.served == played.report.recorded > 0 and played.report.diverged_at is None
    (replayed,) = [r for (r,) in _query(path, "SELECT id FROM workflow_runs") if r != original]
    shape = "SELECT event_type, event_subtype, agent_name, depth FROM execution_events WHERE run_id = ? ORDER BY seq"
    assert _query(path, shape, replayed) == _query(path, shape, original)
    calls = played.report.recorded
    assert f"{calls} of {calls} recorded model calls served" in capsys.readouterr().err
