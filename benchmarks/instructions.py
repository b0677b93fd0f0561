"""Where capture's cost goes, in CPU instructions: deterministic, so a loaded machine cannot blur it.

    python -m benchmarks.instructions [--scenario framework] [--jobs 2] [--modes off,hooks,capture]

Wall-clock and CPU-time figures on a shared 2-core machine wander by tens of percent between runs;
instruction counts do not. Each mode below runs the scenario under ``valgrind --tool=callgrind``
(Linux, valgrind installed) in a child process, twice: with 1 and with 5 trials. The difference
divided by 4 is one trial's instructions, free of the interpreter's start-up and imports (a few
hundred thousand instructions of spread remain: the writer thread and the event loop's polling
do not run exactly alike twice). About 15-20 minutes on a loaded 2-core machine.

Modes, each adding one layer to the one before:

- ``off``: the chat alone;
- ``hooks``: inside ``capture_run`` (SQLite), the AG2 hooks installed but the run not capturing
  (the wrappers' own cost and the run's fixed cost: entry, run row, exit);
- ``capture``: hooks and capture calls, each record built and then discarded instead of queued
  (no writer work per event);
- ``full``: everything: records queued, rows built, encoded, redacted and inserted.

Per event = the layer's instructions / the events a full trial captures. Instructions are not time
(a cache miss or a thread hop costs time, not instructions), but their split says which layer to
work on. Results in ``benchmarks/results/instructions.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("off", "hooks", "capture", "full")
LAYERS = {"hooks": "hooks installed, run fixed cost", "capture": "hook bodies + capture calls",
          "full": "writer: rows, encoding, redaction, insert"}
FEW, MANY = 1, 5
# Batches as a real-time run forms them: under valgrind the chat runs ~50x slower, so the default
# 200 ms flush interval would cut one real batch (the framework trial's 298 events, written at exit)
# into ~15 small ones and count ~15 batches' fixed costs. With the interval out of reach, batches
# form only when BUFFER_SIZE fills or the run closes, as they do at full speed.
REAL_TIME_BATCHES = {"CMBAGENT_EVENT_FLUSH_INTERVAL_MS": "3600000"}
LLM_MESSAGES = "CMBAGENT_CAPTURE_LLM_MESSAGES"  # --no-llm-messages: model calls without request and response
WRITER = "CMBAGENT_EVENT_WRITER"  # --writer process: the rows written by the writer process (not counted: only
# the capturing process runs under callgrind, so "full" is then what the run costs on the caller's side)


def _discard(record: Any) -> bool:
    return True


def strip_to_layer(run: Any, mode: str) -> None:
    """Inside ``capture_run``, take the run down to ``mode``'s layer (see the module doc): ``hooks``
    stops capturing, ``capture`` discards each record once built; ``full`` leaves it as it is."""
    if mode == "hooks":
        run.enabled = False  # hooks stay installed; every captor lookup now finds no capturing run
    elif mode == "capture":
        run._put = _discard  # records built, never queued: no writer work per event


async def _child(scenario_name: str, mode: str, trials: int, url: str) -> None:
    """Run ``trials`` trials of ``mode``; print the events of the last (one line, for the parent)."""
    from cmbagent_events import CaptureConfig, capture_run

    from .scenarios import scenarios, silence_ag2

    silence_ag2()
    scenario = next(s for s in scenarios(quick=False) if s.name == scenario_name)
    events = 0
    for _ in range(trials):
        chat = scenario.build()
        if mode == "off":
            await chat.run()
            continue
        settings = {**REAL_TIME_BATCHES, **{k: v for k, v in os.environ.items() if k in (LLM_MESSAGES, WRITER)}}
        async with capture_run(url, config=CaptureConfig.from_env(settings), mode="bench") as run:
            strip_to_layer(run, mode)
            await chat.run()
        events = run.get_performance_stats()["total_events"]
    print(f"events {events}")


def _count(scenario: str, mode: str, trials: int, work: Path) -> tuple[int, int]:
    """(instructions, events) of one child run under callgrind."""
    out = work / f"callgrind.{mode}.{trials}"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m",
           "benchmarks.instructions", "--child", mode, "--trials", str(trials), "--scenario", scenario,
           "--url", f"sqlite+aiosqlite:///{work}/{mode}-{trials}.db"]
    # the same dict layouts in every child; OpenBLAS (numpy, which AG2 imports) without its worker threads,
    # whose spinning under valgrind counted 0.1-2M instructions per trial more or less from run to run
    env = {**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind child {mode}/{trials} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    events = re.search(r"events (\d+)", proc.stdout)
    return int(found.group(1)), int(events.group(1)) if events else 0


def measure(scenario: str, jobs: int, modes: tuple[str, ...] = MODES) -> dict[str, Any]:
    """Count ``modes`` (a prefix of MODES: e.g. without ``full`` when the writer is not the question)."""
    work = Path(tempfile.mkdtemp(prefix="cmbagent-instr-"))
    runs = [(mode, n) for mode in modes for n in (FEW, MANY)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        counted = dict(zip(runs, pool.map(lambda r: _count(scenario, r[0], r[1], work), runs)))
    shutil.rmtree(work, ignore_errors=True)
    per_trial = {mode: (counted[(mode, MANY)][0] - counted[(mode, FEW)][0]) / (MANY - FEW) for mode in modes}
    events = counted[(modes[-1], MANY)][1]  # every capturing mode draws the same seqs
    layers = {mode: per_trial[mode] - per_trial[modes[i - 1]] for i, mode in enumerate(modes) if i}
    return {"scenario": scenario, "events_per_trial": events, "instructions_per_trial": per_trial,
            "layers": layers, "per_event": {m: v / events for m, v in layers.items()} if events else {},
            "capture_over_chat_pct": 100.0 * (per_trial[modes[-1]] - per_trial["off"]) / per_trial["off"]}


def report(result: dict[str, Any]) -> None:
    chat = result["instructions_per_trial"]["off"]
    print(f"\n{result['scenario']}: {result['events_per_trial']} events per trial; the chat alone "
          f"{chat / 1e6:.1f}M instructions")
    print(f"{'layer':<48} {'M instr/trial':>14} {'% of chat':>10} {'instr/event':>12}")
    for mode, value in result["layers"].items():
        per_event = result["per_event"].get(mode, 0.0)
        print(f"{LAYERS[mode]:<48} {value / 1e6:>14.2f} {100 * value / chat:>9.1f}% {per_event:>12,.0f}")
    last = list(result["instructions_per_trial"])[-1]
    print(f"{'all of capture' if last == 'full' else 'all of the layers counted':<48} "
          f"{(result['instructions_per_trial'][last] - chat) / 1e6:>14.2f} {result['capture_over_chat_pct']:>9.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="framework")
    parser.add_argument("--jobs", type=int, default=2, help="callgrind children at once")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--trials", type=int, default=FEW, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--modes", default=",".join(MODES),
                        help="the modes to count, a prefix of off,hooks,capture,full (e.g. off,hooks,capture: "
                             "the caller's side only, ~2/3 of the time); a partial count is not saved")
    parser.add_argument("--no-llm-messages", action="store_true",
                        help="capture model calls without their request and response (what storing them costs)")
    parser.add_argument("--writer", choices=("thread", "process"),
                        help="where the rows are written; with process, only the capturing process is counted")
    args = parser.parse_args()
    if args.no_llm_messages:
        os.environ[LLM_MESSAGES] = "false"  # the callgrind children inherit it
    if args.writer:
        os.environ[WRITER] = args.writer  # the callgrind children inherit it (they are not given --writer)
    if args.child:
        asyncio.run(_child(args.scenario, args.child, args.trials, args.url))
        return
    if shutil.which("valgrind") is None:
        sys.exit("benchmarks.instructions needs valgrind (apt install valgrind)")
    modes = tuple(args.modes.split(","))
    if modes != MODES[:len(modes)] or len(modes) < 2:
        sys.exit(f"--modes must be a prefix of {','.join(MODES)} with at least two modes")
    result = measure(args.scenario, args.jobs, modes)
    report(result)
    if modes != MODES:
        print(json.dumps(result, indent=2))
        return
    RESULTS.mkdir(exist_ok=True)
    name = "-".join(["instructions", *(["no-llm-messages"] if args.no_llm_messages else []),
                     *(["process-writer"] if args.writer == "process" else [])]) + ".json"
    (RESULTS / name).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
