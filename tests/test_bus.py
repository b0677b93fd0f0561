"""The bus's bounds: count and estimated bytes, drops counted by cause, accounting that stays
exact when the writer empties the queue."""

from __future__ import annotations

import threading

from cmbagent_events.bus import QUEUE_BYTES, QUEUE_FULL, RECORD_BYTES, EventBus, estimate_size
from cmbagent_events.records import INSERT, MESSAGE_ROW, EventRecord


def _message(seq: int, content: str) -> EventRecord:
    return EventRecord(INSERT, f"e{seq}", seq, 0, "agent_call", "message", "b", None, 0, None, None, seq,
                       None, None, None, "completed", None, None, (MESSAGE_ROW, "a", "b", content, None))


def test_estimate_counts_strings_at_any_depth_and_shared_containers_once() -> None:
    small, big = estimate_size(_message(0, "x")), estimate_size(_message(0, "x" * 10_000))
    assert big - small == 9_999
    history = [{"role": "user", "content": [{"type": "text", "text": "h" * 20_000}]}]  # three levels down
    deep = EventRecord(INSERT, "e", 0, 0, "agent_call", "start", "a", None, 0, None, None, 0,
                       {"message": "m", "context": {"history": history}}, None, None, "running", None, None, None)
    assert estimate_size(deep) >= RECORD_BYTES + 20_000
    shared = {f"key{i}": f"{i}" + "v" * 100 for i in range(400)}  # one chat context held by every call

    def call(seq: int) -> EventRecord:
        return EventRecord(INSERT, f"e{seq}", seq, seq, "agent_call", "start", "a", None, 0, None, None, 0,
                           {"message": "m", "context": shared}, None, None, "running", None, None, None)

    seen: dict[int, int] = {}
    first, second = estimate_size(call(0), seen), estimate_size(call(1), seen)
    assert first > second + 400 * 100  # its values, shared, are counted once
    nested = EventRecord(INSERT, "e", 0, 0, "tool_call", "execute", "a", None, 0, None, None, 0,
                         ("tool", {"query": "q" * 5_000}), {"result": "r" * 7_000}, None, "completed", None,
                         None, None)
    assert estimate_size(nested) >= RECORD_BYTES + 12_000


def test_byte_bound_drops_and_counts_by_cause() -> None:
    bus = EventBus(maxsize=1_000, batch_size=2, max_bytes=50_000)
    content = "x" * 10_000
    accepted = sum(bus.put(_message(i, f"{i:02d}" + content)) for i in range(20))
    # every record is weighed: the bound admits what fits in 50 kB
    assert accepted == 50_000 // estimate_size(_message(0, "00" + content))
    assert bus.drop_causes == {QUEUE_BYTES: 20 - accepted} and bus.dropped == 20 - accepted
    assert bus.queued_bytes <= 50_000
    taken = bus.take(1_000)
    assert [r.seq for r in taken] == list(range(accepted))
    assert bus.queued_bytes == accepted * estimate_size(_message(0, "00" + content))  # held by the writer
    assert not bus.put(_message(98, "98" + content))  # a batch held through an outage is inside the bound
    bus.release()  # written
    assert bus.queued_bytes == 0
    assert bus.put(_message(99, "99" + content))  # room again once the writer wrote them


def test_count_bound_still_applies_first() -> None:
    bus = EventBus(maxsize=5, batch_size=2)
    assert sum(bus.put(_message(i, "x")) for i in range(8)) == 5
    assert bus.drop_causes == {QUEUE_FULL: 3}


def test_concurrent_producers_leave_no_drift_once_drained() -> None:
    bus = EventBus(maxsize=1_000_000, batch_size=10, max_bytes=1 << 40)
    per_thread, threads = 5_000, 4
    taken: list[EventRecord] = []
    done = threading.Event()

    def produce(base: int) -> None:
        for i in range(per_thread):
            bus.put(_message(base + i, "y" * 100))

    def consume() -> None:
        while not done.is_set() or len(bus):
            taken.extend(bus.take(37))

    consumer = threading.Thread(target=consume)
    consumer.start()
    producers = [threading.Thread(target=produce, args=(t * per_thread,)) for t in range(threads)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    done.set()
    consumer.join()
    assert len(taken) == per_thread * threads and bus.dropped == 0
    bus.release()
    assert bus.queued_bytes == 0 and len(bus) == 0


def test_a_take_by_bytes_stops_before_the_weight_and_takes_at_least_one() -> None:
    bus = EventBus(maxsize=1_000, batch_size=100)
    for i in range(10):
        assert bus.put(_message(i, "x" * 10_000))
    heavy = estimate_size(_message(0, "x" * 10_000))
    taken = bus.take(100, max_bytes=3 * heavy)
    assert [r.seq for r in taken] == [0, 1, 2]
    assert [r.seq for r in bus.take(100, max_bytes=1)] == [3]  # heavier than the bound alone: still taken
    assert [r.seq for r in bus.take(4, max_bytes=1 << 30)] == [4, 5, 6, 7]  # the count bound too
    assert [r.seq for r in bus.take(100)] == [8, 9] and bus.queued_bytes == 2 * heavy  # held until released
