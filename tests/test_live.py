"""In-process live subscribers (run.subscribe) and the reorder buffer behind them."""

from __future__ import annotations

import asyncio
import threading
from collections import deque

from cmbagent_events import CaptureConfig, capture_run
from cmbagent_events.live import subscribers
from cmbagent_events.live.ordering import Gap, Released, SeqOrderer
from cmbagent_events.live.subscribers import EVENT, GAP, MISSED, UPDATE
from cmbagent_events.store.columns import Event, Update, make_row


async def _collect(sub, out: list) -> None:
    async for item in sub:
        out.append(item)


async def test_subscriber_gets_every_event_once_in_seq_order_from_threads_and_loop(db_url, monkeypatch) -> None:
    # Small batches and two producer threads: batch boundaries fall between racing seqs, so commits
    # arrive out of seq order and the hub has to put them back. No seq is ever dropped here, so the
    # gap timer must never fire, however long a descheduled thread holds a seq on a busy machine.
    monkeypatch.setattr(subscribers, "GAP_TIMEOUT_S", 3600.0)
    cfg = CaptureConfig(buffer_size=7, flush_interval_ms=5)
    per_producer = 1500
    async with capture_run(db_url, config=cfg, hooks=False) as run:
        sub = run.subscribe()
        items: list = []
        reader = asyncio.create_task(_collect(sub, items))
        call = run.capture_agent_call("planner", "plan the work")

        def produce(n: int) -> None:
            for i in range(per_producer):
                run.capture_message(f"t{n}", "sink", f"m{i}")

        threads = [threading.Thread(target=produce, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for i in range(per_producer):
            run.capture_tool_call("loop", "tool", {"i": i})
            if i % 50 == 0:
                await asyncio.sleep(0)
        for t in threads:
            t.join()
        run.capture_agent_response("planner", "done", event_id=call)
        assert await run.flush(30)
    await asyncio.wait_for(reader, 10)  # the iteration ends when the run closes

    total = 1 + 3 * per_producer + 1  # + the completion update
    events = [i for i in items if i.type == EVENT]
    assert [e.seq for e in events] == list(range(total - 1))
    assert [e.data["seq"] for e in events] == list(range(total - 1))
    assert not [i for i in items if i.type in (MISSED, GAP)]
    assert sub.missed == 0
    updates = [i for i in items if i.type == UPDATE]
    assert len(updates) == 1 and updates[0].data["id"] == call and updates[0].data["status"] == "completed"
    assert updates[0].data["outputs"] == {"response": "done"}
    first = events[0].data
    assert first["id"] == call and first["event_type"] == "agent_call" and first["inputs"]["message"] == "plan the work"
    tool = next(e.data for e in events if e.data["event_type"] == "tool_call")  # loop task: nested
    assert tool["parent_event_id"] == call and tool["depth"] == 1 and tool["inputs"]["arguments"] == {"i": 0}
    msg = next(e.data for e in events if e.data["event_subtype"] == "message")  # new threads: top level
    assert msg["parent_event_id"] is None and msg["inputs"]["recipient"] == "sink"
    assert msg["timestamp"].endswith("+00:00")


async def test_slow_subscriber_is_told_what_it_missed_and_slows_nobody(sqlite_url) -> None:
    cfg = CaptureConfig(buffer_size=50, flush_interval_ms=5)
    n = 2000
    async with capture_run(sqlite_url, config=cfg, hooks=False) as run:
        slow = run.subscribe(maxsize=10)  # never read until capture is over
        fast = run.subscribe()
        fast_items: list = []
        fast_reader = asyncio.create_task(_collect(fast, fast_items))
        for i in range(n):
            run.capture_handoff("a", "b", reason=str(i))
            if i % 100 == 0:
                await asyncio.sleep(0)
        assert await run.flush(30)
        stats = run.get_performance_stats()
        assert stats["dropped_events"] == 0 and stats["total_events"] == n
    await asyncio.wait_for(fast_reader, 10)
    assert [i.seq for i in fast_items] == list(range(n)) and fast.missed == 0

    slow_items = [item async for item in slow]
    events = [i for i in slow_items if i.type == EVENT]
    missed = [i for i in slow_items if i.type == MISSED]
    assert [e.seq for e in events] == list(range(10))  # what fitted in its queue, in order
    assert sum(m.missed for m in missed) == n - 10 == slow.missed
    assert slow_items[-1].type == MISSED  # told, even though the loss was at the very end


async def test_subscriber_after_close_ends_and_close_stops_early(sqlite_url, config) -> None:
    async with capture_run(sqlite_url, config=config, hooks=False) as run:
        early = run.subscribe()
        run.capture_message("a", "b", "hi")
        await run.flush()
        got = await asyncio.wait_for(early.__anext__(), 5)
        assert got.type == EVENT and got.data["inputs"]["content"] == "hi"
        early.close()
        assert [i async for i in early] == []
    late = run.subscribe()
    assert [i async for i in late] == []


async def test_subscriber_from_another_loop_thread_with_capture_run_sync(sqlite_url, config) -> None:
    from cmbagent_events import capture_run_sync

    def body() -> list:
        with capture_run_sync(sqlite_url, config=config, hooks=False) as run:
            sub = run.subscribe()
            for i in range(20):
                run.capture_message("a", "b", str(i))
        return sub

    sub = await asyncio.to_thread(body)
    items = [i async for i in sub]
    assert [i.seq for i in items] == list(range(20))


def test_orderer_holds_until_the_hole_fills_then_gives_up_after_the_timeout() -> None:
    now = [0.0]
    o: SeqOrderer[str] = SeqOrderer(0, gap_timeout=1.0, clock=lambda: now[0])
    o.add(1, "b")
    o.add(2, "c")
    assert o.release() == [] and o.deadline() == 1.0
    o.add(0, "a")
    assert o.release() == [Released(0, "a"), Released(1, "b"), Released(2, "c")]
    o.add(4, "e")
    assert o.release() == []
    now[0] = 1.5
    assert o.release() == [Gap(3, 3), Released(4, "e")]
    o.add(3, "d")  # arrives after it was given up: delivered, marked late
    assert o.release() == [Released(3, "d", late=True)]
    o.add(9, "j")
    assert o.release(force=True) == [Gap(5, 8), Released(9, "j")]


def _row(seq: int, status: str = "completed") -> tuple:
    """A committed event row as the writer hands it over (store/columns.py order)."""
    return make_row(Event, id=f"r-{seq}", run_id="run", session_id="s", node_id=None, step_id=None,
                    parent_event_id=None, event_type="agent_call", event_subtype="start", agent_name="a",
                    execution_order=seq, seq=seq, depth=0, inputs='{"message":"m"}', outputs=None, error_message=None,
                    status=status, timestamp="2026-01-01 00:00:00.000000", completed_at=None, duration_ms=None,
                    meta="{}")


async def test_hub_puts_out_of_order_commits_back_in_order_with_their_updates() -> None:
    from cmbagent_events.live.subscribers import LiveHub, Subscription
    from cmbagent_events.store.sink import Batch


    now = [0.0]  # the hub's clock, moved by hand: the gap timer's decision depends on it alone
    hub = LiveHub(writer=None, start_seq=0, gap_timeout=0.05, clock=lambda: now[0])  # type: ignore[arg-type]
    sub = Subscription(hub, 100, 0)
    hub.add(sub)
    update = make_row(Update, event_subtype="complete", status="completed", outputs='{"response":"r"}',
                      error_message=None, completed_at="2026-01-01 00:00:01.000000", duration_ms=1.0, meta=None,
                      id="r-1")
    hub.on_commit(Batch(events=[_row(0), _row(2)]))  # seq 1 raced into the next batch
    hub.on_commit(Batch(events=[], updates=[update]))  # 1's completion, before 1 itself was released
    hub.on_commit(Batch(events=[_row(1, "running"), _row(3)]))
    hub.on_commit(Batch(events=[_row(5)]))  # 4 was dropped at capture: never comes
    items = [await asyncio.wait_for(sub.__anext__(), 10) for _ in range(5)]  # 0..3 and 1's update
    assert sub._queue == deque()  # 5 is held back: 4 may still come
    now[0] = 1.0  # past the gap timeout: the hub's own timer (not the run's end) reports 4 and lets 5 out
    items += [await asyncio.wait_for(sub.__anext__(), 10) for _ in range(2)]
    hub.on_commit(None)
    assert [i async for i in sub] == []
    assert [(i.type, i.seq) for i in items] == [("event", 0), ("event", 1), ("update", 1), ("event", 2),
                                                ("event", 3), ("gap", 4), ("event", 5)]
    assert items[1].data["status"] == "running" and items[2].data["outputs"] == {"response": "r"}
    assert items[5].missed == 1 and items[5].data == {"from_seq": 4, "to_seq": 4}
    assert items[0].data["timestamp"] == "2026-01-01T00:00:00+00:00"


async def test_last_subscriber_leaving_detaches_the_hub_and_a_new_one_reattaches(sqlite_url, config) -> None:
    async with capture_run(sqlite_url, config=config, hooks=False) as run:
        first = run.subscribe()
        assert len(run.writer._listeners) == 1
        first.close()
        assert run.writer._listeners == ()  # nothing left for the writer to call
        run.capture_message("a", "b", "unseen")
        await run.flush()
        second = run.subscribe()
        run.capture_message("a", "b", "seen")
        await run.flush()
        got = await asyncio.wait_for(second.__anext__(), 5)
        assert (got.seq, got.data["inputs"]["content"]) == (1, "seen")
