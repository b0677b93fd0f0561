"""Where capture's wall-clock cost goes, layer by layer, in one process (the timing twin of
``benchmarks.instructions``).

    python -m benchmarks.layers [--scenario framework] [--trials 40] [--variant KEY=VALUE ...]

Trials of one scenario run interleaved in one process, in rotating order, in these modes:

- ``off``: the chat alone;
- ``hooks``: inside ``capture_run`` (SQLite), the AG2 hooks installed, the run not capturing;
- ``capture``: hooks and capture calls, each record built and then discarded (no writer work);
- ``full``: everything;
- ``variant`` (with ``--variant``): ``full`` with those settings (``CaptureConfig.from_env``), e.g.
  ``--variant CMBAGENT_EVENT_BUFFER_SIZE=100`` writes batches during a zero-latency chat.

Per mode: the median wall time, its overhead over ``off`` (median of paired ratios, IQR), and the
CPU of the event loop's thread and of every other thread (SQLite's writer thread, AG2's executor),
summed from /proc (Linux) and divided by the trials. Medians of a noisy shared machine: compare
modes of one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cmbagent_events import CaptureConfig, capture_run

from .instructions import MODES, strip_to_layer
from .scenarios import scenarios, silence_ag2

WARMUPS = 3


def _thread_ticks() -> dict[int, int]:
    """CPU clock ticks (user + system) of each thread of this process, by native thread id."""
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        ticks[int(tid)] = int(fields[11]) + int(fields[12])
    return ticks


async def _trial(scenario: Any, mode: str, url: str, variant: dict[str, str]) -> tuple[float, int, int]:
    """(wall seconds, loop-thread ticks, other threads' ticks) of one trial."""
    chat = scenario.build()
    loop_thread = threading.get_native_id()
    before = _thread_ticks()
    started = time.perf_counter()
    if mode == "off":
        await chat.run()
    else:
        config = CaptureConfig.from_env(variant if mode == "variant" else {})
        async with capture_run(url, config=config, mode="bench") as run:
            strip_to_layer(run, mode)
            await chat.run()
    wall = time.perf_counter() - started
    spent = {tid: n - before.get(tid, 0) for tid, n in _thread_ticks().items()}
    loop_ticks = spent.pop(loop_thread, 0)
    return wall, loop_ticks, sum(spent.values())


async def measure(scenario_name: str, trials: int, variant: dict[str, str]) -> dict[str, list[tuple[float, int, int]]]:
    silence_ag2()
    scenario = next(s for s in scenarios(quick=False) if s.name == scenario_name)
    modes = [*MODES, *(["variant"] if variant else [])]
    with tempfile.TemporaryDirectory(prefix="cmbagent-layers-") as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/layers.db"
        for _ in range(WARMUPS):
            for mode in modes:
                await _trial(scenario, mode, url, variant)
        results: dict[str, list[tuple[float, int, int]]] = {mode: [] for mode in modes}
        for i in range(trials):
            k = i % len(modes)
            for mode in modes[k:] + modes[:k]:
                results[mode].append(await _trial(scenario, mode, url, variant))
    return results


def report(results: dict[str, list[tuple[float, int, int]]]) -> None:
    tick_ms = 1000.0 / os.sysconf("SC_CLK_TCK")
    off = results["off"]
    print(f"{'mode':<8} {'wall ms':>8} {'overhead % [IQR]':>22} {'loop thread ms':>15} {'other threads ms':>17}")
    for mode, rows in results.items():
        ratios = sorted(100.0 * (row[0] / base[0] - 1) for row, base in zip(rows, off))
        q1, q3 = ratios[len(ratios) // 4], ratios[3 * len(ratios) // 4]
        loop_ms = sum(r[1] for r in rows) * tick_ms / len(rows)
        other_ms = sum(r[2] for r in rows) * tick_ms / len(rows)
        print(f"{mode:<8} {statistics.median(r[0] for r in rows) * 1e3:>8.1f} "
              f"{statistics.median(ratios):>8.1f} [{q1:5.1f}, {q3:5.1f}] {loop_ms:>15.1f} {other_ms:>17.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="framework")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--variant", nargs="*", default=[], metavar="KEY=VALUE",
                        help="settings of an extra 'variant' mode (full capture with them)")
    args = parser.parse_args()
    variant = dict(item.split("=", 1) for item in args.variant)
    report(asyncio.run(measure(args.scenario, args.trials, variant)))


if __name__ == "__main__":
    main()
