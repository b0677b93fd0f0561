"""Installs without classic AG2: capture still works, and says once that no AG2 was found.

The process under test blocks ``import autogen`` (as on a machine with no AG2, or with only AG2 1.x,
which has no ``autogen`` package); ``make test-wheel`` checks the same from a real AG2-free venv.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from cmbagent_events.store.schema import migrations_dir

NO_AG2_RUN = """
import asyncio, logging, sys
sys.modules["autogen"] = None  # what `import autogen` finds on a machine without classic AG2
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s %(message)s")
from cmbagent_events import capture_run, hooks_report, install_ag2_hooks

async def main():
    for _ in range(2):
        async with capture_run(sys.argv[1], hooks=True) as run:
            run.capture_agent_call("planner", "plan")
            print("RUN", run.run_id)
    assert install_ag2_hooks() is False
    report = hooks_report()
    print("REPORT", report.distribution, report.active, report.transitions)

asyncio.run(main())
"""


def test_without_classic_ag2_runs_capture_and_say_so_once(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    done = subprocess.run([sys.executable, "-c", NO_AG2_RUN, f"sqlite+aiosqlite:///{db}"], check=False,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    notices = [line for line in lines if "no classic AG2" in line]
    assert len(notices) == 1 and notices[0].startswith("INFO cmbagent_events.ag2 "), done.stdout
    assert not [line for line in lines if line.startswith(("WARNING", "ERROR"))], done.stdout
    assert "REPORT None False none" in lines
    run_ids = [line.split()[1] for line in lines if line.startswith("RUN ")]
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT run_id, count(*) FROM execution_events GROUP BY run_id").fetchall()
        statuses = {r[0] for r in conn.execute("SELECT status FROM workflow_runs")}
    assert sorted(rows) == sorted((run_id, 1) for run_id in run_ids) and len(run_ids) == 2
    assert statuses == {"completed"}


def test_migrations_are_found_through_the_package() -> None:
    location = migrations_dir()
    assert (location / "env.py").is_file()
    shipped = sorted(p.name for p in (location / "versions").glob("*.py"))
    repo = sorted(p.name for p in (Path(__file__).resolve().parent.parent / "migrations" / "versions").glob("*.py"))
    assert shipped == repo and shipped
