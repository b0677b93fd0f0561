"""Timing and paired-ratio statistics shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cmbagent_events import CaptureConfig, capture_run


async def timed_capture(url: str, name: str, chat: Callable[[], Awaitable[Any]], *, hooks: bool = True
                        ) -> tuple[float, int]:
    """Run ``chat`` under ``capture_run``; (seconds from entry to the end of exit, events captured)."""
    t0 = time.perf_counter()
    async with capture_run(url, config=CaptureConfig.from_env({}), task_description=name, mode="bench",
                           hooks=hooks) as run:
        await chat()
    return time.perf_counter() - t0, run.get_performance_stats()["total_events"]


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile ``q`` (0..1) of ``values``."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def paired_overhead(times: dict[str, list[float]], baseline: str = "off") -> dict[str, Any]:
    """Medians (ms) per mode, and the overhead of each mode as the median of its paired ratios
    (trial / the same repetition's ``baseline`` trial) with their interquartile range, in percent."""
    ratios = {m: [t / o for t, o in zip(times[m], times[baseline], strict=True)] for m in times if m != baseline}
    return {
        "median_ms": {m: statistics.median(v) * 1000 for m, v in times.items()},
        "overhead_pct": {m: (statistics.median(r) - 1) * 100 for m, r in ratios.items()},
        "overhead_iqr_pct": {m: [(quantile(r, 0.25) - 1) * 100, (quantile(r, 0.75) - 1) * 100]
                             for m, r in ratios.items()},
    }


def database_urls(tmp: Path, pg_url: str | None) -> dict[str, str]:
    """The capture targets of a benchmark: a SQLite file in ``tmp``, and PostgreSQL when there is one."""
    urls = {"sqlite": f"sqlite+aiosqlite:///{tmp / 'bench.db'}"}
    if pg_url:
        urls["postgresql"] = pg_url
    else:
        print("PostgreSQL server binaries not found: PostgreSQL rows are skipped", file=sys.stderr)
    return urls
