"""Forked children of a capturing process: they never touch the parent's writer, connection or exit
handlers, start their own writer safely, and exit with their own status at once. Real forks, in a
process of their own (forking the test runner itself would copy pytest's threads)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

FORK_DURING_TRANSACTIONS = """
import json, os, sys, threading
from cmbagent_events import CaptureConfig, capture_run_sync

url, forks = sys.argv[1], int(sys.argv[2])
cfg = CaptureConfig(buffer_size=50, flush_interval_ms=1)
children = []
with capture_run_sync(url, config=cfg, hooks=False, task_description="parent") as run:
    stop = threading.Event()

    def busy():  # keeps the parent's SQLite writer inside transactions, so forks land in one
        i = 0
        while not stop.is_set():
            run.capture_tool_call("parent", "step", {"i": i}, result=i)
            i += 1
            if i % 100 == 0:
                run.flush_sync(60)

    worker = threading.Thread(target=busy)
    worker.start()
    for n in range(forks):
        pid = os.fork()
        if pid == 0:  # the child: a run of its own on the same file, then a normal exit
            with capture_run_sync(url, config=cfg, hooks=False, task_description=f"child {n}") as mine:
                for j in range(10):
                    mine.capture_message("child", "parent", f"child {n} message {j}")
            sys.exit(0)
        children.append(pid)
    stop.set()
    worker.join()
statuses = []
for pid in children:
    _, status = os.waitpid(pid, 0)
    statuses.append(os.waitstatus_to_exitcode(status))
print(json.dumps({"statuses": statuses, "parent": run.run_id}))
"""

PLAIN_FORK = """
import json, os, sys
from cmbagent_events import capture_run_sync

with capture_run_sync(sys.argv[1], hooks=False, task_description="parent") as run:
    run.capture_message("a", "b", "before the fork")
    pid = os.fork()
    if pid == 0:
        print("child done", file=sys.stderr, flush=True)
        sys.exit(0)  # a normal exit: the parent's run is not the child's to close
    _, status = os.waitpid(pid, 0)
    run.capture_message("a", "b", "after the fork")
print(json.dumps({"child": os.waitstatus_to_exitcode(status), "parent": run.run_id}))
"""


def _run_script(tmp_path: Path, source: str, *args: str) -> dict:
    script = tmp_path / "forks.py"
    script.write_text(textwrap.dedent(source))
    done = subprocess.run([sys.executable, str(script), *args], check=False, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_children_forked_during_the_parents_transactions_write_their_own_runs(tmp_path: Path) -> None:
    """Each of 20 forks lands while the parent's writer may be inside a transaction: every child must
    connect (it hung in sqlite3.connect on SQLite's inherited locks), store its run, and exit 0."""
    path = tmp_path / "events.db"
    result = _run_script(tmp_path, FORK_DURING_TRANSACTIONS, f"sqlite+aiosqlite:///{path}", "20")
    assert result["statuses"] == [0] * 20
    con = sqlite3.connect(path)
    try:
        children = con.execute("SELECT status, total_events, dropped_events, "
                               "(SELECT count(*) FROM execution_events e WHERE e.run_id = r.id) "
                               "FROM workflow_runs r WHERE task_description LIKE 'child %'").fetchall()
        parent = con.execute("SELECT status, total_events, dropped_events FROM workflow_runs WHERE id = ?",
                             (result["parent"],)).fetchone()
    finally:
        con.close()
    assert sorted(children) == [("completed", 10, 0, 10)] * 20
    assert parent[0] == "completed" and parent[2] == 0


def test_a_plain_fork_child_exits_with_its_own_status_and_leaves_the_parents_run(tmp_path: Path) -> None:
    """The child's exit does not close (or wait for) the parent's run: it exits 0 (it exited 1 after ~45 s),
    and the parent's run goes on to completion with every event."""
    path = tmp_path / "events.db"
    result = _run_script(tmp_path, PLAIN_FORK, f"sqlite+aiosqlite:///{path}")
    assert result["child"] == 0
    con = sqlite3.connect(path)
    try:
        row = con.execute("SELECT status, total_events, dropped_events FROM workflow_runs WHERE id = ?",
                          (result["parent"],)).fetchone()
        contents = [r[0] for r in con.execute("SELECT content FROM messages ORDER BY timestamp")]
    finally:
        con.close()
    assert row == ("completed", 2, 0)
    assert contents == ["before the fork", "after the fork"]
