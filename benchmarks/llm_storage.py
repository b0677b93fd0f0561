"""What storing model calls whole costs: ``python -m benchmarks.llm_storage`` (in ``make bench``).

1. Bytes. A 45-agent group chat (CMBAgent's size; the ``groupchat45`` scenario's chat) of ``--rounds``
   rounds is captured into SQLite. Every model call re-sends the whole history, so storing each
   request whole grows with the square of the chat's length. Printed: the naive size (each call's
   messages and response stored in full), the distinct contents' size (each distinct message,
   response and tool list once), and what is stored (those + ``llm_calls``' references). Goal:
   stored <= 2x distinct.
2. Caller's cost per model call: ``capture_llm_call`` timed on the caller's thread with a request of
   ``--history`` messages and a response, against the same call without them (medians of batches).
Results: benchmarks/results/llm_storage.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cmbagent_events import CaptureConfig, capture_run

from .scenarios import _group_chat, silence_ag2

RESULTS = Path(__file__).resolve().parent / "results" / "llm_storage.json"


async def stored_bytes(rounds: int, db: Path) -> dict[str, Any]:
    chat = _group_chat(45, rounds, 0.0)
    async with capture_run(f"sqlite+aiosqlite:///{db}", config=CaptureConfig(), task_description="llm storage") as run:
        await chat.run()
    with sqlite3.connect(db) as conn:
        bodies = dict(conn.execute("SELECT ordinal, length(CAST(body AS BLOB)) FROM llm_contents WHERE run_id = ?",
                                   (run.run_id,)))
        kinds = dict(conn.execute("SELECT kind, sum(length(CAST(body AS BLOB))) FROM llm_contents WHERE run_id = ? "
                                  "GROUP BY kind", (run.run_id,)))
        calls = conn.execute("SELECT messages, length(CAST(messages AS BLOB)) + coalesce(length(params), 0) + "
                             "coalesce(length(tools), 0) + coalesce(length(response), 0) + length(event_id) "
                             "FROM llm_calls WHERE run_id = ?", (run.run_id,)).fetchall()
    naive = sum(bodies[ref] for refs, _ in calls for ref in json.loads(refs)) + kinds.get("response", 0)
    distinct = sum(bodies.values())  # each distinct message, response and tool list once
    stored = distinct + sum(size for _, size in calls)
    return {"rounds": rounds, "calls": len(calls), "naive_bytes": naive,
            "distinct_message_bytes": kinds.get("message", 0),
            "distinct_bytes": distinct, "stored_bytes": stored,
            "stored_over_distinct": stored / distinct if distinct else None,
            "naive_over_stored": naive / stored if stored else None}


async def caller_cost(history: int, batches: int, per_batch: int, db: Path) -> dict[str, Any]:
    messages = [{"role": "user" if i % 2 else "assistant", "name": f"agent_{i % 45:02d}",
                 "content": f"turn {i}: the fit of the TT spectrum goes on with lmax {2000 + i}" * 4}
                for i in range(history)]
    request = {"model": "gpt-4o", "messages": messages, "temperature": 0.0}
    response = {"id": "r", "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                        "finish_reason": "stop"}]}
    times: dict[str, list[float]] = {"bare": [], "whole": []}
    cfg = CaptureConfig(queue_size=1_000_000)
    async with capture_run(f"sqlite+aiosqlite:///{db}", config=cfg, hooks=False, task_description="cost") as run:
        for _ in range(batches):
            for mode in ("bare", "whole"):
                kwargs = {"request": request, "response": response} if mode == "whole" else {}
                started = time.perf_counter()
                for _ in range(per_batch):
                    run.capture_llm_call("agent_00", "gpt-4o", 100, 10, cost=0.001, **kwargs)
                times[mode].append((time.perf_counter() - started) / per_batch * 1e6)
            await run.flush()
    bare, whole = statistics.median(times["bare"]), statistics.median(times["whole"])
    return {"history": history, "bare_us": bare, "whole_us": whole, "added_us": whole - bare,
            "spread_us": [min(times["whole"]), max(times["whole"])]}


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100, help="rounds of the 45-agent chat (default 100)")
    parser.add_argument("--history", type=int, default=100, help="messages per timed request (default 100)")
    parser.add_argument("--batches", type=int, default=9)
    parser.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/llm_storage.json")
    args = parser.parse_args(argv)
    silence_ag2()
    with tempfile.TemporaryDirectory(prefix="cmbagent-llm-bench-") as tmp:
        size = await stored_bytes(args.rounds, Path(tmp) / "chat.db")
        cost = await caller_cost(args.history, args.batches, 500, Path(tmp) / "cost.db")
    print(f"groupchat45, {size['rounds']} rounds, {size['calls']} model calls:")
    print(f"  naive (every request whole, and its response): {size['naive_bytes'] / 1e6:9.3f} MB")
    print(f"  distinct messages:                             {size['distinct_message_bytes'] / 1e6:9.3f} MB")
    print(f"  distinct contents (+ responses, tools):        {size['distinct_bytes'] / 1e6:9.3f} MB")
    print(f"  stored (contents + calls' references):         {size['stored_bytes'] / 1e6:9.3f} MB = "
          f"{size['stored_over_distinct']:.2f}x distinct (goal <= 2x); naive / stored = "
          f"{size['naive_over_stored']:.1f}")
    print(f"capture_llm_call on the caller's thread, request of {cost['history']} messages: "
          f"{cost['whole_us']:.1f} us (without request/response {cost['bare_us']:.1f} us; "
          f"+{cost['added_us']:.1f} us; batches {cost['spread_us'][0]:.1f}-{cost['spread_us'][1]:.1f} us)")
    if not args.no_save:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({"size": size, "caller_cost": cost}, indent=2) + "\n")
    return 0 if size["stored_over_distinct"] is not None and size["stored_over_distinct"] <= 2.0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
