"""Storage faults: a full disk spills instead of discarding, a deleted SQLite file is detected and
counted (never reported as written), and a database unreachable at entry is an outage the run
survives (not an exception). Real tmpfs mounts (root) and real PostgreSQL servers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cmbagent_events import CaptureConfig, capture_run
from cmbagent_events.store.sink import SqliteSink
from cmbagent_events.testing import PostgresServer, find_pg_bin
from cmbagent_events.testing.stored import stored_run

FAST = CaptureConfig(flush_interval_ms=20, buffer_size=100, close_timeout_s=3)


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); these faults need root")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB filesystem of our own, to fill."""
    mount = tmp_path / "tiny"
    _mount_tmpfs(mount, "size=1m")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "ro"
    _mount_tmpfs(mount, "size=1m,ro")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _spilled_events(spill_dir: Path, run_id: str) -> list[list]:
    path = spill_dir / f"{run_id}.jsonl"
    if not path.exists():
        return []
    return [event for line in path.read_text().splitlines() for event in json.loads(line)["events"]]


async def test_disk_full_spills_instead_of_discarding(tiny_disk: Path, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tiny_disk / 'events.db'}"
    async with capture_run(url, config=FAST, hooks=False) as run:
        for i in range(6000):
            run.capture_tool_call("agent", "tool", {"i": i, "text": f"payload {i} " * 20})
            if i % 500 == 0:
                await run.flush(5)
    stats = run.get_performance_stats()
    spilled = _spilled_events(tmp_path / "spill", run.run_id)
    assert stats["spilled_events"] == len(spilled) > 0, "disk full: nothing was spilled"
    # the database file is readable again once space is freed: what it holds, plus the spill, is everything
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_disk)], check=True)
    _, stored = await stored_run(url, run.run_id)
    spilled_seqs = {event[10] for event in spilled}
    assert not spilled_seqs & set(stored), "a spilled event was also stored"
    assert len(stored) + len(spilled_seqs) + stats["dropped_events"] == 6000
    assert stats["dropped_events"] == 0, "disk full discarded events it could spill"


async def test_disk_full_without_root_spills_instead_of_discarding(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The same fault where no tmpfs can be mounted: SQLite's own disk-full error (SQLITE_FULL's
    message), injected at the file's writer thread after three commits."""
    original = SqliteSink._write
    commits = [0]

    def full_after_three(self: SqliteSink, db: sqlite3.Connection, batch: Any) -> None:
        commits[0] += 1
        if commits[0] > 3:
            raise sqlite3.OperationalError("database or disk is full")
        original(self, db, batch)

    monkeypatch.setattr(SqliteSink, "_write", full_after_three)
    url = f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"
    async with capture_run(url, config=FAST, hooks=False) as run:
        for i in range(2000):
            run.capture_tool_call("agent", "tool", {"i": i})
            if i % 500 == 0:
                await run.flush(5)
    stats = run.get_performance_stats()
    spilled = _spilled_events(tmp_path / "spill", run.run_id)
    assert stats["spilled_events"] == len(spilled) > 0, "disk full: nothing was spilled"
    _, stored = await stored_run(url, run.run_id)
    spilled_seqs = {event[10] for event in spilled}
    assert not spilled_seqs & set(stored), "a spilled event was also stored"
    assert (len(stored) + len(spilled_seqs), stats["dropped_events"]) == (2000, 0)


