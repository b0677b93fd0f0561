"""RunFeed against a scripted reader: rows becoming visible out of seq order, completions, gaps, end."""

from __future__ import annotations

import asyncio

from cmbagent_events.live.feed import FeedItem, RunFeed
from cmbagent_events.live.notify import PollNotifier
from cmbagent_events.store.models import ExecutionEvent, WorkflowRun


class ScriptedReader:
    """Just the RunReader calls RunFeed makes, over rows the test reveals step by step."""

    def __init__(self) -> None:
        self.run = WorkflowRun(id="run", status="running", total_events=0, dropped_events=0)
        self.rows: dict[int, ExecutionEvent] = {}

    def reveal(self, seq: int, status: str = "completed") -> None:
        self.rows[seq] = ExecutionEvent(id=f"e{seq}", run_id="run", seq=seq, status=status, event_type="agent_call")

    async def get_run(self, run_id: str) -> WorkflowRun:
        return WorkflowRun(id=self.run.id, status=self.run.status, total_events=self.run.total_events,
                           dropped_events=self.run.dropped_events)

    async def events_after(self, run_id, after_seq, limit=500, upto_seq=None):
        seqs = sorted(s for s in self.rows if s > after_seq and (upto_seq is None or s <= upto_seq))
        return [self.rows[s] for s in seqs[:limit]]

    async def events_by_seq(self, run_id, seqs):
        return [self.rows[s] for s in sorted(seqs) if s in self.rows]

    async def events_by_id(self, ids):
        return [e for e in self.rows.values() if e.id in ids]


def _summary(item: FeedItem):
    if item.kind in ("events", "updates"):
        return item.kind, [e.seq for e in item.events]
    if item.kind == "gap":
        return "gap", (item.first, item.last)
    if item.kind == "replayed":
        return "replayed", item.last_seq
    return item.kind, item.run.status


async def test_feed_orders_holds_updates_and_reports_gaps_at_the_end() -> None:
    reader = ScriptedReader()
    reader.reveal(0)
    reader.reveal(2)  # 1 is committed one batch later
    feed = RunFeed(reader, "run", notifier=PollNotifier(0.01), gap_timeout=60.0, page=2)  # type: ignore[arg-type]
    got: list = []
    it = feed.__aiter__()

    async def take(n: int) -> None:
        for _ in range(n):
            got.append(_summary(await asyncio.wait_for(it.__anext__(), 5)))

    await take(3)
    assert got == [("run", "running"), ("events", [0]), ("replayed", 0)]
    reader.reveal(1, status="running")
    reader.reveal(3)
    await take(2)
    assert got[-2:] == [("events", [1, 2]), ("events", [3])]  # chunks of at most `page`
    reader.rows[1].status = "completed"  # the agent call completes: sent again as an update
    await take(1)
    assert got[-1] == ("updates", [1])
    reader.reveal(5)  # 4 never comes (dropped at capture)
    reader.run.status, reader.run.dropped_events = "completed", 1
    await take(4)
    assert got[-4:] == [("run", "completed"), ("gap", (4, 4)), ("events", [5]), ("end", "completed")]


async def test_resume_after_seq_and_late_events_after_a_timed_out_gap() -> None:
    reader = ScriptedReader()
    for s in (0, 1, 2, 4):
        reader.reveal(s)
    feed = RunFeed(reader, "run", after_seq=1, notifier=PollNotifier(0.01), gap_timeout=0.05)  # type: ignore[arg-type]
    got: list = []
    it = feed.__aiter__()
    for _ in range(4):
        got.append(_summary(await asyncio.wait_for(it.__anext__(), 5)))
    assert got[:3] == [("run", "running"), ("events", [2]), ("replayed", 2)]
    assert got[3] == ("gap", (3, 3))  # overdue while the run is still going
    got.append(_summary(await asyncio.wait_for(it.__anext__(), 5)))
    assert got[4] == ("events", [4])
    reader.reveal(3)  # it was only late: still delivered, once
    got.append(_summary(await asyncio.wait_for(it.__anext__(), 5)))
    assert got[5] == ("events", [3])
    reader.run.status = "failed"
    rest = [_summary(i) async for i in it]
    assert rest == [("run", "failed"), ("end", "failed")]
