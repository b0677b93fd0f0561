"""How fast the read side answers on big databases: ``python -m benchmarks.read`` (``make bench-read``).

On SQLite and on a throwaway PostgreSQL, it builds:
- two runs of ``--events`` events (100,000 by default) captured with the library itself (45 agents
  taking turns: agent call, model call, message, a tool call every third turn, an error every 500th),
  the second differing from the first in one reply halfway through;
- ``--runs`` more run rows (10,000 by default), copies of the first run's row under new ids and start
  times (capturing 10,000 real runs would take minutes and test nothing more here).
Then each read is timed (median of ``--repeat`` calls) and its peak Python memory taken (tracemalloc,
in a separate call): the run list, a filtered run list, ``cost`` by agent and by model, ``diff`` of
the two big runs, ``show --limit 100``, ``show`` of a whole big run (streamed: its memory
must not grow with the run) and the viewer's first page of a big run (HTTP, real server).
Goal: each under 1 s, memory bounded (independent of the run's size). Results: benchmarks/results/read.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cmbagent_events import CaptureConfig, capture_run
from cmbagent_events.testing import postgres_url

RESULTS = Path(__file__).resolve().parent / "results" / "read.json"
AGENTS = [f"agent_{i:02d}" for i in range(45)]
WHOLE_RUN = "show, the whole run"  # prints every event: a memory check (bounded), not held to the 1 s goal


def _capture_big_run(url: str, events: int, changed_turn: int | None) -> str:
    """A run of about ``events`` events; turn ``changed_turn`` gets another reply."""

    async def go() -> str:
        cfg = CaptureConfig(buffer_size=2000, queue_size=400_000, queue_max_bytes=2 << 30)
        async with capture_run(url, task_description="read benchmark: a long group chat", mode="bench",
                               config=cfg, hooks=False) as run:
            turn = 0
            while run.get_performance_stats()["total_events"] < events:
                agent = AGENTS[turn % len(AGENTS)]
                call = run.capture_agent_call(agent, f"turn {turn}: continue the analysis")
                run.capture_llm_call(agent, "gpt-4o-mini" if turn % 3 else "gpt-4o", 900 + turn % 50, 120, None,
                                     0.00021 + (turn % 7) * 1e-5, 350.0)
                if turn % 3 == 0:
                    run.capture_tool_call(agent, "compute_spectrum", {"ell_max": 2500 + turn}, "ok", None)
                if turn % 500 == 499:
                    run.capture_error(agent, f"tool failed at turn {turn}", "ValueError")
                reply = f"reply {turn}" + (" (changed)" if turn == changed_turn else "")
                run.capture_message(agent, "chat_manager", reply)
                run.capture_agent_response(agent, reply, event_id=call)
                turn += 1
                if turn % 200 == 0:
                    await asyncio.sleep(0)  # let the writer drain
            return run.run_id

    return asyncio.run(go())


async def _add_runs(url: str, template_id: str, count: int) -> None:
    """``count`` copies of the template run's row, with new ids and start times."""
    from sqlalchemy import insert, select

    from cmbagent_events.store.database import make_engine
    from cmbagent_events.store.models import WorkflowRun

    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            row = (await conn.execute(select(WorkflowRun).where(WorkflowRun.id == template_id))).mappings().one()
            start = datetime.now(UTC) - timedelta(days=30)
            rows = []
            for i in range(count):
                copy = dict(row)
                copy["id"] = str(uuid.uuid4())
                copy["started_at"] = start + timedelta(minutes=4 * i)
                copy["completed_at"] = copy["started_at"] + timedelta(minutes=3)
                copy["task_description"] = f"archived run {i}: toy spectrum" if i % 10 else f"archived run {i}: MCMC"
                rows.append(copy)
            for i in range(0, count, 1000):
                await conn.execute(insert(WorkflowRun), rows[i:i + 1000])
    finally:
        await engine.dispose()


def _measure(call: Callable[[], Any], repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    tracemalloc.start()
    call()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
            "max_s": round(max(times), 4), "peak_mib": round(peak / 2**20, 2)}


