"""A run's stored events, replayed and then followed, from any process (viewer, ``tail``).

:class:`RunFeed` reads the database: first every stored event after ``after_seq`` (in pages), then,
woken by a :mod:`.notify` watch, whatever is committed next. It follows ``seq``, not time, so each
event comes exactly once and in seq order across the replay/live boundary and across reconnects
(``after_seq`` = the last seq a client has). Events committed ahead of a missing seq are held back
until it arrives (:mod:`.ordering`); agent calls seen while still running are re-read until they
complete and then sent again as updates. The feed ends once the run is no longer ``running``:
the run row is closed only after the writer's final drain, so by then every event is stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ..errors import RunNotFound
from ..store.models import EventColumns, RunColumns
from ..store.reader import RunReader
from .notify import Notifier, PollNotifier
from .ordering import DEFAULT_GAP_TIMEOUT_S, Gap, SeqOrderer

PAGE = 500  # events per read and per yielded chunk
MAX_TRACKED = 5000  # running agent calls / skipped seqs re-checked per cycle, at most


@dataclass(slots=True)
class FeedItem:
    """One step of a feed.

    kind: ``run`` (the run row, first and whenever it changes), ``events`` (new events, seq order),
    ``updates`` (agent calls that completed since they were sent), ``gap`` (seqs ``first..last``
    never stored), ``replayed`` (the stored history up to ``last_seq`` has been sent; live from
    here), ``end`` (the run is over and everything was sent).
    """

    kind: str
    events: list[EventColumns] = field(default_factory=list)
    run: RunColumns | None = None
    first: int = -1
    last: int = -1
    last_seq: int = -1


class RunFeed:
    """Replay then follow one run (see the module doc). Iterate it: ``async for item in feed``."""

    def __init__(self, reader: RunReader, run_id: str, after_seq: int = -1, notifier: Notifier | None = None,
                 gap_timeout: float = DEFAULT_GAP_TIMEOUT_S, page: int = PAGE) -> None:
        self.reader = reader
        self.run_id = run_id
        self.notifier = notifier or PollNotifier()
        self.page = page
        self._orderer: SeqOrderer[EventColumns] = SeqOrderer(max(after_seq, -1) + 1, gap_timeout)
        self._running: dict[str, EventColumns] = {}  # agent calls sent while still running
        self._skipped: set[int] = set()  # seqs given up as gaps; sent late if they ever appear
        self.last_seq = after_seq  # the highest seq sent

    async def __aiter__(self) -> AsyncIterator[FeedItem]:
        watch = self.notifier.watch(self.run_id)
        try:
            run = await self.reader.get_run(self.run_id)
            if run is None:
                raise RunNotFound(self.run_id)
            yield FeedItem("run", run=run)
            replayed = False
            while True:
                watch.clear()
                fresh = await self.reader.get_run(self.run_id)
                if fresh is not None and _changed(run, fresh):
                    run = fresh
                    yield FeedItem("run", run=run)
                final = run.status != "running"
                async for item in self._read(force=final):
                    yield item
                if not replayed:
                    replayed = True
                    yield FeedItem("replayed", last_seq=self.last_seq)
                if final:
                    yield FeedItem("end", run=run)
                    return
                await watch.wait()
        finally:
            watch.close()

    async def _read(self, force: bool) -> AsyncIterator[FeedItem]:
        orderer, reader = self._orderer, self.reader
        if orderer.held:  # look again for the seqs the held events are waiting on
            for e in await reader.events_after(self.run_id, orderer.next_seq - 1, self.page * 4, orderer.highest):
                orderer.add(e.seq, e)
        while True:
            got = await reader.events_after(self.run_id, orderer.highest, self.page)
            for e in got:
                orderer.add(e.seq, e)
            for item in self._release(force and len(got) < self.page):
                yield item
            if len(got) < self.page:
                break
        if self._skipped:
            late = await reader.events_by_seq(self.run_id, self._skipped)
            for e in late:
                self._skipped.discard(e.seq)
                orderer.add(e.seq, e)
            for item in self._release(False):
                yield item
        if self._running:
            done = [e for e in await reader.events_by_id(list(self._running)) if e.status != "running"]
            for e in done:
                del self._running[e.id]
            if done:
                yield FeedItem("updates", events=done)

    def _release(self, force: bool) -> list[FeedItem]:
        out: list[FeedItem] = []
        chunk: list[EventColumns] = []
        for r in self._orderer.release(force):
            if isinstance(r, Gap):
                if chunk:
                    out.append(FeedItem("events", events=chunk))
                    chunk = []
                out.append(FeedItem("gap", first=r.first, last=r.last))
                if len(self._skipped) + r.count <= MAX_TRACKED:
                    self._skipped.update(range(r.first, r.last + 1))
                continue
            e = r.item
            chunk.append(e)
            self.last_seq = max(self.last_seq, e.seq)
            if e.status == "running" and e.event_type == "agent_call" and len(self._running) < MAX_TRACKED:
                self._running[e.id] = e
            if len(chunk) >= self.page:
                out.append(FeedItem("events", events=chunk))
                chunk = []
        if chunk:
            out.append(FeedItem("events", events=chunk))
        return out


def _changed(old: RunColumns, new: RunColumns) -> bool:
    return (old.status, old.completed_at, old.total_events, old.dropped_events) != (
        new.status, new.completed_at, new.total_events, new.dropped_events)