async def test_deleted_sqlite_file_is_detected_and_counted(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    url = f"sqlite+aiosqlite:///{db}"
    async with capture_run(url, config=FAST, hooks=False) as run:
        for i in range(1000):
            run.capture_tool_call("a", "t", {"i": i})
        assert await run.flush(10)
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        for i in range(1000):
            run.capture_tool_call("a", "t", {"i": i})
        await run.flush(10)
    row, stored = await stored_run(url, run.run_id)
    assert row is not None, "the run row is gone with the deleted file"
    assert row.total_events == 2000
    assert len(stored) + row.dropped_events == 2000, "events written into the deleted file were reported written"
    assert row.dropped_events >= 1000
    assert row.meta["drops"].get("database file replaced", 0) >= 1000, row.meta["drops"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_postgres_down_at_entry_is_an_outage_not_an_exception(tmp_path: Path) -> None:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.fail("PostgreSQL server binaries not found")
    server = PostgresServer(bin_dir)
    server.start()
    try:
        url = server.create_database("late")
        await asyncio.to_thread(server.stop)
        async with capture_run(url, config=FAST.replace(close_timeout_s=60), hooks=False) as run:  # no raise
            ids = [run.capture_tool_call("a", "t", {"i": i}) for i in range(200)]
            assert all(ids)
            await asyncio.to_thread(server.restart)
            assert await run.flush(60), "the writer did not reconnect once the database was back"
        row, stored = await stored_run(url, run.run_id)
        assert row is not None and (row.status, row.total_events, row.dropped_events) == ("completed", 200, 0)
        assert stored == list(range(200))
    finally:
        server.cleanup()


async def test_nothing_listening_at_entry_spills(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{_free_port()}/nobody"
    async with capture_run(url, config=FAST.replace(close_timeout_s=1), hooks=False) as run:
        for i in range(100):
            run.capture_tool_call("a", "t", {"i": i})
    assert len(_spilled_events(tmp_path / "spill", run.run_id)) == 100


async def test_read_only_sqlite_at_entry_spills(read_only_disk: Path, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{read_only_disk / 'events.db'}"
    async with capture_run(url, config=FAST.replace(close_timeout_s=1), hooks=False) as run:
        for i in range(100):
            run.capture_tool_call("a", "t", {"i": i})
    assert len(_spilled_events(tmp_path / "spill", run.run_id)) == 100
    assert os.listdir(read_only_disk) == []


async def test_a_replay_cut_short_can_be_run_again(db_url: str, tmp_path: Path) -> None:
    """Replaying a spill file leaves out what the database holds: a replay cut off after part of it
    (here: the later rows deleted again) is run again and stores exactly what is missing; a third run
    writes nothing. The spill holds events, messages and model calls whole."""
    from sqlalchemy import delete

    from cmbagent_events import make_engine
    from cmbagent_events.store.models import ExecutionEvent, LlmContent, Message
    from cmbagent_events.writer.spill import replay

    url = f"postgresql+asyncpg://postgres@127.0.0.1:{_free_port()}/nobody"
    async with capture_run(url, config=FAST.replace(close_timeout_s=1, buffer_size=10), hooks=False) as run:
        history: list[dict[str, Any]] = []
        for i in range(40):
            run.capture_message("a", "b", f"turn {i}")
            history.append({"role": "user", "content": f"turn {i}"})
            run.capture_llm_call("a", "gpt-4o", 10, 2, request={"model": "gpt-4o", "messages": history},
                                 response={"choices": [{"message": {"role": "assistant", "content": f"r{i}"}}]})
    (spill,) = (tmp_path / "spill").glob(f"{run.run_id}*.jsonl")
    kept = spill.read_bytes()
    assert await replay(spill, db_url) == 80
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:  # as if the first replay had stopped half way
            await conn.execute(delete(ExecutionEvent).where(ExecutionEvent.run_id == run.run_id,
                                                           ExecutionEvent.seq >= 50))
            await conn.execute(delete(Message).where(Message.run_id == run.run_id,
                                                     Message.content >= "turn 30"))
            await conn.execute(delete(LlmContent).where(LlmContent.run_id == run.run_id, LlmContent.ordinal >= 60))
    finally:
        await engine.dispose()
    spill.write_bytes(kept)
    assert await replay(spill, db_url) == 30
    spill.write_bytes(kept)
    assert await replay(spill, db_url) == 0
    row, seqs = await stored_run(db_url, run.run_id)
    assert seqs == list(range(80)) and row.total_events == 80 and row.dropped_events == 0
    from cmbagent_events.read import open_async_store

    async with open_async_store(db_url) as store:
        calls = await store.llm_calls(run.run_id)
    assert len(calls) == 40 and all(c["replayable"] for c in calls)
    assert calls[-1]["request"]["messages"] == history
    assert calls[-1]["response"]["choices"][0]["message"]["content"] == "r39"
