"""Orphaned runs (issue: "the run row is written at entry, with a heartbeat while it runs;
close-orphans, the viewer, `runs` and `tail` recognise runs whose heartbeat stopped"). Real child
processes killed with SIGKILL, real SQLite files and PostgreSQL, the real writer's heartbeat."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from cmbagent_events import CaptureConfig, ExecutionEvent, WorkflowRun, capture_run, make_engine
from cmbagent_events.cli import main as cli_main
from cmbagent_events.store.orphans import close_orphans
from cmbagent_events.testing.child_run import start_child_run
from cmbagent_events.writer import BatchWriter

ENTER_AND_WAIT = """
import sys, time
from cmbagent_events import capture_run_sync
with capture_run_sync(sys.argv[1], hooks=False, task_description="killed before its first event") as run:
    print(run.run_id, flush=True)
    while True:  # no event is ever captured: only the run row can show this run existed
        time.sleep(1)
"""

CAPTURING = """
import sys
from cmbagent_events import CaptureConfig, capture_run_sync
with capture_run_sync(sys.argv[1], config=CaptureConfig(flush_interval_ms=20), hooks=False) as run:
    for i in range(300):
        run.capture_tool_call("worker", "step", {"i": i}, result=i)
    assert run.flush_sync(60)
    print(run.run_id, flush=True)
    while True:
        run.capture_tool_call("worker", "step", {"i": 0})
"""


async def _run_row(db_url: str, run_id: str) -> WorkflowRun | None:
    engine = make_engine(db_url)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            return await session.get(WorkflowRun, run_id)
    finally:
        await engine.dispose()


async def test_a_run_killed_before_its_first_event_has_a_row_that_runs_closes(
        db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    child, run_id = start_child_run(tmp_path, ENTER_AND_WAIT, db_url)
    try:
        for _ in range(600):  # the row is written at entry, not with the first batch: wait for that state
            if await _run_row(db_url, run_id) is not None:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("no run row 60 s after entry: a kill now would leave no trace of the run")
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
    assert (await _run_row(db_url, run_id)).status == "running"  # type: ignore[union-attr]
    assert await asyncio.to_thread(cli_main, ["runs", "--db", db_url]) == 0  # `runs` closes orphans first
    assert run_id in capsys.readouterr().out
    row = await _run_row(db_url, run_id)
    assert row is not None
    assert (row.status, row.total_events, row.dropped_events) == ("abandoned", 0, 0)
    assert row.meta["abandoned"]["reason"] == "process gone"


async def test_tail_of_a_killed_run_ends_instead_of_following_forever(db_url: str, tmp_path: Path) -> None:
    child, run_id = start_child_run(tmp_path, CAPTURING, db_url)
    child.kill()
    child.communicate(timeout=60)
    tail = subprocess.Popen([sys.executable, "-m", "cmbagent_events.cli", "tail", run_id, "--db", db_url,
                             "--poll", "0.05"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = await asyncio.to_thread(tail.communicate, timeout=120)
    except subprocess.TimeoutExpired:
        tail.kill()
        tail.communicate()
        pytest.fail("tail still following a killed run after 120 s")
    assert tail.returncode == 0, err
    assert "-- run ended: abandoned --" in out


async def test_the_heartbeat_keeps_a_run_alive_and_a_stopped_one_makes_it_an_orphan(
        db_url: str, db_session, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run from another host (its process cannot be checked from here): only signs of life tell
    whether it is still going. The writer's heartbeat is one; once it stops, the run is abandoned."""
    monkeypatch.setattr(BatchWriter, "HEARTBEAT_S", 0.0)  # every batch carries one (normally every 15 s)
    async with capture_run(db_url, config=CaptureConfig(flush_interval_ms=20), hooks=False) as run:
        run.capture_tool_call("worker", "step", {"i": 1})
        assert await run.flush(30)
        row = await db_session.get(WorkflowRun, run.run_id)
        beat = datetime.fromisoformat(row.meta["heartbeat"])
        assert abs(datetime.now(UTC) - beat) < timedelta(hours=1)  # stamped by this run's writer, now

    # The same run as a crash on another host would leave it: still "running", started and last
    # seen an hour ago, except for its heartbeat (as stamped by the writer).
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    meta = {**row.meta, "process": {"host": "another-host.example", "pid": 1}}

    async def crash(heartbeat: datetime) -> None:
        await db_session.execute(update(WorkflowRun).where(WorkflowRun.id == run.run_id).values(
            status="running", started_at=hour_ago, completed_at=None,
            meta={**meta, "heartbeat": heartbeat.isoformat()}))
        await db_session.execute(update(ExecutionEvent).where(ExecutionEvent.run_id == run.run_id).values(
            timestamp=hour_ago, completed_at=None))
        await db_session.commit()

    engine = make_engine(db_url)
    try:
        await crash(heartbeat=datetime.now(UTC))
        assert [c.run_id for c in await close_orphans(engine, stale_after_s=120)] == []  # heartbeat fresh: alive
        await crash(heartbeat=hour_ago)
        closed = await close_orphans(engine, stale_after_s=120)
    finally:
        await engine.dispose()
    assert [(c.run_id, c.reason, c.total_events, c.dropped_events) for c in closed] == [
        (run.run_id, "no sign of life for 120s", 1, 0)]
    db_session.expire_all()
    row = await db_session.get(WorkflowRun, run.run_id)
    assert row.status == "abandoned"
    stored = await db_session.scalar(select(func.count()).where(ExecutionEvent.run_id == run.run_id))
    assert stored == 1


