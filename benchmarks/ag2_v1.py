"""The AG2 1.x scenario of `make bench`: our capture next to AG2 1.x's own ``TelemetryMiddleware``.

    python -m benchmarks.ag2_v1 [--quick] [--pg-url URL]

Runs in the AG2 1.x venv (.venv-ag2-v1). The same agent work is timed with capture off, with
capture into SQLite and into PostgreSQL (``capture_run`` with its hooks: the middleware is added
to every turn), with a SQLite run opened without the hooks (``sqlite/no-hooks``: the run's own
cost, nothing captured; ``sqlite`` minus it is what the middleware costs), and with AG2 1.x's
``TelemetryMiddleware`` exporting OpenTelemetry spans to an in-memory exporter (the peer: AG2's
own instrumentation, no I/O at all). Trials are interleaved in a rotated order; overhead is the
median of the paired ratios trial / same repetition's "off" trial, with its interquartile range,
for wall time and for process CPU time (steadier on a shared machine), plus the CPU added per
captured event (ours) or per exported span (the peer). A capture trial runs from ``capture_run``
entry to the end of its exit (the drain included).

Writes benchmarks/results/ag2_v1.json (ag2_v1-quick.json with --quick) and prints a table.
Reported, not gated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ag2 import Agent
from ag2.events import ModelMessage, ModelResponse, ToolCallEvent, Usage
from ag2.testing import TestConfig

from cmbagent_events.integrations.flavours import v1_version
from cmbagent_events.testing import postgres_url

from .stats import database_urls, paired_overhead, timed_capture

RESULTS = Path(__file__).resolve().parent / "results"
REPS_FULL = 21
REPS_QUICK = 5


def power(ell: int, scale: float) -> float:
    """A toy angular power spectrum value C_ell (the tool the agents call)."""
    return scale / (ell * (ell + 1))


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    build: Callable[[list[Any]], Callable[[], Awaitable[Any]]]  # middleware -> timed coroutine factory


def _script(turns: int) -> TestConfig:
    steps: list[Any] = []
    for i in range(turns):
        steps.append(ToolCallEvent(name="power", arguments=json.dumps({"ell": 10 + i, "scale": 1000.0})))
        steps.append(ModelResponse(ModelMessage(f"C_ell for ell={10 + i} computed."),
                                   usage=Usage(prompt_tokens=40 + i, completion_tokens=8), model="scripted-1"))
    return TestConfig(*steps)


def _conversation(agent: Agent, turns: int) -> Callable[[], Awaitable[Any]]:
    """``turns`` questions to ``agent`` on one conversation (each continues the previous reply)."""

    async def chat() -> None:
        reply = await agent.ask("Compute C_ell for ell=10.")
        for i in range(1, turns):
            reply = await reply.ask(f"Now ell={10 + i}.")

    return chat


def _tool_loop(turns: int) -> Callable[[list[Any]], Callable[[], Awaitable[Any]]]:
    """One agent, ``turns`` questions on one conversation, each answered through one tool call."""

    def build(middleware: list[Any]) -> Callable[[], Awaitable[Any]]:
        agent = Agent("analyst", "You compute spectra.", config=_script(turns), tools=[power], middleware=middleware)
        return _conversation(agent, turns)

    return build


def _delegation(turns: int) -> Callable[[list[Any]], Callable[[], Awaitable[Any]]]:
    """A lead agent delegating to a specialist used as a tool (``as_tool``): nested turns."""

    def build(middleware: list[Any]) -> Callable[[], Awaitable[Any]]:
        steps: list[Any] = []
        for i in range(turns):
            steps.append(ToolCallEvent(name="task_specialist", arguments=json.dumps({"objective": f"ell={10 + i}"})))
            steps.append(f"Specialist answered for ell={10 + i}.")
        specialist = Agent("specialist", config=_script(turns), tools=[power], middleware=middleware)
        lead = Agent("lead", config=TestConfig(*steps), middleware=middleware,
                     tools=[specialist.as_tool(description="Computes one C_ell.")])
        return _conversation(lead, turns)

    return build


def scenarios(quick: bool) -> list[Scenario]:
    turns = 10 if quick else 20
    return [
        Scenario("v1_tool_loop", f"AG2 1.x agent, {turns} turns, one tool call each, zero-latency model",
                 _tool_loop(turns)),
        Scenario("v1_delegation", f"AG2 1.x lead + specialist as a tool, {turns} delegations, zero-latency model",
                 _delegation(turns)),
    ]


def _telemetry() -> tuple[list[Any], Any]:
    """AG2 1.x's TelemetryMiddleware on its own tracer provider, spans kept in memory."""
    from ag2.middleware import TelemetryMiddleware
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return [TelemetryMiddleware(tracer_provider=provider, agent_name="agent")], exporter


