"""In-process live subscribers: ``async for ev in run.subscribe(): ...``.

One :class:`LiveHub` per run listens to the writer's commits (``BatchWriter.add_commit_listener``),
puts events back in ``seq`` order (:mod:`.ordering`) and hands the same committed rows to every
:class:`Subscription`. Each subscription has its own bounded queue: handing rows over is a few
``deque.append`` calls on the writer's loop, decoding them into dicts happens in the subscriber's
own task, and a full queue drops that subscriber's newest items and counts them; the subscriber is
then told, by a ``missed`` item placed where the loss happened. So a slow subscriber never slows
capture or the other subscribers, and never loses events without knowing.

Subscriptions see events committed after they subscribed (seq from the number of events captured
at that moment on). The iteration ends when the run closes; ``close()`` ends it earlier.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..store.columns import Event, Update
from ..store.sink import Batch
from .ordering import DEFAULT_GAP_TIMEOUT_S, Gap, SeqOrderer
from .wire import event_from_row, seq_of_event_id, update_from_row

DEFAULT_SUBSCRIBER_QUEUE = 10_000
GAP_TIMEOUT_S = DEFAULT_GAP_TIMEOUT_S  # how long a missing seq is waited for before it is reported as a gap


class CommitSource(Protocol):
    """What a hub listens to: a run's writer (``writer.BatchWriter``), named here so that live
    imports nothing upstream of the store."""

    def add_commit_listener(self, listener: Callable[[Batch | None], None]) -> bool: ...
    def remove_commit_listener(self, listener: Callable[[Batch | None], None]) -> None: ...

# Item types
EVENT = "event"  # a new event row (data: the event dict)
UPDATE = "update"  # an agent call completed (data: id and the changed fields; meta is a patch)
MISSED = "missed"  # this subscriber's queue was full: ``missed`` items were dropped for it here
GAP = "gap"  # seqs seq..seq+missed-1 were never committed (dropped at capture, see dropped_events)


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One item of a live stream."""

    type: str
    seq: int | None
    data: dict[str, Any] = field(default_factory=dict)
    missed: int = 0
    late: bool = False  # delivered after its seq had been reported as a gap


