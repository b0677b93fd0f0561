"""Export rate of a stored run to an OTLP/HTTP endpoint (``cmbagent-events export RUN_ID --otlp URL``).

    python -m benchmarks.otlp_export [--calls 2000] [--repeat 3] [--db-url URL] [--otlp URL]

Captures one synthetic run into a temporary SQLite file (or ``--db-url``): ``--calls`` agent calls,
each with a model call, a tool call, two messages and a nested agent call with its own model call,
i.e. 5 spans and 2 span events per call. Then exports it ``--repeat`` times through the CLI's code
path (paged reads, mapping, the official OTLP/HTTP exporter) to a real receiver on 127.0.0.1
(``cmbagent_events.testing.otlp_receiver``) or to ``--otlp URL`` (e.g. a running Phoenix), and
prints spans/s per repetition and the median: wall clock, and per CPU second of this process (which,
with the default receiver, includes the receiver's decoding; on a loaded machine the CPU figure is
the steadier one).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from cmbagent_events import CaptureConfig, capture_run, make_engine
from cmbagent_events.export.otlp import export_stored_run, make_exporter
from cmbagent_events.store.reader import RunReader
from cmbagent_events.testing.otlp_receiver import otlp_receiver


async def capture(db_url: str, calls: int) -> str:
    async with capture_run(db_url, config=CaptureConfig(buffer_size=2000, queue_size=1_000_000), hooks=False,
                           task_description="otlp export benchmark", mode="benchmark") as run:
        for i in range(calls):
            call = run.capture_agent_call(f"agent{i % 7}", f"task {i}: " + "x" * 200)
            run.capture_llm_call(f"agent{i % 7}", "gpt-4o-mini", 120, 40, cost=0.0001, duration_ms=5.0)
            run.capture_tool_call(f"agent{i % 7}", "lookup", {"query": i}, result="r" * 100)
            run.capture_message(f"agent{i % 7}", "helper", "please help " * 10)
            inner = run.capture_agent_call("helper", "sub-task")
            run.capture_llm_call("helper", "gpt-4o-mini", 80, 20, cost=0.00005, duration_ms=3.0)
            run.capture_agent_response("helper", "ok", event_id=inner)
            run.capture_message("helper", f"agent{i % 7}", "done " * 10)
            run.capture_agent_response(f"agent{i % 7}", "finished", event_id=call)
    return run.run_id


async def export_once(db_url: str, run_id: str, url: str) -> tuple[int, float, float]:
    """Spans sent, wall seconds, CPU seconds of this process (which also runs the default receiver)."""
    cpu = time.process_time()
    engine = make_engine(db_url)
    exporter = make_exporter(url, timeout=60.0)  # as the CLI: room for a receiver's back-pressure
    try:
        summary = await export_stored_run(RunReader(engine), run_id, exporter)
    finally:
        exporter.shutdown()
        await engine.dispose()
    return summary.spans, summary.seconds, time.process_time() - cpu


async def main_async(args: argparse.Namespace, url: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db_url = args.db_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        run_id = await capture(db_url, args.calls)
        rates, cpu_rates = [], []
        for i in range(args.repeat):
            spans, seconds, cpu = await export_once(db_url, run_id, url)
            rates.append(spans / seconds)
            cpu_rates.append(spans / cpu)
            print(f"export {i + 1}: {spans} spans in {seconds:.2f} s wall = {spans / seconds:,.0f} spans/s; "
                  f"{cpu:.2f} s CPU = {spans / cpu:,.0f} spans per CPU second")
        print(f"median: {statistics.median(rates):,.0f} spans/s wall, {statistics.median(cpu_rates):,.0f} spans per "
              f"CPU second ({args.calls * 9} events, {spans} spans, to {url}; load average {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="top-level agent calls (5 spans each)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db-url", default=None, help="capture into this database (default: a temp SQLite file)")
    parser.add_argument("--otlp", default=None, help="export here (default: a receiver on 127.0.0.1)")
    args = parser.parse_args()
    if args.otlp:
        asyncio.run(main_async(args, args.otlp))
        return
    with otlp_receiver() as receiver:
        asyncio.run(main_async(args, receiver.url))


if __name__ == "__main__":
    main()
