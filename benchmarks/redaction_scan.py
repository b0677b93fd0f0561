"""Scan cost of the writer's redaction on large messages: ``python -m benchmarks.redaction_scan``.

For an adversarial string (``password=`` repeated) and for plain text, at 50 KB, 500 KB and 5 MB:
the median time of ``redact_text`` over the whole string (the scan itself: linear), and of the
writer's text column (cut to the column bound, plus ``MARGIN``, before the scan: constant). Printed
as a table with the cost per MB, which stays flat when growth is linear."""

from __future__ import annotations

import statistics
import time

from cmbagent_events.config import CaptureConfig
from cmbagent_events.redaction import redact_text
from cmbagent_events.writer.encode import Sanitizer

SIZES = (50_000, 500_000, 5_000_000)
LIMIT = 10_000  # the default CMBAGENT_EVENT_MAX_INPUT_SIZE


def _median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    sanitizer = Sanitizer(CaptureConfig().secret_keys)
    inputs = {"adversarial": "password=", "plain": "The CMB power spectrum peaks near l=220; we fit it. "}
    print(f"{'input':<12} {'size':>9} {'full scan ms':>13} {'ms per MB':>10} {'writer column ms':>17}")
    for name, unit in inputs.items():
        for size in SIZES:
            value = (unit * (size // len(unit) + 1))[:size]
            reps = 5 if size >= 5_000_000 else 9
            full = _median_ms(lambda v=value: redact_text(v), reps)
            column = _median_ms(lambda v=value: sanitizer.text_column([v], LIMIT), reps)
            print(f"{name:<12} {size:>9,} {full:>13.2f} {full / (size / 1e6):>10.2f} {column:>17.3f}")


if __name__ == "__main__":
    main()
