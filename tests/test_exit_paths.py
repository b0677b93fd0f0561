"""Exit paths: sys.exit, KeyboardInterrupt, interpreter exit with an open sync run, and fork."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from cmbagent_events import ExecutionEvent, WorkflowRun, capture_run, capture_run_sync, make_engine


async def _run_row(url: str, run_id: str) -> tuple[WorkflowRun | None, int]:
    engine = make_engine(url)
    try:
        async with async_sessionmaker(engine)() as s:
            row = await s.get(WorkflowRun, run_id)
            count = await s.scalar(select(func.count()).where(ExecutionEvent.run_id == run_id))
            return row, count
    finally:
        await engine.dispose()


@pytest.mark.parametrize(("code", "status"), [(0, "completed"), (None, "completed"), (3, "failed")])
def test_sys_exit_in_a_sync_run(sqlite_url, config, code, status) -> None:
    with pytest.raises(SystemExit), capture_run_sync(sqlite_url, config=config, hooks=False) as run:
        run.capture_message("a", "b", "before exit")
        sys.exit(code)
    row, count = asyncio.run(_run_row(sqlite_url, run.run_id))
    assert row.status == status
    assert count == (1 if status == "completed" else 2)  # the message (+ the error event when failed)


def test_keyboard_interrupt_in_a_sync_run(sqlite_url, config) -> None:
    with pytest.raises(KeyboardInterrupt), capture_run_sync(sqlite_url, config=config, hooks=False) as run:
        run.capture_message("a", "b", "working")
        raise KeyboardInterrupt
    row, count = asyncio.run(_run_row(sqlite_url, run.run_id))
    assert (row.status, count) == ("failed", 2)


def test_interpreter_exit_with_an_open_sync_run_writes_everything(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'exit.db'}"
    script = textwrap.dedent(f"""
        import threading, time
        from cmbagent_events import CaptureConfig, capture_run_sync
        started = threading.Event()
        def worker():
            with capture_run_sync({url!r}, config=CaptureConfig(), hooks=False) as run:
                print(run.run_id, flush=True)
                for i in range(1234):
                    run.capture_message("a", "b", str(i))
                started.set()
                time.sleep(3600)  # never leaves the block: the interpreter exits first
        threading.Thread(target=worker, daemon=True).start()
        started.wait(30)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[0]
    row, count = asyncio.run(_run_row(url, run_id))
    assert row.status == "failed" and row.completed_at is not None
    assert count == 1235 and row.total_events == 1235 and row.dropped_events == 0  # 1234 + the exit error


def test_after_exit_the_database_file_alone_holds_the_run(tmp_path: Path) -> None:
    """At interpreter exit the write-ahead log is checkpointed into the file: a copy of the ``.db``
    alone (without its ``-wal``) has the run and its events."""
    import shutil
    import sqlite3

    db = tmp_path / "alone.db"
    script = textwrap.dedent(f"""
        from cmbagent_events import capture_run_sync
        with capture_run_sync({f"sqlite:///{db}"!r}, hooks=False, task_description="copied") as run:
            for i in range(50):
                run.capture_message("a", "b", str(i))
        print(run.run_id, flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[0]
    copy = tmp_path / "copy" / "alone.db"
    copy.parent.mkdir()
    shutil.copyfile(db, copy)  # the file alone, as a user copies or attaches it
    with sqlite3.connect(copy) as conn:
        status = conn.execute("SELECT status FROM workflow_runs WHERE id = ?", (run_id,)).fetchone()
        events = conn.execute("SELECT count(*) FROM execution_events WHERE run_id = ?", (run_id,)).fetchone()[0]
    assert status == ("completed",) and events == 50


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
async def test_forked_child_does_not_share_the_writer(sqlite_url, config) -> None:
    async with capture_run(sqlite_url, config=config, hooks=False) as run:
        run.capture_message("parent", "x", "before fork")
        pid = os.fork()
        if pid == 0:  # child: the inherited run must refuse to capture and touch nothing
            ok = run.capture_message("child", "x", "from child") is None and not run.enabled
            ok = ok and len(run.bus) == 0 and run.writer is None
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
        run.capture_message("parent", "x", "after fork")
    row, count = await _run_row(sqlite_url, run.run_id)
    assert (row.status, count, row.dropped_events) == ("completed", 2, 0)