class Subscription:
    """A subscriber's bounded queue, read as an async iterator of :class:`LiveEvent`."""

    def __init__(self, hub: LiveHub | None, maxsize: int, start_seq: int, ended: bool | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self.start_seq = start_seq
        self.missed = 0  # total items dropped for this subscriber
        self.received = 0  # items handed to the consumer
        self._hub = hub
        self._queue: deque[tuple] = deque()
        self._pending_missed = 0
        self._ended = hub is None if ended is None else ended
        self._waiting = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id = 0
        self._wakeup: asyncio.Event | None = None

    # -- writer side (the writer's loop) ----------------------------------------------------------
    def _offer(self, entries: list[tuple]) -> None:
        queue, start = self._queue, self.start_seq
        for entry in entries:
            seq = entry[1]
            if seq is not None and seq < start and (entry[0] != GAP or entry[2] < start):
                continue
            if len(queue) >= self.maxsize:
                self._pending_missed += 1
                continue
            if self._pending_missed:
                queue.append((MISSED, self._pending_missed))
                self.missed += self._pending_missed
                self._pending_missed = 0
            queue.append(entry)
        self._wake()

    def _end(self) -> None:
        if self._pending_missed:
            self._queue.append((MISSED, self._pending_missed))
            self.missed += self._pending_missed
            self._pending_missed = 0
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if not self._waiting:
            return
        self._waiting = False
        loop, event = self._loop, self._wakeup
        if loop is None or event is None:
            return
        if threading.get_ident() == self._thread_id:
            event.set()
        else:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the subscriber's loop is gone
                pass

    # -- consumer side ------------------------------------------------------------------------------
    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> LiveEvent:
        if self._wakeup is None:
            self._loop = asyncio.get_running_loop()
            self._thread_id = threading.get_ident()
            self._wakeup = asyncio.Event()
        while True:
            if self._queue:
                self.received += 1
                return _to_event(self._queue.popleft())
            if self._ended:
                raise StopAsyncIteration
            self._wakeup.clear()
            self._waiting = True
            if self._queue or self._ended:  # raced with _offer/_end: do not sleep on it
                self._waiting = False
                continue
            await self._wakeup.wait()

    def close(self) -> None:
        """Stop receiving; what is already queued can still be read, then iteration ends."""
        hub, self._hub = self._hub, None
        if hub is not None:
            hub.remove(self)
        self._end()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _to_event(entry: tuple) -> LiveEvent:
    kind = entry[0]
    if kind == EVENT:
        return LiveEvent(EVENT, entry[1], event_from_row(entry[2]), late=entry[3])
    if kind == UPDATE:
        return LiveEvent(UPDATE, entry[1], update_from_row(entry[2]))
    if kind == GAP:
        first, last = entry[1], entry[2]
        return LiveEvent(GAP, first, {"from_seq": first, "to_seq": last}, last - first + 1)
    return LiveEvent(MISSED, None, {}, entry[1])


class LiveHub:
    """Fans one run's committed batches out to its subscriptions, in seq order."""

    def __init__(self, writer: CommitSource, start_seq: int, gap_timeout: float = DEFAULT_GAP_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._writer = writer
        self._clock = clock
        self._orderer: SeqOrderer[tuple[Any, ...]] = SeqOrderer(start_seq, gap_timeout, clock)
        self._subs: tuple[Subscription, ...] = ()
        self._updates: dict[int, list[tuple]] = {}  # completions of events still held back
        self._timer: asyncio.TimerHandle | None = None
        self._lock = threading.Lock()
        self.closed = False

    def add(self, sub: Subscription) -> bool:
        """Attach ``sub``; False when the hub is closed (run over, or detached)."""
        with self._lock:
            if self.closed:
                return False
            self._subs = (*self._subs, sub)
            return True

    def remove(self, sub: Subscription) -> None:
        """Drop ``sub``; the last one leaving detaches the hub, so the writer pays nothing again."""
        with self._lock:
            self._subs = tuple(s for s in self._subs if s is not sub)
            if self._subs or self.closed:
                return
            self.closed = True
        self._writer.remove_commit_listener(self.on_commit)

    def on_commit(self, batch: Batch | None) -> None:
        """The writer's commit listener (runs on the writer's loop)."""
        if self.closed:  # detached while this batch was on its way
            return
        if batch is None:
            self._finish()
            return
        orderer = self._orderer
        for row in batch.events:
            orderer.add(row[Event.seq], row)
        direct: list[tuple] = []
        for row in batch.updates:
            seq = seq_of_event_id(row[Update.id])
            if seq is not None and seq >= orderer.next_seq:  # its event is not released yet
                self._updates.setdefault(seq, []).append(row)  # so it follows that event out
            else:
                direct.append((UPDATE, seq, row))
        self._dispatch(orderer.release(), direct)
        self._arm_timer()

    def _dispatch(self, released: list, direct: list[tuple]) -> None:
        entries: list[tuple] = []
        for item in released:
            if isinstance(item, Gap):
                entries.append((GAP, item.first, item.last))
                for seq in [s for s in self._updates if item.first <= s <= item.last]:
                    entries.extend((UPDATE, seq, row) for row in self._updates.pop(seq))
                continue
            entries.append((EVENT, item.seq, item.item, item.late))
            for row in self._updates.pop(item.seq, ()):
                entries.append((UPDATE, item.seq, row))
        entries.extend(direct)
        if entries:
            for sub in self._subs:
                sub._offer(entries)

    def _arm_timer(self) -> None:
        deadline = self._orderer.deadline()
        if deadline is None or self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, deadline - self._clock())
        self._timer = loop.call_later(delay + 0.001, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self.closed:
            self._dispatch(self._orderer.release(), [])
            self._arm_timer()

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        leftovers = [(UPDATE, seq, row) for seq, rows in self._updates.items() for row in rows]
        self._dispatch(self._orderer.release(force=True), leftovers)
        with self._lock:
            self.closed = True
            subs = self._subs
        for sub in subs:
            sub._end()


_hubs: weakref.WeakKeyDictionary[CommitSource, LiveHub] = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def subscribe(writer: CommitSource | None, start_seq: int, maxsize: int = DEFAULT_SUBSCRIBER_QUEUE,
              gap_timeout: float | None = None) -> Subscription:
    """A new subscription to the events ``writer`` commits from ``start_seq`` on (see the module doc);
    ``EventCaptureManager.subscribe`` is the usual way in.

    Safe from any thread. No writer (a run that records nothing: capture disabled, sampled out) or
    a writer that has already stopped gives a subscription that ends at once.
    """
    if writer is None:
        return Subscription(None, maxsize, 0)
    sub = Subscription(None, maxsize, start_seq, ended=False)
    with _hubs_lock:
        hub = sub._hub = _hubs.get(writer)
        if hub is None or not hub.add(sub):  # none yet, or the last one closed: a fresh hub
            timeout = GAP_TIMEOUT_S if gap_timeout is None else gap_timeout
            hub = sub._hub = LiveHub(writer, sub.start_seq, timeout)
            if not writer.add_commit_listener(hub.on_commit) or not hub.add(sub):  # the run is over
                sub._hub = None
                sub._end()
                return sub
            _hubs[writer] = hub
    return sub
