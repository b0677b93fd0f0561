"""Killed processes: SIGTERM drains the run like Ctrl-C; after SIGKILL, ``close-orphans`` closes the
run as ``abandoned`` with total = max seq + 1 and dropped = the seqs never stored. Real processes,
real signals, real databases."""

from __future__ import annotations

import asyncio
import signal

import pytest
from sqlalchemy import func, select

from cmbagent_events import ExecutionEvent, WorkflowRun
from cmbagent_events.cli import main as cli_main
from cmbagent_events.testing.child_run import start_child_run

CHILD_SYNC = """
import sys
from cmbagent_events import CaptureConfig, capture_run_sync
cfg = CaptureConfig(flush_interval_ms=20, close_timeout_s=30)
with capture_run_sync(sys.argv[1], config=cfg, hooks=False, task_description="kill me") as run:
    for i in range(500):
        run.capture_tool_call("worker", "step", {"i": i}, result=i)
    assert run.flush_sync(60)
    print(run.run_id, flush=True)
    i = 0
    while True:  # until the signal: capture as fast as the writer can keep up with
        i += 1
        run.capture_tool_call("worker", "step", {"i": i}, result=i)
        if i % 200 == 0:
            run.flush_sync(60)
"""

CHILD_ASYNC = """
import asyncio, sys
from cmbagent_events import CaptureConfig, capture_run

async def main():
    cfg = CaptureConfig(flush_interval_ms=20, close_timeout_s=30)
    async with capture_run(sys.argv[1], config=cfg, hooks=False, task_description="kill me") as run:
        for i in range(500):
            run.capture_tool_call("worker", "step", {"i": i}, result=i)
        assert await run.flush(60)
        print(run.run_id, flush=True)
        i = 0
        while True:
            i += 1
            run.capture_tool_call("worker", "step", {"i": i}, result=i)
            if i % 200 == 0:
                await run.flush(60)

asyncio.run(main())
"""


async def _counts(db_session, run_id: str) -> tuple[WorkflowRun, int, int]:
    db_session.expire_all()
    run = await db_session.get(WorkflowRun, run_id)
    stored, max_seq = (await db_session.execute(
        select(func.count(), func.max(ExecutionEvent.seq)).where(ExecutionEvent.run_id == run_id))).one()
    return run, int(stored), -1 if max_seq is None else int(max_seq)


@pytest.mark.parametrize("writer", ["thread", "process"])
@pytest.mark.parametrize("source", [CHILD_SYNC, CHILD_ASYNC], ids=["sync", "async"])
async def test_sigterm_drains_the_run_and_exits_143(source, writer, db_url, db_session, tmp_path) -> None:
    source = source.replace("close_timeout_s=30)", f"close_timeout_s=30, writer={writer!r})")
    assert writer in source
    child, run_id = start_child_run(tmp_path, source, db_url)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 143, stderr
    run, stored, max_seq = await _counts(db_session, run_id)
    assert run.status == "failed"
    assert (run.meta["capture"].get("writer") == "process") == (writer == "process")
    # everything captured is stored or counted: nothing lost silently (the error event included)
    assert stored + run.dropped_events == run.total_events
    print(f"\nSIGTERM {source[:30].split()[-1]}: captured {run.total_events}, stored {stored}, "
          f"dropped {run.dropped_events} {run.meta.get('drops', {})}")
    # drained, not dropped: at most the one capture call the signal interrupted, counted as such
    assert run.dropped_events <= 1 and set(run.meta.get("drops", {})) <= {"interrupted mid-capture"}
    assert max_seq == run.total_events - 1
    errors = (await db_session.scalars(select(ExecutionEvent).where(
        ExecutionEvent.run_id == run_id, ExecutionEvent.event_type == "error"))).all()
    assert [e.event_subtype for e in errors] == ["Terminated"]
    assert "SIGTERM" in errors[0].error_message


APP_HANDLER = """
import signal
stop = []
def mine(signum, frame):  # the application's own graceful shutdown: checkpoint, then leave the loop
    print("checkpoint saved", file=sys.stderr, flush=True)
    stop.append(signum)
signal.signal(signal.SIGTERM, mine)
"""


@pytest.mark.parametrize("source", [CHILD_SYNC, CHILD_ASYNC], ids=["sync", "async"])
async def test_an_applications_own_sigterm_handler_decides_how_the_process_ends(
        source, sqlite_url, db_session_sqlite, tmp_path) -> None:
    """Its handler runs, we neither raise nor cancel on top of it: the application leaves its loop, the run
    closes completed with exact totals and the process exits 0 (exit 143 without its checkpoint before)."""
    source = source.replace("from cmbagent_events import", APP_HANDLER + "from cmbagent_events import", 1)
    source = source.replace("while True:", "while not stop:")
    child, run_id = start_child_run(tmp_path, source, sqlite_url)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 0, stderr
    assert "checkpoint saved" in stderr
    run, stored, max_seq = await _counts(db_session_sqlite, run_id)
    assert run.status == "completed" and run.dropped_events == 0
    assert stored == run.total_events == max_seq + 1


CHILD_BLOCKED = """
import asyncio, sys, time
from cmbagent_events import CaptureConfig, capture_run

async def main():
    # no batch is full (300 < 500) and the interval is out of reach: only a drain writes these
    cfg = CaptureConfig(flush_interval_ms=3_600_000, close_timeout_s=30)
    async with capture_run(sys.argv[1], config=cfg, hooks=False, task_description="blocked") as run:
        print(run.run_id, flush=True)
        for i in range(300):
            run.capture_tool_call("worker", "step", {"i": i}, result=i)
        print("blocked", flush=True)
        time.sleep(600)  # sync code inside the async block: the caller's loop never runs again

asyncio.run(main())
"""