async def _trial(scenario: Scenario, mode: str, urls: dict[str, str]) -> tuple[float, float, int]:
    """One run: (wall seconds, process CPU seconds, events or spans recorded).

    Process CPU counts every thread of this process (the agents, our writer, aiosqlite's thread), not
    the PostgreSQL server's; on a shared, loaded machine it is the steadier of the two measures."""
    exporter = None
    if mode == "telemetry":
        middleware, exporter = _telemetry()
        chat = scenario.build(middleware)
    else:
        chat = scenario.build([])
    c0 = time.process_time()
    if mode in ("off", "telemetry"):
        t0 = time.perf_counter()
        await chat()
        wall, n = time.perf_counter() - t0, len(exporter.get_finished_spans()) if exporter is not None else 0
    else:
        backend, _, variant = mode.partition("/")
        wall, n = await timed_capture(urls[backend], scenario.name, chat, hooks=variant != "no-hooks")
    return wall, time.process_time() - c0, n


async def run_overhead(quick: bool, urls: dict[str, str], reps: int | None = None) -> dict[str, Any]:
    modes = ["off", "sqlite/no-hooks", *urls, "telemetry"]  # no-hooks: the run alone, nothing captured
    reps = reps or (REPS_QUICK if quick else REPS_FULL)
    out: dict[str, Any] = {}
    for scenario in scenarios(quick):
        wall: dict[str, list[float]] = {m: [] for m in modes}
        cpu: dict[str, list[float]] = {m: [] for m in modes}
        counts: dict[str, list[int]] = {m: [] for m in modes}
        for _ in range(2):  # warm-up: imports, migrations, first connections
            for mode in modes:
                await _trial(scenario, mode, urls)
        for rep in range(reps):
            order = modes[rep % len(modes):] + modes[: rep % len(modes)]
            for mode in order:
                seconds, cpu_s, n = await _trial(scenario, mode, urls)
                wall[mode].append(seconds)
                cpu[mode].append(cpu_s)
                counts[mode].append(n)
        out[scenario.name] = {
            "description": scenario.description,
            "repetitions": reps,
            **paired_overhead(wall),
            "cpu": paired_overhead(cpu),
            "extra_cpu_us_per_record": {  # CPU added per event (ours) or span (telemetry), median of pairs
                m: statistics.median((c - o) * 1e6 / n for c, o, n in zip(cpu[m], cpu["off"], counts[m], strict=True)
                                     if n)
                for m in modes if m != "off" and any(counts[m])},
            # what the hooks and middleware add beyond the run's own cost (same backend, nothing captured)
            "hooks_extra_cpu_ms": statistics.median(
                (c - b) * 1000 for c, b in zip(cpu["sqlite"], cpu["sqlite/no-hooks"], strict=True)),
            "events_per_run": statistics.median(counts[next(iter(urls))]),
            "spans_per_run": statistics.median(counts["telemetry"]),
        }
        print(f"  {scenario.name}: done", file=sys.stderr)
    return out


def print_table(scenarios_out: dict[str, Any]) -> None:
    modes = list(next(iter(scenarios_out.values()))["overhead_pct"])
    print(f"\n{'scenario':<14} {'events':>6} {'spans':>5} {'off ms':>8} {'off cpu':>8}  measure  "
          + " ".join(f"{m + ' % [IQR]':>22}" for m in modes) + "  " + " ".join(f"{m + ' us/rec':>15}" for m in modes))
    for name, s in scenarios_out.items():
        for label, part in (("wall", s), ("cpu", s["cpu"])):
            cells = [f"{part['overhead_pct'][m]:>6.1f} [{part['overhead_iqr_pct'][m][0]:>5.1f},"
                     f"{part['overhead_iqr_pct'][m][1]:>5.1f}]" for m in modes]
            per = [f"{s['extra_cpu_us_per_record'].get(m, float('nan')):>15.1f}" for m in modes]
            print(f"{name:<14} {s['events_per_run']:>6.0f} {s['spans_per_run']:>5.0f} {s['median_ms']['off']:>8.1f} "
                  f"{s['cpu']['median_ms']['off']:>8.1f}  {label:<7}  " + " ".join(f"{c:>22}" for c in cells)
                  + ("  " + " ".join(per) if label == "cpu" else ""))
        extra = s["hooks_extra_cpu_ms"]
        print(f"{'':<14} middleware itself (sqlite minus sqlite/no-hooks, CPU): {extra:.2f} ms per run")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and turns (CI smoke run)")
    parser.add_argument("--pg-url", default=os.environ.get("CMBAGENT_BENCH_PG_URL"))
    parser.add_argument("--reps", type=int, default=None, help="repetitions per mode (default: 5 quick, 21 full)")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="cmbagent-bench-v1-") as tmp_name, postgres_url(args.pg_url) as pg_url:
        urls = database_urls(Path(tmp_name), pg_url)
        print("AG2 1.x scenarios...", file=sys.stderr)
        overhead = asyncio.run(run_overhead(args.quick, urls, args.reps))
    results = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "ag2_version": v1_version(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "duration_s": round(time.time() - started, 1),
        "peer": "ag2.middleware.TelemetryMiddleware -> OpenTelemetry SDK, SimpleSpanProcessor, InMemorySpanExporter",
        "scenarios": overhead,
    }
    name = "ag2_v1-quick.json" if args.quick else "ag2_v1.json"
    (RESULTS / name).write_text(json.dumps(results, indent=2) + "\n")
    print_table(overhead)
    print(f"results: {RESULTS / name} ({results['duration_s']} s); reported, not gated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
