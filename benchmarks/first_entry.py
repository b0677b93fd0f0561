"""First ``capture_run`` entry in a fresh process, on an already migrated database, imports included.

    python -m benchmarks.first_entry [--runs 11] [--postgres] [--db-url URL]

The database is migrated once (in this process); then each trial starts a fresh interpreter that
times, from its first line, ``import asyncio``, ``import cmbagent_events`` and ``capture_run``'s entry (until the body
starts; wall clock, and the process's CPU time, which is less disturbed by other load on the
machine), then the run's exit (final drain). Three cases:

- ``sqlite``: the embedded SQLite default, ``hooks=False`` (no AG2 in the process);
- ``sqlite+ag2``: AG2 already imported by the user's code (not timed), ``hooks=True`` (the AG2 hook
  installation is timed, AG2's own import is not: a process that uses AG2 has paid it already);
- ``postgresql`` (with ``--postgres`` or ``--db-url``): a throwaway server, ``hooks=False``.

Prints the median and the spread (min, max, interquartile range) in milliseconds per case. The
budget is 150 ms for the entry; exit is reported for information.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from .run import _quantile

BUDGET_MS = 150.0
REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import time, sys
t0, c0 = time.perf_counter(), time.process_time()
pre_ag2 = sys.argv[2] == "1"
if pre_ag2:
    import autogen  # the user's own import, before capture: not ours to time
    t0, c0 = time.perf_counter(), time.process_time()
import asyncio
t_asyncio = time.perf_counter()
import cmbagent_events
t_import = time.perf_counter()

async def main():
    cm = cmbagent_events.capture_run(sys.argv[1], task_description="first entry", hooks=pre_ag2)
    run = await cm.__aenter__()
    t_entry, c_entry = time.perf_counter(), time.process_time()
    run.capture_message("a", "b", "hello")
    await cm.__aexit__(None, None, None)
    return t_entry, c_entry, time.perf_counter()

t_entry, c_entry, t_exit = asyncio.run(main())
heavy = sorted(m for m in ("sqlalchemy", "alembic", "aiohttp", "autogen", "aiosqlite", "asyncpg")
               if m in sys.modules)
import json
print(json.dumps({"import_ms": (t_import - t0) * 1e3, "entry_ms": (t_entry - t0) * 1e3,
                  "asyncio_ms": (t_asyncio - t0) * 1e3,
                  "entry_cpu_ms": (c_entry - c0) * 1e3,
                  "exit_ms": (t_exit - t_entry) * 1e3, "loaded": heavy}))
"""


def _migrate(url: str) -> None:
    from cmbagent_events import migrate

    asyncio.run(migrate(url))


def _trial(url: str, pre_ag2: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # children reuse byte-code
    out = subprocess.run([sys.executable, "-c", CHILD, url, "1" if pre_ag2 else "0"], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _summary(values: list[float]) -> str:
    return (f"median {statistics.median(values):7.1f}  min {min(values):7.1f}  max {max(values):7.1f}  "
            f"IQR {_quantile(values, 0.25):.1f}-{_quantile(values, 0.75):.1f}")


def run_case(name: str, url: str, pre_ag2: bool, runs: int) -> dict:
    _migrate(url)
    _trial(url, pre_ag2)  # warm the OS file cache and byte-code; not counted
    trials = [_trial(url, pre_ag2) for _ in range(runs)]
    result = {key: [t[key] for t in trials] for key in ("import_ms", "asyncio_ms", "entry_ms", "entry_cpu_ms",
                                                       "exit_ms")}
    result["loaded"] = trials[-1]["loaded"]
    entry = statistics.median(result["entry_ms"])
    verdict = "within" if entry <= BUDGET_MS else "OVER"
    print(f"{name:<12} entry (imports included): {_summary(result['entry_ms'])} ms  [{verdict} {BUDGET_MS:.0f} ms]")
    print(f"{'':<12} its CPU time (this process): {_summary(result['entry_cpu_ms'])} ms")
    print(f"{'':<12} of which imports:          {_summary(result['import_ms'])} ms")
    print(f"{'':<12}   of which 'import asyncio': {_summary(result['asyncio_ms'])} ms")
    print(f"{'':<12} exit (final drain):        {_summary(result['exit_ms'])} ms")
    print(f"{'':<12} heavy modules loaded: {', '.join(result['loaded']) or 'none'}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="fresh processes per case (default 11)")
    parser.add_argument("--postgres", action="store_true", help="also on a throwaway PostgreSQL server")
    parser.add_argument("--db-url", help="also on this PostgreSQL URL")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'first_entry.db'}"
        results["sqlite"] = run_case("sqlite", url, False, args.runs)
        results["sqlite+ag2"] = run_case("sqlite+ag2", url, True, args.runs)
        if args.postgres or args.db_url:
            from cmbagent_events.testing import postgres_url

            with postgres_url(args.db_url, dbname="first_entry") as pg:
                if pg is None:
                    print("postgresql: no server binaries on this machine; skipped")
                else:
                    results["postgresql"] = run_case("postgresql", pg, False, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
