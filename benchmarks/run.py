"""`make bench`: the capture overhead on real AG2 runs, side by side with AG2's own instrumentation.

    python -m benchmarks.run [--quick] [--no-gate] [--profile] [--only NAMES] [--no-micro]

For each scenario (benchmarks/scenarios.py) the same conversation runs with capture off, with
capture into SQLite, into PostgreSQL (a throwaway server started here), with AG2's OpenTelemetry
instrumentation and with AG2's ``runtime_logging`` SQLite logger (the peers, benchmarks/peers.py),
interleaved (every mode once, then the next repetition in a rotated order). A capture trial runs
from ``capture_run`` entry to the end of its exit (the final drain included). Per mode:

- wall-clock overhead: median over repetitions of the paired ratio (trial / the same repetition's
  "off" trial), with its interquartile range;
- all-in CPU per captured event: (process CPU of the trial - process CPU of the paired "off"
  trial) / events captured, median and IQR: hooks, capture, encoding and the write together.

The 45-agent scenario also runs each backend with manager relays stored one by one (``/each``,
``CMBAGENT_CAPTURE_BROADCASTS=each``) besides the default (folded, once supported). A model-latency
sweep (0, 5, 30, 300 ms per call) charts overhead against latency for us and both peers.

Writes benchmarks/results/latest.json, overhead.png and overhead_vs_latency.png, prints tables,
and exits 1 when the code-execution or model-latency scenario reaches 5% overhead on either backend
(the issue's other goals are reported in "goals", not gated).
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cmbagent_events import CaptureConfig, capture_run
from cmbagent_events.run.writer_process import writer_process_pid
from cmbagent_events.testing import postgres_url

from .micro import print_micro, run_micro
from .peers import openinference_available, openinference_traced, otel_available, otel_traced, runtime_logged
from .scenarios import BROADCASTS, Scenario, latency_sweep, scenarios, silence_ag2
from .stats import quantile as _quantile

RESULTS = Path(__file__).resolve().parent / "results"
GATE_PCT = 5.0
GATED = ("code_exec", "model_latency")
# The performance issue's goals, reported (not gated: shared machines are too noisy to fail a run on)
GOALS = {"us_per_event_max": 8.0, "framework_pct": 10.0, "code_exec_pct": 5.0, "model_latency_pct": 1.0}
PEERS = ("otel", "openinference", "peer")
PEER_LABELS = {"otel": "AG2 OpenTelemetry (peer)", "openinference": "OpenInference AG2 instrumentor (peer)",
               "peer": "AG2 runtime_logging (peer)"}


async def _trial(scenario: Scenario, mode: str, urls: dict[str, str], tmp: Path, n: int
                 ) -> tuple[float, float, int, float]:
    """One run of ``scenario`` in ``mode``: (wall seconds, process CPU seconds, events captured,
    the in-situ emit cost in us: the run's sampled ``avg_capture_time_us``).

    Process CPU counts every thread of this process (the hooks, the writer, aiosqlite's thread) and
    the writer process (``/proc``, clock ticks), not the PostgreSQL server's."""
    chat = scenario.build()
    backend, _, variant = mode.partition("/")
    if mode == "off":
        t0, c0 = time.perf_counter(), time.process_time()
        await chat.run()
        return time.perf_counter() - t0, time.process_time() - c0, 0, 0.0
    if mode in PEERS:
        t0, c0 = time.perf_counter(), time.process_time()
        with (otel_traced(chat) if mode == "otel" else openinference_traced() if mode == "openinference"
              else runtime_logged(tmp / f"peer-{n}.db")):
            await chat.run()
        return time.perf_counter() - t0, time.process_time() - c0, 0, 0.0
    config = CaptureConfig.from_env(scenario.variants.get(variant, {}))
    t0, c0, w0 = time.perf_counter(), time.process_time(), writer_process_cpu()
    async with capture_run(urls[backend], config=config, task_description=scenario.name, mode="bench") as run:
        await chat.run()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0 + writer_process_cpu() - w0
    stats = run.get_performance_stats()
    return elapsed, cpu, stats["total_events"], stats["avg_capture_time_us"]




def writer_process_cpu() -> float:
    """CPU seconds the writer process (``/proc``) has used so far (0 without one): all-in CPU counts it,
    so that moving the rows to another process cannot hide their cost."""
    pid = writer_process_pid()
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _spread(values: list[float]) -> list[float]:
    return [_quantile(values, 0.25), _quantile(values, 0.75)]


def folding_supported() -> bool:
    """Whether this build reads CMBAGENT_CAPTURE_BROADCASTS (else the /each variant equals the default)."""
    return CaptureConfig.from_env(BROADCASTS["each"]) != CaptureConfig.from_env({})


async def run_overhead(scenario_list: list[Scenario], quick: bool, urls: dict[str, str], tmp: Path,
                       peers: tuple[str, ...]) -> dict[str, Any]:
    """Interleaved, rotated trials of every mode; paired ratios against the same repetition's "off"."""
    out: dict[str, Any] = {}
    for scenario in scenario_list:
        capture_modes = [*urls, *(f"{b}/{v}" for v in scenario.variants for b in urls)]
        modes = ["off", *capture_modes, *(p for p in peers if p not in scenario.skip_peers)]
        reps = scenario.repetitions[0 if quick else 1]
        wall: dict[str, list[float]] = {m: [] for m in modes}
        cpu: dict[str, list[float]] = {m: [] for m in modes}
        events: dict[str, list[int]] = {m: [] for m in capture_modes}
        emit_us: dict[str, list[float]] = {m: [] for m in capture_modes}
        for _ in range(scenario.warmups):  # imports, migrations, first connections
            for mode in modes:
                await _trial(scenario, mode, urls, tmp, -1)
        for rep in range(reps):
            order = modes[rep % len(modes):] + modes[: rep % len(modes)]
            for mode in order:
                seconds, cpu_s, n_events, emit = await _trial(scenario, mode, urls, tmp, rep)
                wall[mode].append(seconds)
                cpu[mode].append(cpu_s)
                if mode in events:
                    events[mode].append(n_events)
                    emit_us[mode].append(emit)
        others = [m for m in modes if m != "off"]
        ratios = {m: [t / o for t, o in zip(wall[m], wall["off"], strict=True)] for m in others}
        cpu_ratios = {m: [t / o for t, o in zip(cpu[m], cpu["off"], strict=True)] for m in others}
        extra_cpu_ms = {m: [(t - o) * 1000 for t, o in zip(cpu[m], cpu["off"], strict=True)] for m in others}
        per_event = {m: [(t - o) * 1e6 / e for t, o, e in zip(cpu[m], cpu["off"], events[m], strict=True) if e]
                     for m in capture_modes}
        out[scenario.name] = {
            "description": scenario.description,
            "repetitions": reps,
            "median_ms": {m: statistics.median(v) * 1000 for m, v in wall.items()},
            "median_cpu_ms": {m: statistics.median(v) * 1000 for m, v in cpu.items()},
            "overhead_pct": {m: (statistics.median(r) - 1) * 100 for m, r in ratios.items()},
            "overhead_iqr_pct": {m: [(q - 1) * 100 for q in _spread(r)] for m, r in ratios.items()},
            "cpu_overhead_pct": {m: (statistics.median(r) - 1) * 100 for m, r in cpu_ratios.items()},
            "cpu_overhead_iqr_pct": {m: [(q - 1) * 100 for q in _spread(r)] for m, r in cpu_ratios.items()},
            "extra_cpu_ms": {m: statistics.median(v) for m, v in extra_cpu_ms.items()},
            "us_per_event": {m: statistics.median(v) for m, v in per_event.items() if v},
            "us_per_event_iqr": {m: _spread(v) for m, v in per_event.items() if v},
            "events_per_run": statistics.median(events[next(iter(urls))]) if urls else 0,
            "events_per_run_by_mode": {m: statistics.median(v) for m, v in events.items() if v},
            "emit_in_situ_us": {m: statistics.median(v) for m, v in emit_us.items() if v},
        }
        print(f"  {scenario.name}: done", file=sys.stderr)
    return out


def profile_framework(url: str, path: Path) -> None:
    """A pyinstrument profile of the framework-only scenario under capture (for the notes)."""
    from pyinstrument import Profiler

    scenario = scenarios(quick=False)[0]

    async def go() -> None:
        for _ in range(3):
            chat = scenario.build()
            async with capture_run(url, config=CaptureConfig.from_env({}), mode="bench-profile"):
                await chat.run()

    profiler = Profiler(interval=0.0001, async_mode="disabled")
    profiler.start()
    asyncio.run(go())
    profiler.stop()
    path.write_text(profiler.output_text(unicode=False, color=False))


def _label(mode: str) -> str:
    return PEER_LABELS.get(mode) or f"cmbagent-events -> {mode}"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scen = results["scenarios"]
    names = list(scen)
    modes: list[str] = []
    for s in scen.values():
        modes += [m for m in s["overhead_pct"] if m not in modes]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        xs, values, lows, highs = [], [], [], []
        for j, n in enumerate(names):
            if mode in scen[n]["overhead_pct"]:
                v = scen[n]["overhead_pct"][mode]
                lo, hi = scen[n]["overhead_iqr_pct"][mode]
                xs.append(j + (i - (len(modes) - 1) / 2) * width)
                values.append(v)
                lows.append(max(v - lo, 0))
                highs.append(max(hi - v, 0))
        ax.bar(xs, values, width, yerr=[lows, highs], capsize=2, label=_label(mode))
    ax.axhline(GATE_PCT, color="red", linestyle="--", linewidth=1, label="5% gate")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("wall-clock overhead vs. capture off (%)")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_title("Capture overhead on real AG2 runs (median of paired ratios, IQR)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_latency(results: dict[str, Any], path: Path) -> None:
    """Overhead vs. model latency per call, for us and both peers (the latency sweep)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = results.get("latency_sweep") or {}
    if not sweep:
        return
    points = sorted((s["latency_ms"], s) for s in sweep.values())
    modes = list(points[0][1]["overhead_pct"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [max(ms, 1) for ms, _ in points]  # 0 ms drawn at 1 ms on the log axis
    for mode in modes:
        ys = [s["overhead_pct"][mode] for _, s in points]
        lo = [max(s["overhead_pct"][mode] - s["overhead_iqr_pct"][mode][0], 0) for _, s in points]
        hi = [max(s["overhead_iqr_pct"][mode][1] - s["overhead_pct"][mode], 0) for _, s in points]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=_label(mode))
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1, label="1%")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xticks(xs, [f"{ms} ms" for ms, _ in points])
    ax.set_xlabel("model latency per call (0 ms drawn at 1 ms)")
    ax.set_ylabel("wall-clock overhead vs. capture off (%)")
    ax.set_title("Overhead vs. model latency (4-agent group chat; median, IQR)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _modes(rows: dict[str, Any]) -> list[str]:
    """Every capture mode measured in any of ``rows``, in first-seen order."""
    modes: list[str] = []
    for s in rows.values():
        modes += [m for m in s["overhead_pct"] if m not in modes]
    return modes


def _cells(s: dict[str, Any], modes: list[str], cell: Callable[[float, float, float, float | None], str]) -> list[str]:
    """One scenario's cells, one per mode: ``cell(overhead %, IQR low, IQR high, us per event)``, "-" when
    the mode was not measured there."""
    cells = []
    for mode in modes:
        if mode not in s["overhead_pct"]:
            cells.append("-")
            continue
        lo, hi = s["overhead_iqr_pct"][mode]
        cells.append(cell(s["overhead_pct"][mode], lo, hi, s["us_per_event"].get(mode)))
    return cells


def print_table(section: dict[str, Any], title: str) -> None:
    modes = _modes(section)
    print(f"\n{title}: wall-clock overhead % (median [IQR]); all-in CPU us per captured event")
    print(f"{'scenario':<16} {'events':>6} {'off ms':>8} " + " ".join(f"{m + ' %':>22}" for m in modes))
    for name, s in section.items():
        cells = _cells(s, modes, lambda pct, lo, hi, us: f"{pct:.1f} [{lo:.1f},{hi:.1f}]"
                       + (f" {us:.1f}us" if us else ""))
        print(f"{name:<16} {s['events_per_run']:>6.0f} {s['median_ms']['off']:>8.1f} " + " ".join(
            f"{c:>22}" for c in cells))
    print()


def markdown_table(results: dict[str, Any]) -> str:
    """The README's performance table: wall-clock overhead [IQR] and all-in CPU us per event."""
    rows = {**results["scenarios"], **results.get("latency_sweep", {})}
    modes = _modes(rows)
    names = {"otel": "AG2 OpenTelemetry", "openinference": "OpenInference AG2", "peer": "AG2 runtime_logging"}
    lines = ["| scenario | events/run | run time (off) | " + " | ".join(names.get(m, m) for m in modes) + " |",
             "|---|---|---|" + "---|" * len(modes)]
    for name, s in rows.items():
        cells = _cells(s, modes, lambda pct, lo, hi, us: f"{pct:.1f}% [{lo:.0f}, {hi:.0f}]"
                       + (f"; {us:.0f} µs/ev" if us else ""))
        head = f"| {name} | {s['events_per_run']:.0f} | {s['median_ms']['off']:.0f} ms | "
        lines.append(head + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _goals(results: dict[str, Any]) -> dict[str, Any]:
    """The performance issue's goals against this run (reported, not gated)."""
    scen = results["scenarios"]
    ours = [m for m in scen["framework"]["us_per_event"]]
    out: dict[str, Any] = {}
    worst_us = max((v for s in scen.values() for v in s["us_per_event"].values()), default=None)
    out["us_per_event"] = {"limit": GOALS["us_per_event_max"], "worst": worst_us,
                           "met": worst_us is not None and worst_us <= GOALS["us_per_event_max"]}
    for name, key in (("framework", "framework_pct"), ("code_exec", "code_exec_pct"),
                      ("model_latency", "model_latency_pct")):
        if name in scen:
            values = {m: scen[name]["overhead_pct"][m] for m in ours if m in scen[name]["overhead_pct"]}
            out[name] = {"limit_pct": GOALS[key], "overhead_pct": values,
                         "met": all(v < GOALS[key] for v in values.values())}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (CI smoke run)")
    parser.add_argument("--no-gate", action="store_true", help="report only; never exit 1")
    parser.add_argument("--profile", action="store_true", help="also write a pyinstrument profile of scenario 1")
    parser.add_argument("--only", help="comma-separated scenario names (default: all, and the latency sweep)")
    parser.add_argument("--no-micro", action="store_true", help="skip the micro benchmarks")
    parser.add_argument("--pg-url", default=os.environ.get("CMBAGENT_BENCH_PG_URL"))
    args = parser.parse_args()
    silence_ag2()
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.time()
    load_before = os.getloadavg()
    peers = tuple(p for p in PEERS if p == "peer" or (p == "otel" and otel_available())
                  or (p == "openinference" and openinference_available()))
    for name in set(PEERS) - set(peers):
        print(f"the {PEER_LABELS[name]} is not installed: not run", file=sys.stderr)
    chosen = set(args.only.split(",")) if args.only else None
    main_list = [s for s in scenarios(args.quick) if chosen is None or s.name in chosen]
    sweep_list = [s for s in latency_sweep(args.quick) if chosen is None or s.name in chosen or "sweep" in chosen]
    with tempfile.TemporaryDirectory(prefix="cmbagent-bench-") as tmp_name, postgres_url(args.pg_url) as pg_url:
        tmp = Path(tmp_name)
        urls = {"sqlite": f"sqlite+aiosqlite:///{tmp / 'bench.db'}"}
        if pg_url:
            urls["postgresql"] = pg_url
        else:
            print("PostgreSQL server binaries not found: PostgreSQL rows are skipped", file=sys.stderr)
        print("overhead scenarios...", file=sys.stderr)
        overhead = asyncio.run(run_overhead(main_list, args.quick, urls, tmp, peers))
        print("model-latency sweep...", file=sys.stderr)
        sweep = asyncio.run(run_overhead(sweep_list, args.quick, urls, tmp, peers))
        for name, s in sweep.items():
            s["latency_ms"] = int(name.split("_")[1].removesuffix("ms"))
        micro: dict[str, Any] = {}
        if not args.no_micro:
            print("micro benchmarks...", file=sys.stderr)
            micro = asyncio.run(run_micro(args.quick, pg_url))
        if args.profile:
            profile_framework(urls["sqlite"], RESULTS / "profile_framework.txt")
    results: dict[str, Any] = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_before": [round(x, 2) for x in load_before],
                    "load_avg_after": [round(x, 2) for x in os.getloadavg()]},
        "duration_s": round(time.time() - started, 1),
        "broadcast_folding_supported": folding_supported(),
        "scenarios": overhead,
        "latency_sweep": sweep,
        "overhead_pct": {n: {m: v for m, v in s["overhead_pct"].items() if m not in PEERS}
                         for n, s in overhead.items()},
        "peer_overhead_pct": {n: {m: v for m, v in s["overhead_pct"].items() if m in PEERS}
                              for n, s in overhead.items()},
        "us_per_event": {n: s["us_per_event"] for n, s in {**overhead, **sweep}.items()},
        **micro,
    }
    if "framework" in overhead:
        results["goals"] = _goals(results)
    failures = [f"{n}/{m}: {v:.1f}% >= {GATE_PCT}%" for n in GATED if n in results["overhead_pct"]
                for m, v in results["overhead_pct"][n].items() if v >= GATE_PCT]
    results["gates"] = {"limit_pct": GATE_PCT, "gated_scenarios": list(GATED), "failures": failures}
    partial = chosen is not None or args.no_micro
    name = "latest-quick.json" if args.quick else "latest-partial.json" if partial else "latest.json"
    (RESULTS / name).write_text(json.dumps(results, indent=2) + "\n")
    if overhead:
        (RESULTS / name.replace(".json", ".md")).write_text(markdown_table(results))
    stem = "-quick" if args.quick else "-partial" if partial else ""
    try:
        if overhead:
            plot(results, RESULTS / f"overhead{stem}.png")
        plot_latency(results, RESULTS / f"overhead_vs_latency{stem}.png")
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    if overhead:
        print_table(overhead, "scenarios")
    if sweep:
        print_table(sweep, "model-latency sweep")
    if micro:
        print_micro(micro)
    machine = results["machine"]
    print(f"load average before/after: {machine['load_avg_before']} / {machine['load_avg_after']}")
    print(f"\nresults: {RESULTS / name} ({results['duration_s']} s)")
    if failures:
        if args.no_gate:
            print("over the gate, not enforced (--no-gate: quick runs are too noisy to gate on): "
                  + "; ".join(failures))
            return 0
        print("GATE FAILED: " + "; ".join(failures))
        return 1
    print(f"gates passed: {', '.join(GATED)} below {GATE_PCT}% on every backend")
    return 0


if __name__ == "__main__":
    sys.exit(main())
