"""The demo, the CLI and test collection where AG2 1.x is the AG2 installed.

"Only AG2 1.x" is made real in a child interpreter by hiding ``autogen`` (``sys.modules["autogen"] =
None``: its import fails and ``find_spec`` finds nothing), since this venv also holds classic AG2.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.ag2_v1

REPO = Path(__file__).resolve().parents[2]
WITHOUT_AUTOGEN = "import sys; sys.modules['autogen'] = None; "
EVERY_KIND = {"agent_call", "message", "tool_call", "code_exec", "file_gen", "handoff", "llm_call"}


def child(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CMBAGENT_EVENTS_AG2": "none"}  # the classic flavour this child has: none
    return subprocess.run([sys.executable, "-c", WITHOUT_AUTOGEN + code, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, check=False, env=env)


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchall()


def test_demo_runs_on_ag2_v1_when_it_is_the_ag2_installed(tmp_path: Path) -> None:
    db, work = tmp_path / "demo.db", tmp_path / "work"
    done = child("from cmbagent_events.cli import main; sys.exit(main(sys.argv[1:]))",
                 "--db", f"sqlite+aiosqlite:///{db}", "demo", "--work-dir", str(work), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "AG2 1.x hub workflow" in done.stdout and "channel closed: approved" in done.stdout
    assert "import autogen" not in done.stderr
    [(run_id, status, total, dropped)] = rows(db, "SELECT id, status, total_events, dropped_events FROM workflow_runs")
    assert (status, dropped) == ("completed", 0)
    events = rows(db, "SELECT seq, event_type, event_subtype, agent_name, meta FROM execution_events ORDER BY seq")
    assert [e[0] for e in events] == list(range(total))
    kinds = Counter("message" if sub == "message" else kind for _, kind, sub, _, _ in events)
    assert kinds == {"agent_call": 3, "llm_call": 6, "tool_call": 3, "code_exec": 1, "file_gen": 1,
                     "message": 4, "handoff": 3}
    assert set(kinds) >= EVERY_KIND
    handoffs = rows(db, "SELECT inputs, meta FROM execution_events WHERE event_type = 'handoff' ORDER BY seq")
    assert [(json.loads(i)["from_agent"], json.loads(i)["to_agent"], json.loads(m)["reason"]) for i, m in handoffs] == [
        ("lead", "planner", "transition"), ("planner", "engineer", "needs code that writes the CSV"),
        ("engineer", "reviewer", "transition")]
    [(path, size)] = rows(db, "SELECT file_path, size_bytes FROM files")
    assert Path(path) == (work / "cmb_tt_spectrum.csv").resolve() and size == Path(path).stat().st_size

    # show, export: the stored 1.x run, read back by the CLI (still without autogen).
    shown = child("from cmbagent_events.cli import main; sys.exit(main(sys.argv[1:]))",
                  "--db", f"sqlite+aiosqlite:///{db}", "show", run_id, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "handoff planner -> engineer [needs code that writes the CSV]" in shown.stdout
    assert "code_exec python exit=0" in shown.stdout and "tool_call run_code(" in shown.stdout
    exported = child("from cmbagent_events.cli import main; sys.exit(main(sys.argv[1:]))",
                     "--db", f"sqlite+aiosqlite:///{db}", "export", run_id, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in exported.stdout.splitlines() if line.strip()]
    assert [e["seq"] for e in lines if "seq" in e] == list(range(total))


def test_the_suite_collects_without_errors_when_only_ag2_v1_is_installed() -> None:
    done = child("import pytest; sys.exit(pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', 'tests']))",
                 cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "error" not in done.stdout.lower().split("\n")[-2], done.stdout[-2000:]
    assert "tests/ag2_v1/test_ag2_v1.py::test_tool_call_is_captured_exactly" in done.stdout
