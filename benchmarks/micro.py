"""Micro benchmarks: emit cost per event and writer throughput, next to the raw driver ceilings.

    python -m benchmarks.micro [--quick] [--pg-url URL]

Without ``--pg-url`` a throwaway PostgreSQL server is started (and stopped) when the binaries
exist. Figures are medians over repetitions in one run (the machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cmbagent_events import CaptureConfig, capture_run
from cmbagent_events.testing import postgres_url

EVENT_COLUMNS = 20


def _payload(i: int) -> dict[str, Any]:
    return {"sender": "engineer", "recipient": "executor", "content": f"message number {i} " * 4}


async def emit_cost_ns(db_url: str, n: int, reps: int) -> dict[str, float]:
    """Median ns per capture_message call, from the loop thread and from another thread, with the
    queue as a run keeps it: below one batch (the writer drains each full batch), so no record is
    weighed; and, as ``deep_queue``, with the writer held back (every record past the first batch
    weighed against the byte bound: the writer-behind path)."""
    cfg = CaptureConfig(queue_size=n * 2 + 10, buffer_size=500)
    chunk = cfg.buffer_size - 1  # the calls timed between flushes: the queue never reaches a batch
    loop_ns: list[float] = []
    thread_ns: list[float] = []
    deep_ns: list[float] = []
    async with capture_run(db_url, config=cfg, hooks=False, task_description="micro: emit") as run:
        capture = run.capture_message

        def produce(count: int) -> float:
            t0 = time.perf_counter_ns()
            for _ in range(count):
                capture("engineer", "executor", "hello")
            return time.perf_counter_ns() - t0

        for _ in range(reps):
            spent = 0.0
            for _ in range(n // chunk):
                spent += produce(chunk)
                await run.flush(60)
            loop_ns.append(spent / (n // chunk * chunk))

            result: list[float] = []

            def on_thread(result: list[float] = result) -> None:
                result.append(produce(chunk))

            spent = 0.0
            for _ in range(max(n // chunk // 10, 1)):  # a thread start per chunk: a tenth of the calls
                thread = threading.Thread(target=on_thread)
                thread.start()
                while thread.is_alive():  # keep the loop (and so the writer) running meanwhile
                    await asyncio.sleep(0.001)
                await run.flush(60)
            thread_ns.append(sum(result) / (len(result) * chunk))

            deep_ns.append(produce(n) / n)
            await run.flush(60)
    return {"loop_thread": statistics.median(loop_ns), "other_thread": statistics.median(thread_ns),
            "deep_queue": statistics.median(deep_ns)}


async def writer_events_per_s(db_url: str, n: int, batch: int, reps: int) -> float:
    """Median events/s the writer commits: n events queued, then timed until flush() returns."""
    rates = []
    cfg = CaptureConfig(queue_size=n + 10, buffer_size=batch, flush_interval_ms=3_600_000)
    async with capture_run(db_url, config=cfg, hooks=False, task_description=f"micro: writer batch {batch}") as run:
        for _ in range(reps):
            # The writer only wakes on a full batch; hold it back so the queue fills first.
            run.bus.set_waker(None)
            for i in range(n):
                run.capture_tool_call("engineer", "tool", {"i": i}, result=i)
            run.bus.set_waker(run.writer.wake)
            t0 = time.perf_counter()
            assert await run.flush(600)
            rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def sqlite_ceiling(n: int, batch: int, reps: int) -> float:
    """Raw sqlite3 executemany of 20-column rows, one commit per batch, WAL + synchronous=NORMAL."""
    rates = []
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as d:
            db = sqlite3.connect(Path(d) / "raw.db")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"CREATE TABLE t ({', '.join(f'c{i}' for i in range(EVENT_COLUMNS))})")
            rows = [tuple(f"v{i}-{j}" for j in range(EVENT_COLUMNS)) for i in range(n)]
            sql = f"INSERT INTO t VALUES ({', '.join('?' * EVENT_COLUMNS)})"
            t0 = time.perf_counter()
            for start in range(0, n, batch):
                db.executemany(sql, rows[start:start + batch])
                db.commit()
            rates.append(n / (time.perf_counter() - t0))
            db.close()
    return statistics.median(rates)


async def asyncpg_ceiling(dsn: str, n: int, batch: int, reps: int) -> float:
    """Raw asyncpg COPY of 20-column text rows, one transaction per batch."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    rates = []
    try:
        await conn.execute(f"DROP TABLE IF EXISTS bench_raw; CREATE TABLE bench_raw "
                           f"({', '.join(f'c{i} text' for i in range(EVENT_COLUMNS))})")
        rows = [tuple(f"v{i}-{j}" for j in range(EVENT_COLUMNS)) for i in range(n)]
        for _ in range(reps):
            t0 = time.perf_counter()
            for start in range(0, n, batch):
                async with conn.transaction():
                    await conn.copy_records_to_table("bench_raw", records=rows[start:start + batch])
            rates.append(n / (time.perf_counter() - t0))
        await conn.execute("DROP TABLE bench_raw")
    finally:
        await conn.close()
    return statistics.median(rates)