def _viewer_first_page(url: str, run_id: str) -> Callable[[], Any]:
    """A callable fetching what the viewer fetches first for a run: the run and its first page of events."""

    def call() -> Any:
        async def go() -> Any:
            import aiohttp

            from cmbagent_events.live.server import start_server

            server = await start_server(url, port=0)
            try:
                async with aiohttp.ClientSession() as session:
                    async with session.get(f"{server.url}/api/runs/{run_id}") as resp:
                        assert resp.status == 200, resp.status
                    async with session.get(f"{server.url}/api/runs/{run_id}/events?after_seq=-1&limit=1000") as resp:
                        assert resp.status == 200, resp.status
                        return len((await resp.json())["events"])
            finally:
                await server.close()

        return asyncio.run(go())

    return call


class _Discard(io.TextIOBase):
    """stdout for a command whose output is not kept (so memory is the command's own, not the text's)."""

    def write(self, text: str) -> int:
        return len(text)


def _cli(*argv: str) -> Callable[[], Any]:
    def call() -> Any:
        from cmbagent_events.cli.main import main

        with contextlib.redirect_stdout(_Discard()):
            code = main(list(argv))
        assert code == 0, argv

    return call


def bench_database(url: str, events: int, runs: int, repeat: int) -> dict[str, Any]:
    from cmbagent_events.read import open_store

    print(f"  capturing two runs of {events} events ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    run_a = _capture_big_run(url, events, None)
    run_b = _capture_big_run(url, events, events // 10)
    capture_s = time.perf_counter() - started
    asyncio.run(_add_runs(url, run_a, runs))
    out: dict[str, Any] = {"capture_two_runs_s": round(capture_s, 2)}
    with open_store(url) as store:
        total_runs = len(store.runs(limit=None))
        n_a = store.run(run_a)["total_events"]
        diff = store.diff(run_a, run_b)
        assert diff["first_divergence"] is not None, "the changed reply must be found"
        checks: dict[str, Callable[[], Any]] = {
            f"runs (newest 50 of {total_runs})": lambda: store.runs(limit=50),
            "runs --task MCMC": lambda: store.runs(limit=50, task_contains="mcmc"),
            f"cost by agent ({n_a} events)": lambda: store.cost(run_a, "agent"),
            "cost by model": lambda: store.cost(run_a, "model"),
            "diff of the two big runs": lambda: store.diff(run_a, run_b),
            "show --limit 100": _cli("--db", url, "show", run_a, "--limit", "100"),
            f"{WHOLE_RUN} ({n_a} events)": _cli("--db", url, "show", run_a),
            "viewer: run + first page": _viewer_first_page(url, run_a),
        }
        for name, call in checks.items():
            out[name] = _measure(call, repeat)
            print(f"  {name:<34} {out[name]['median_s'] * 1000:8.1f} ms  peak {out[name]['peak_mib']:7.2f} MiB",
                  file=sys.stderr, flush=True)
        out["first_divergence_seq"] = diff["first_divergence"]["a"]["seq"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events per big run (default 100000)")
    parser.add_argument("--runs", type=int, default=10_000, help="extra run rows (default 10000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per read (median; default 3)")
    parser.add_argument("--pg-url", default=None, help="a PostgreSQL URL to use instead of a throwaway server")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--no-save", action="store_true", help=f"do not write {RESULTS.name} (a quick check)")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"events": args.events, "runs": args.runs, "repeat": args.repeat,
                               "when": datetime.now(UTC).isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory(prefix="cmbagent-read-bench-") as tmp:
        print("sqlite:", file=sys.stderr)
        results["sqlite"] = bench_database(f"sqlite+aiosqlite:///{tmp}/read.db", args.events, args.runs, args.repeat)
    if not args.sqlite_only:
        with postgres_url(args.pg_url, dbname="read_bench") as pg:
            if pg is None:
                print("postgresql: no server binaries, skipped", file=sys.stderr)
            else:
                print("postgresql:", file=sys.stderr)
                results["postgresql"] = bench_database(pg, args.events, args.runs, args.repeat)
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    slow = [f"{db}: {name}" for db in ("sqlite", "postgresql") for name, r in results.get(db, {}).items()
            if isinstance(r, dict) and r["median_s"] >= 1.0 and not name.startswith(WHOLE_RUN)]
    verdict = f"over 1 s: {', '.join(slow)}" if slow else "every read under 1 s"
    print(("" if args.no_save else f"wrote {RESULTS}; ") + verdict, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