async def test_sigterm_then_sigkill_of_a_blocked_async_body_keeps_what_it_captured(
        db_url, db_session, tmp_path, capsys) -> None:
    """A MARS-style cancel (SIGTERM, SIGKILL a little later) of a body blocked in sync code: the writer
    lives on its own thread, so SIGTERM's drain commits the run row and every event before the kill."""
    child, run_id = start_child_run(tmp_path, CHILD_BLOCKED, db_url)
    assert child.stdout is not None and child.stdout.readline().strip() == "blocked"
    child.send_signal(signal.SIGTERM)

    async def stored_all() -> bool:
        run, stored, _ = await _counts(db_session, run_id)
        return run is not None and stored == 300

    await until_async(stored_all, timeout=60)
    child.kill()
    child.communicate(timeout=60)
    assert await asyncio.to_thread(cli_main, ["close-orphans", "--db", db_url]) == 0
    run, stored, max_seq = await _counts(db_session, run_id)
    assert run.status == "abandoned" and stored == run.total_events == max_seq + 1 == 300
    assert run.dropped_events == 0


async def until_async(condition, timeout: float) -> None:
    """Poll an async condition until it holds (TimeoutError: the test fails)."""
    async def poll() -> None:
        while not await condition():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


@pytest.mark.parametrize("source", [CHILD_SYNC, CHILD_ASYNC], ids=["sync", "async"])
async def test_sigkill_leaves_an_orphan_that_close_orphans_closes(source, db_url, db_session, tmp_path,
                                                                   capsys) -> None:
    child, run_id = start_child_run(tmp_path, source, db_url)
    child.kill()
    child.communicate(timeout=60)
    run, stored, max_seq = await _counts(db_session, run_id)
    assert run.status == "running" and stored >= 500
    assert await asyncio.to_thread(cli_main, ["close-orphans", "--db", db_url]) == 0
    assert f"closed {run_id} as abandoned (process gone)" in capsys.readouterr().out
    run, stored, max_seq = await _counts(db_session, run_id)
    assert run.status == "abandoned" and run.completed_at is not None
    assert run.total_events == max_seq + 1
    assert run.dropped_events == run.total_events - stored  # the gaps: what the dead process still held
    assert run.meta["abandoned"]["reason"] == "process gone"
    assert await asyncio.to_thread(cli_main, ["close-orphans", "--db", db_url]) == 0  # idempotent
    assert "no orphaned runs" in capsys.readouterr().out


async def test_close_orphans_leaves_live_runs_alone(sqlite_url, db_session_sqlite, capsys) -> None:
    from cmbagent_events import capture_run

    async with capture_run(sqlite_url, hooks=False) as run:
        run.capture_error("x", "boom")
        assert await run.flush(30)
        assert await asyncio.to_thread(cli_main, ["close-orphans", "--db", sqlite_url]) == 0  # our own, live process
        assert "no orphaned runs" in capsys.readouterr().out
    row = await db_session_sqlite.get(WorkflowRun, run.run_id)
    assert row.status == "completed"


async def test_the_viewer_shows_a_killed_run_as_abandoned(sqlite_url, tmp_path) -> None:
    import aiohttp

    from cmbagent_events.live.server import start_server

    child, run_id = start_child_run(tmp_path, CHILD_SYNC, sqlite_url)
    child.kill()
    child.communicate(timeout=60)
    server = await start_server(sqlite_url, port=0, poll_interval=0.05)
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{server.url}/api/runs") as response:
            runs = {r["id"]: r for r in (await response.json())["runs"]}
    finally:
        await server.close()
    assert runs[run_id]["status"] == "abandoned"


CHILD_BLOCKED_LONG = """
import asyncio, sys, time
from cmbagent_events import CaptureConfig, capture_run

async def main():
    cfg = CaptureConfig(flush_interval_ms=50)
    async with capture_run(sys.argv[1], config=cfg, hooks=False, task_description="a long sync step") as run:
        for i in range(100):
            run.capture_tool_call("worker", "step", {"i": i}, result=i)
        print(run.run_id, flush=True)
        sys.stdin.readline()  # blocked in sync code (a 170 s code block, say) until the test says go on
        for i in range(100):
            run.capture_tool_call("worker", "step", {"i": i}, result=i)

asyncio.run(main())
"""


async def test_a_long_blocked_async_body_keeps_its_heartbeat_and_is_never_abandoned(db_url, db_session, tmp_path,
                                                                                 capsys) -> None:
    """While the body blocks, the writer (on its own thread) writes the events and stamps the heartbeat:
    close-orphans with a stale-after above the heartbeat interval leaves the run alone, and it ends
    completed with exact totals (it had no run row, and after 120 s was closed as abandoned)."""
    from cmbagent_events.writer import BatchWriter

    child, run_id = start_child_run(tmp_path, CHILD_BLOCKED_LONG, db_url, stdin=True)
    assert child.stdin is not None
    try:
        async def beating() -> bool:
            run, stored, _ = await _counts(db_session, run_id)
            return run is not None and stored == 100 and "heartbeat" in (run.meta or {})

        await until_async(beating, timeout=BatchWriter.HEARTBEAT_S * 4)
        stale = str(BatchWriter.HEARTBEAT_S * 2)
        assert await asyncio.to_thread(cli_main, ["close-orphans", "--db", db_url, "--stale-after", stale]) == 0
        assert run_id not in capsys.readouterr().out  # (other tests' dead runs may be closed meanwhile)
        assert (await _counts(db_session, run_id))[0].status == "running"
        child.stdin.write("go on\n")
        child.stdin.flush()
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, stderr
    run, stored, max_seq = await _counts(db_session, run_id)
    assert run.status == "completed" and stored == run.total_events == max_seq + 1 == 200