def writer_rows(n: int, sink: Any) -> list[tuple[Any, ...]]:
    """The ``execution_events`` rows the writer builds for ``writer_events_per_s``'s events (the
    records ``capture_tool_call`` queues), with ``sink``'s timestamps."""
    from cmbagent_events.records import INSERT, EventRecord
    from cmbagent_events.writer.rows import RowBuilder

    now = time.time_ns()
    records = [EventRecord(INSERT, f"ceiling-{i:09d}", i, now + i * 1000, "tool_call", "execute", "engineer", None,
                           0, None, None, i, ("tool", {"i": i}), {"result": i}, None, "completed", None, {}, None)
               for i in range(n)]
    built = RowBuilder(CaptureConfig(), "ceiling-run", "default", sink.timestamp, sink.timestamps).build(records)
    assert not built.waiting
    return list(built.batch().events)


def _unique(rows: list[tuple[Any, ...]], rep: int) -> list[tuple[Any, ...]]:
    return [(f"{rep}-{row[0]}", *row[1:]) for row in rows]


def sqlite_schema_ceiling(path: str, n: int, batch: int, reps: int) -> float:
    """Raw sqlite3 executemany of the writer's own rows into the real (migrated) ``execution_events``,
    one commit per batch, with the writer's PRAGMAs: what the schema's indexes leave for any writer."""
    from cmbagent_events.store.sink import SqliteSink
    from cmbagent_events.store.sqlite_thread import PRAGMAS

    sink = SqliteSink(path)
    rows = writer_rows(n, sink)
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(PRAGMAS)
    rates = []
    for rep in range(reps):
        mine = _unique(rows, rep)
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(sink._insert_events, mine[start:start + batch])
            db.execute("COMMIT")
        rates.append(n / (time.perf_counter() - t0))
    db.execute("DELETE FROM execution_events WHERE run_id = 'ceiling-run'")
    db.close()
    return statistics.median(rates)


async def asyncpg_schema_ceiling(dsn: str, n: int, batch: int, reps: int) -> float:
    """Raw asyncpg COPY of the writer's own rows into the real (migrated) ``execution_events``, one
    transaction per batch: what the schema (indexes, json checks) leaves for any writer."""
    import asyncpg

    from cmbagent_events.store.columns import EVENT_COLUMNS
    from cmbagent_events.store.sink import PostgresSink

    rows = writer_rows(n, PostgresSink(dsn))
    conn = await asyncpg.connect(dsn)
    rates = []
    try:
        for rep in range(reps):
            mine = _unique(rows, rep)
            t0 = time.perf_counter()
            for start in range(0, n, batch):
                async with conn.transaction():
                    await conn.copy_records_to_table("execution_events", records=mine[start:start + batch],
                                                     columns=EVENT_COLUMNS)
            rates.append(n / (time.perf_counter() - t0))
        await conn.execute("DELETE FROM execution_events WHERE run_id = 'ceiling-run'")
    finally:
        await conn.close()
    return statistics.median(rates)


def redaction_ns_per_event(n: int, reps: int) -> dict[str, float]:
    """Median ns per event the writer spends making payloads safe (truncation, secret keys, free-text
    secrets, JSON) against plain msgspec encoding of the same values, for ordinary events and for
    events holding secrets (which take the exact path)."""
    import msgspec

    from cmbagent_events.writer.encode import Sanitizer

    content = "Here is the plan: load the CMB maps, compute the power spectrum, then plot it. " * 4
    plain = [
        ({"sender": "planner", "recipient": "engineer", "content": content}, {"tokens": None}),
        ({"tool_name": "compute_spectrum", "arguments": '{"lmax": 2000, "maps": ["a.fits"]}'}, {"result": "ok"}),
        ({"message": {"role": "assistant", "content": content, "name": "engineer"}, "context": {}}, {}),
    ]
    secret = [
        ({"sender": "planner", "recipient": "engineer", "content": "use key sk-proj-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2"}, {}),
        ({"tool_name": "fetch", "arguments": '{"url": "https://x.org", "api_key": "abcd1234"}'}, {"result": "ok"}),
        ({"message": content, "context": {"headers": [["Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x"]]}}, {}),
    ]
    sanitizer = Sanitizer(CaptureConfig().secret_keys)
    raw = msgspec.json.Encoder().encode

    def per_event(values: list[tuple[Any, Any]], encode: Any) -> float:
        timings = []
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            for i in range(n):
                inputs, meta = values[i % len(values)]
                encode(inputs)
                encode(meta)
            timings.append((time.perf_counter_ns() - t0) / n)
        return statistics.median(timings)

    def safe(value: Any) -> Any:
        return sanitizer.encode_column([value], 10_000)[0]

    baseline = per_event(plain, raw)
    ordinary = per_event(plain, safe)
    with_secrets = per_event(secret, safe)
    return {"msgspec_only": baseline, "ordinary_event": ordinary, "overhead_ordinary": ordinary - baseline,
            "event_with_secrets": with_secrets, "overhead_with_secrets": with_secrets - per_event(secret, raw)}


