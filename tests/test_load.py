"""Load: a producer faster than the writer (exact drop accounting), several processes writing one
database, and the 1,000,000-event soak (marker ``soak``: `make soak`)."""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from sqlalchemy import func, select

from cmbagent_events import CaptureConfig, ExecutionEvent, WorkflowRun, capture_run
from cmbagent_events.testing.waiting import writer_held


async def test_producer_faster_than_the_writer_counts_every_drop(db_url, db_session) -> None:
    cfg = CaptureConfig(queue_size=5_000, buffer_size=500, flush_interval_ms=5)
    total = 100_000
    async with capture_run(db_url, config=cfg, hooks=False) as run:
        def produce() -> None:
            for i in range(total // 2):
                run.capture_tool_call("fast", "t", i)

        threads = [threading.Thread(target=produce) for _ in range(2)]
        with writer_held():  # the writer cannot drain meanwhile: drops are certain
            for t in threads:
                t.start()
            threads[0].join()
        await asyncio.to_thread(threads[1].join)  # the writer drains while the other producer finishes
        dropped = run.get_performance_stats()["dropped_events"]
    row = await db_session.get(WorkflowRun, run.run_id)
    written = await db_session.scalar(select(func.count()).where(ExecutionEvent.run_id == run.run_id))
    assert dropped > 0  # the producers really outran the writer
    assert row.total_events == total and row.dropped_events == dropped and written == total - dropped
    max_seq = await db_session.scalar(select(func.max(ExecutionEvent.seq)).where(ExecutionEvent.run_id == run.run_id))
    assert max_seq < total  # the seq range is the run's; the gaps are exactly the drops


async def test_several_processes_write_one_database_concurrently(db_url, db_session, tmp_path) -> None:
    script = textwrap.dedent("""
        import asyncio, sys
        from cmbagent_events import CaptureConfig, capture_run
        async def main():
            async with capture_run(sys.argv[1], config=CaptureConfig(), hooks=False, task_description="proc") as run:
                for i in range(3000):
                    run.capture_message("p", "q", str(i))
                    if i % 500 == 0:
                        await asyncio.sleep(0)
            print(run.run_id)
        asyncio.run(main())
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, db_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    run_ids = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        run_ids.append(out.split()[-1])
    assert len(set(run_ids)) == 3
    for run_id in run_ids:
        row = await db_session.get(WorkflowRun, run_id)
        seqs = (await db_session.scalars(select(ExecutionEvent.seq).where(ExecutionEvent.run_id == run_id))).all()
        assert sorted(seqs) == list(range(3000)) and (row.status, row.dropped_events) == ("completed", 0)


@pytest.mark.soak
async def test_soak_one_million_events_gapless_with_bounded_memory(db_url, db_session) -> None:
    """4 threads and 4 tasks, 1,000,000 events; producers back off when the queue is deep (as a
    real run's pace would), so nothing is dropped and memory stays bounded by the queue."""
    total, producers = 1_000_000, 8
    per = total // producers
    cfg = CaptureConfig(queue_size=100_000, buffer_size=2_000)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    async with capture_run(db_url, config=cfg, hooks=False, task_description="soak") as run:
        def thread_producer(n: int) -> None:
            for _ in range(per):
                while len(run.bus) > 80_000:
                    time.sleep(0.001)
                run.capture_message(f"thread-{n}", "sink", "x" * 40)

        async def task_producer(n: int) -> None:
            for i in range(per):
                if i % 1_000 == 0:
                    while len(run.bus) > 80_000:
                        await asyncio.sleep(0.001)
                    await asyncio.sleep(0)
                run.capture_tool_call(f"task-{n}", "t", {"i": i})

        threads = [threading.Thread(target=thread_producer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        await asyncio.gather(*(task_producer(n) for n in range(4)))
        while any(t.is_alive() for t in threads):
            await asyncio.sleep(0.01)
        stats = run.get_performance_stats()
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = await db_session.get(WorkflowRun, run.run_id)
    count = await db_session.scalar(select(func.count()).where(ExecutionEvent.run_id == run.run_id))
    distinct = await db_session.scalar(select(func.count(func.distinct(ExecutionEvent.seq)))
                                       .where(ExecutionEvent.run_id == run.run_id))
    top = await db_session.scalar(select(func.max(ExecutionEvent.seq)).where(ExecutionEvent.run_id == run.run_id))
    assert (row.total_events, row.dropped_events, count, distinct, top) == (total, 0, total, total, total - 1)
    assert stats["queue_high_water"] <= 100_000
    print(f"\nsoak: {total} events in {elapsed:.1f}s ({total / elapsed:,.0f}/s), 0 dropped, "
          f"peak RSS {peak_mb:.0f} MB (was {rss_before / 1024:.0f} MB), queue high water {stats['queue_high_water']}")