async def test_a_closer_in_another_pid_namespace_leaves_a_live_run_alone(db_url: str, capsys) -> None:
    """A viewer sidecar in the same pod: same hostname, its own PID namespace, where the run's pid does not
    exist. It must not close the live run (it did, 4 s after the start); only staleness may count there.
    The closer runs as root under ``unshare --pid --fork --mount-proc`` (CI runs as root; never skipped)."""
    import shutil

    unshare = shutil.which("unshare")
    assert unshare is not None, "unshare (util-linux) is needed for this test"
    async with capture_run(db_url, hooks=False, config=CaptureConfig(flush_interval_ms=20)) as run:
        run.capture_tool_call("worker", "step", {"i": 1}, result=1)
        assert await run.flush(30)
        closer = await asyncio.create_subprocess_exec(
            unshare, "--pid", "--fork", "--mount-proc", sys.executable, "-m", "cmbagent_events.cli",
            "close-orphans", "--db", db_url, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(closer.communicate(), 120)
        assert closer.returncode == 0, err.decode()
        assert run.run_id not in out.decode()
        row = await _run_row(db_url, run.run_id)
        assert row is not None and row.status == "running"
        assert row.meta["process"]["pid_ns"] and row.meta["process"]["boot"]
    row = await _run_row(db_url, run.run_id)
    assert row is not None and row.status == "completed"


async def test_a_run_closed_as_abandoned_that_finishes_gets_its_true_totals(db_url: str) -> None:
    """Marked abandoned by mistake (a stale-after shorter than the heartbeat), the run still finishes: its
    final row carries the true status and totals, without the abandoned marker."""
    engine = make_engine(db_url)
    try:
        async with capture_run(db_url, hooks=False, config=CaptureConfig(flush_interval_ms=20)) as run:
            for i in range(10):
                run.capture_tool_call("worker", "step", {"i": i}, result=i)
            assert await run.flush(30)
            closed = await close_orphans(engine, stale_after_s=-1)  # everything running looks stale
            assert run.run_id in {c.run_id for c in closed}
            assert (await _run_row(db_url, run.run_id)).status == "abandoned"
            for i in range(5):
                run.capture_tool_call("worker", "step", {"i": i}, result=i)
    finally:
        await engine.dispose()
    row = await _run_row(db_url, run.run_id)
    assert row.status == "completed" and row.total_events == 15 and row.dropped_events == 0
    assert "abandoned" not in row.meta


CALLING_MODELS = """
import sys, time
from cmbagent_events import CaptureConfig, capture_run_sync
with capture_run_sync(sys.argv[1], config=CaptureConfig(flush_interval_ms=20), hooks=False) as run:
    for i in range(7):
        run.capture_llm_call("analyst", "gpt-4o", 100 + i, 10 + i, cost=0.001 * (i + 1), cached_tokens=i or None)
    assert run.flush_sync(60)
    print(run.run_id, flush=True)
    while True:
        time.sleep(1)
"""


async def test_an_abandoned_run_keeps_its_tokens_and_cost(db_url: str, tmp_path: Path) -> None:
    """A run's usage totals are written by its close; a killed run never closes, so the closer sums
    them from its stored model calls: lists, the viewer and the OTLP export show them."""
    from cmbagent_events.read import open_async_store

    child, run_id = start_child_run(tmp_path, CALLING_MODELS, db_url)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    engine = make_engine(db_url)
    try:
        assert [c.run_id for c in await close_orphans(engine)] == [run_id]
    finally:
        await engine.dispose()
    async with open_async_store(db_url) as store:
        (row,) = [r for r in await store.runs(limit=None) if r["id"] == run_id]
        total = await store.cost_total(run_id)
    assert row["status"] == "abandoned" and row["llm_calls"] == 7 == total["calls"]
    assert row["total_tokens"] == sum(110 + 2 * i for i in range(7)) == total["total_tokens"]
    assert row["cost"] == pytest.approx(0.028) and row["meta"]["usage"]["cached_tokens"] == 21


async def test_closing_a_run_whose_spill_file_waits_says_how_to_replay_it(
        db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that spilled (SIGTERM or a close during an outage) and then died shows as abandoned
    until its spill file is replayed: closing it names the file and the command."""
    child, run_id = start_child_run(tmp_path, CAPTURING, db_url)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    spill = tmp_path / "spill" / f"{run_id}.jsonl"
    spill.parent.mkdir(exist_ok=True)
    spill.write_text("")  # (its content does not matter here: test_outage replays real ones)
    monkeypatch.setenv("CMBAGENT_EVENTS_SPILL_DIR", str(spill.parent))
    assert await asyncio.to_thread(cli_main, ["close-orphans", "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert f"closed {run_id} as abandoned" in out
    assert f"its spill file is waiting: cmbagent-events replay {spill}" in out