async def run_micro(quick: bool, pg_url: str | None) -> dict[str, Any]:
    n_emit = 20_000 if quick else 100_000
    n_write = 10_000 if quick else 50_000
    reps = 3 if quick else 5
    batches = [500] if quick else [100, 500, 2000]
    results: dict[str, Any] = {"emit_ns": {}, "writer_events_per_s": {}, "ceiling_events_per_s": {}}
    with tempfile.TemporaryDirectory() as tmp, postgres_url(pg_url) as pg_url:
        sqlite_url = f"sqlite+aiosqlite:///{tmp}/micro.db"
        backends = {"sqlite": sqlite_url}
        if pg_url:
            backends["postgresql"] = pg_url
        results["emit_ns"] = await emit_cost_ns(sqlite_url, n_emit, reps)
        results["redaction_ns"] = redaction_ns_per_event(n_write, reps)
        for name, url in backends.items():
            results["writer_events_per_s"][name] = {
                str(b): await writer_events_per_s(url, n_write, b, reps) for b in batches}
        results["ceiling_events_per_s"]["sqlite"] = {str(b): sqlite_ceiling(n_write, b, reps) for b in batches}
        results["schema_ceiling_events_per_s"] = {"sqlite": {
            str(b): sqlite_schema_ceiling(f"{tmp}/micro.db", n_write, b, reps) for b in batches}}
        if pg_url:
            from cmbagent_events.store.database import asyncpg_dsn, parse_db_url

            dsn = asyncpg_dsn(parse_db_url(pg_url))
            results["ceiling_events_per_s"]["postgresql"] = {
                str(b): await asyncpg_ceiling(dsn, n_write, b, reps) for b in batches}
            results["schema_ceiling_events_per_s"]["postgresql"] = {
                str(b): await asyncpg_schema_ceiling(dsn, n_write, b, reps) for b in batches}
    return results


def print_micro(results: dict[str, Any]) -> None:
    emit = results["emit_ns"]
    print(f"emit cost per event (median): loop thread {emit['loop_thread']:.0f} ns, "
          f"other thread {emit['other_thread']:.0f} ns; deep queue (writer behind) "
          f"{emit.get('deep_queue', float('nan')):.0f} ns")
    red = results.get("redaction_ns")
    if red:
        print(f"payload safety per event (median): ordinary {red['ordinary_event']:.0f} ns "
              f"(+{red['overhead_ordinary']:.0f} ns over msgspec alone), with secrets "
              f"{red['event_with_secrets']:.0f} ns (+{red['overhead_with_secrets']:.0f} ns)")
    # ceiling: the raw driver into a table with no index; schema ceiling: the raw driver with the
    # writer's own rows into the real execution_events (its indexes), what any writer is bounded by
    print(f"{'backend':<11} {'batch':>6} {'writer ev/s':>12} {'ceiling ev/s':>13} {'fraction':>9} "
          f"{'schema ceiling':>15} {'fraction':>9}")
    for backend, by_batch in results["writer_events_per_s"].items():
        for batch, rate in by_batch.items():
            ceiling = results["ceiling_events_per_s"].get(backend, {}).get(batch)
            schema = results.get("schema_ceiling_events_per_s", {}).get(backend, {}).get(batch)
            frac = f"{rate / ceiling:.0%}" if ceiling else "-"
            schema_frac = f"{rate / schema:.0%}" if schema else "-"
            print(f"{backend:<11} {batch:>6} {rate:>12,.0f} {ceiling or 0:>13,.0f} {frac:>9} "
                  f"{schema or 0:>15,.0f} {schema_frac:>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pg-url", default=os.environ.get("CMBAGENT_BENCH_PG_URL"))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    results = asyncio.run(run_micro(args.quick, args.pg_url))
    print_micro(results)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
