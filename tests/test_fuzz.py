"""Fuzz: 10,000 random capture calls with hostile values in every parameter (run fields included),
containers mutated by other threads while queued, on SQLite and PostgreSQL. The writer must be
alive at the end, flush must return, and every event must be stored or counted as dropped by cause:
stored + dropped = emitted, and the seqs missing from the database are exactly the dropped ones."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

from sqlalchemy import select

from cmbagent_events import CaptureConfig, ExecutionEvent, WorkflowRun, capture_run

EVENTS = 10_000


class BadStr(str):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")

    def __hash__(self) -> int:
        return str.__hash__(self)


class BadInt(int):
    def __int__(self) -> int:
        raise RuntimeError("no int")

    def __index__(self) -> int:
        raise RuntimeError("no index")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __float__(self) -> float:
        raise RuntimeError("no float")


class BadFloat(float):
    def __float__(self) -> float:
        raise RuntimeError("no float")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class BadDict(dict):
    def items(self):  # type: ignore[override]
        raise RuntimeError("no items")

    def __iter__(self):
        raise RuntimeError("no iter")

    def __len__(self) -> int:
        raise RuntimeError("no len")


class Unrepresentable:
    def __repr__(self) -> str:
        raise ValueError("broken repr")


class Mutated:
    """Containers another thread keeps changing while events holding them are queued."""

    def __init__(self) -> None:
        self.dict: dict[str, Any] = {f"k{i}": "v" * 50 for i in range(100)}
        self.list: list[Any] = list(range(300))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._churn, daemon=True)

    def _churn(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            self.dict[f"n{i}"] = {"nested": [i] * 5}
            self.dict.pop(f"n{i - 50}", None)
            self.list.append(i)
            if len(self.list) > 600:
                del self.list[:200]
            if i % 100 == 0:
                time.sleep(0.0001)  # let the capturing thread have the GIL too


def hostile(rng: random.Random, mutated: Mutated) -> Any:
    """One value from the menagerie."""
    choice = rng.randrange(26)
    return [
        lambda: BadStr("bad string"),
        lambda: BadInt(7),
        lambda: BadFloat(1.5),
        lambda: 10 ** 5000,  # more than 4,300 digits
        lambda: -(10 ** 30),
        lambda: 10 ** 30,
        lambda: float("nan"),
        lambda: float("inf"),
        lambda: None,
        lambda: "x" * rng.choice([0, 1, 65, 129, 257, 300, 5000, 20_000]),
        lambda: "nul\x00 and surrogate \udcff",
        lambda: b"\xff\x00bytes",
        lambda: mutated.dict,
        lambda: mutated.list,
        lambda: BadDict(a=1),
        lambda: Unrepresentable(),
        lambda: {BadStr("k"): BadInt(1), 3: [BadFloat(2.0)], None: {"deep": [[[Unrepresentable()]]]}},
        lambda: ["Authorization", "Bearer sk-abcdefghijklmnopqrstuvwx"],
        lambda: rng.randrange(-5, 5),
        lambda: "slow",
        lambda: True,
        lambda: {1, 2, 3},
        lambda: object(),
        lambda: "ok",
        lambda: 3.25,
        lambda: [mutated.dict, mutated.list],
    ][choice]()


def one_call(run, rng: random.Random, mutated: Mutated, open_calls: list[Any]) -> None:
    h = lambda: hostile(rng, mutated)  # noqa: E731
    kind = rng.randrange(12)
    if kind == 0:
        eid = run.capture_agent_call(h(), h(), context=h(), metadata=h())
        if eid is not None:
            open_calls.append(eid)
    elif kind == 1:
        event_id = open_calls.pop() if open_calls and rng.random() < 0.8 else h()
        run.capture_agent_response(h(), h(), event_id=event_id, metadata=h())
    elif kind == 2:
        run.capture_tool_call(h(), h(), h(), result=h(), metadata=h())
    elif kind == 3:
        run.capture_code_execution(h(), h(), language=h(), result=h(), exit_code=h(), duration_ms=h(), metadata=h())
    elif kind == 4:
        run.capture_file_generation(h(), h(), h(), size_bytes=h(), metadata=h())
    elif kind == 5:
        run.capture_handoff(h(), h(), context=h(), reason=h())
    elif kind == 6:
        run.capture_message(h(), h(), h(), tokens=h(), metadata=h())
    elif kind == 7:
        run.capture_error(h(), h(), error_type=h(), metadata=h())
    elif kind == 8:
        run.capture_llm_call(h(), h(), h(), h(), total_tokens=h(), cost=h(), duration_ms=h(), metadata=h())
    elif kind == 9:
        run.capture_event(h(), h(), h(), inputs=h(), outputs=h(), duration_ms=h(), metadata=h(), status=h())
    elif kind == 10:
        run.set_context(node_id=h(), step_id=h())
    else:
        run.capture_message("planner", "engineer", "an ordinary message")  # innocent neighbours


async def test_fuzz_hostile_values_never_kill_the_writer_nor_lose_events_silently(db_url, db_session) -> None:
    rng = random.Random(20261125)
    mutated = Mutated()
    mutated.thread.start()
    # a queue smaller than the burst: some events are dropped (queue full) and must show as gaps
    config = CaptureConfig(buffer_size=200, flush_interval_ms=20, close_timeout_s=60, queue_size=4000)
    run_fields = dict(task_description=hostile(rng, mutated), mode=BadStr("m" * 65), agent="a" * 257,
                      model=BadInt(4), session_id=12345, meta={"k": BadStr("v"), "n": 10 ** 5000})
    try:
        async with capture_run(db_url, config=config, hooks=False, **run_fields) as run:
            open_calls: list[Any] = []
            for i in range(EVENTS):
                one_call(run, rng, mutated, open_calls)
                if i % 50 == 0:
                    await asyncio.sleep(0)  # the writer shares this loop: let it drain now and then
            assert await run.flush(60), "flush did not return: the writer is dead or stuck"
            writer_task = run.writer._task
            assert writer_task is not None and not writer_task.done(), "the writer task ended"
            stats = run.get_performance_stats()
    finally:
        mutated.stop.set()
        mutated.thread.join()
    row = await db_session.get(WorkflowRun, run.run_id)
    assert row is not None, "no run row"
    seqs = set((await db_session.scalars(select(ExecutionEvent.seq).where(ExecutionEvent.run_id == run.run_id))).all())
    emitted = row.total_events
    assert emitted >= stats["total_events"] >= EVENTS * 0.8
    missing = set(range(emitted)) - seqs
    assert len(seqs) + row.dropped_events == emitted, (len(seqs), row.dropped_events, emitted)
    assert len(missing) == row.dropped_events
    drops = row.meta.get("drops", {})
    assert sum(drops.values()) == row.dropped_events, drops
    print(f"\nfuzz {db_url.split(':')[0]}: emitted {emitted}, stored {len(seqs)}, dropped {row.dropped_events} "
          f"by cause {drops}")
    # the run's own fields were coerced to fit their columns
    assert row.agent.startswith("a" * 200) and len(row.agent) <= 256
    assert row.session_id == "12345" and len(row.mode) <= 64
