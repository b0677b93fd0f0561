"""Events per message on a 45-agent GroupChat (CMBAgent's size), manager relays folded and not.

    python -m benchmarks.broadcasts [--agents 45] [--rounds 45] [--reps 3]

The same round-robin group chat (scripted, zero-latency model, async path) is captured into SQLite
with ``CMBAGENT_CAPTURE_BROADCASTS=fold`` (the default) and ``each``. Per mode: events per run,
of which manager relays, events per chat message (``len(groupchat.messages)``), and the run's time
from capture_run entry to the end of its exit (median of ``--reps``). Writes
benchmarks/results/broadcasts.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cmbagent_events import CaptureConfig, EventRepository, capture_run, make_engine

from .scenarios import _group_chat, silence_ag2

RESULTS = Path(__file__).resolve().parent / "results"


async def one_run(url: str, mode: str, agents: int, rounds: int) -> dict:
    chat = _group_chat(agents, rounds, 0.0)
    config = CaptureConfig.from_env({"CMBAGENT_CAPTURE_BROADCASTS": mode})
    started = time.perf_counter()
    async with capture_run(url, config=config, task_description=f"groupchat{agents} {mode}", mode="bench") as run:
        await chat.run()
    elapsed = time.perf_counter() - started
    from sqlalchemy.ext.asyncio import async_sessionmaker

    engine = make_engine(url)
    try:
        async with async_sessionmaker(engine)() as session:
            events = list(await EventRepository(session, "default").list_events(run.run_id))
    finally:
        await engine.dispose()
    relays = [e for e in events if isinstance(e.meta, dict) and e.meta.get("broadcast")]
    deliveries = sum(len(e.meta.get("recipients") or [e.agent_name]) for e in relays)
    messages = len(chat.groupchat.messages)
    return {"events": len(events), "relay_events": len(relays), "relay_deliveries": deliveries,
            "messages": messages, "events_per_message": len(events) / messages, "seconds": elapsed}


async def main_async(agents: int, rounds: int, reps: int) -> dict:
    silence_ag2()
    results: dict = {"agents": agents, "rounds": rounds, "reps": reps, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'broadcasts.db'}"
        runs: dict[str, list[dict]] = {"fold": [], "each": []}
        await one_run(url, "fold", agents, 3)  # warm-up: migrations, imports, hooks
        for _ in range(reps):
            for mode in runs:  # interleaved
                runs[mode].append(await one_run(url, mode, agents, rounds))
    for mode, trials in runs.items():
        last = trials[-1]
        results["modes"][mode] = {**{k: last[k] for k in ("events", "relay_events", "relay_deliveries", "messages",
                                                           "events_per_message")},
                                  "seconds_median": statistics.median(t["seconds"] for t in trials)}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=45)
    parser.add_argument("--rounds", type=int, default=45)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    results = asyncio.run(main_async(args.agents, args.rounds, args.reps))
    print(f"{args.agents}-agent group chat, {args.rounds} rounds, round robin, scripted zero-latency model (SQLite)")
    print(f"{'mode':<6} {'events':>7} {'relays':>7} {'deliveries':>10} {'messages':>8} {'events/msg':>10} {'run s':>7}")
    for mode, r in results["modes"].items():
        print(f"{mode:<6} {r['events']:>7} {r['relay_events']:>7} {r['relay_deliveries']:>10} {r['messages']:>8} "
              f"{r['events_per_message']:>10.2f} {r['seconds_median']:>7.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "broadcasts.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
