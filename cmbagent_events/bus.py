"""The bounded, non-blocking queue between capture calls and the writer.

``put`` is a ``deque.append`` plus a length check: safe from the event loop thread and from any
other thread (both operations are atomic under the GIL), never blocks, never raises. When the
queue holds ``maxsize`` records the new one is dropped and counted; the count ends up on the
run row, so loss is never silent. The writer is woken once when a batch is ready, not per event:
a cross-thread wake-up costs ~5 us, so it must be paid per batch, never per event.

The queue is also bounded in estimated bytes (``max_bytes``), so that large payloads held through
a database outage cannot grow the process without limit. Every record is weighed as it is put
(:func:`estimate_size`: its strings at any depth, containers by their length, within a budget of
nodes; a large container shared by many records, e.g. one chat context, counted once while queued),
and its weight kept beside it. The records the writer has taken stay counted until it takes the next
batch or releases it (:meth:`release`, once it is written, spilled or counted), so a batch held
through an outage is inside the bound too. The total is recomputed whenever the writer empties the
queue, so concurrent producers (or a signal between the two appends) cannot make it drift for long.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from .records import LLM_ROW, EventRecord

# Causes of loss, as counted on the run (``meta.drops``)
QUEUE_FULL = "queue full"
QUEUE_BYTES = "queue over its byte bound"
CAPTURE_FAILED = "capture call failed"
ENCODE_FAILED = "encode failure"
REFUSED = "refused by database"
NOT_WRITTEN = "not written before close"
FILE_REPLACED = "database file replaced"
WRITER_ERROR = "writer error"
USER_CODE_TIMEOUT = "user code timed out"  # a __repr__ / model_dump that did not return within the budget
INTERRUPTED = "interrupted mid-capture"  # Ctrl-C or SIGTERM raised inside a capture call


class EventBus:
    """A bounded FIFO of :class:`EventRecord` with drop accounting and batch-ready wake-ups."""

    __slots__ = (
        "_batch_size",
        "_bytes",
        "_drop_lock",
        "_held",
        "_max_bytes",
        "_maxsize",
        "_queue",
        "_seen",
        "_sizes",
        "_wake_pending",
        "_waker",
        "drop_causes",
        "dropped",
        "lost_completions",
        "wake_on_first",
    )

    def __init__(self, maxsize: int, batch_size: int, max_bytes: int = 1 << 62) -> None:
        self._queue: deque[EventRecord] = deque()
        self._sizes: deque[int] = deque()  # beside the queue: each record's weight
        self._maxsize = maxsize
        self._batch_size = batch_size
        self._max_bytes = max_bytes
        self._bytes = 0  # estimated bytes held by the queued records
        self._held = 0  # ... and by the batch the writer took last (until it takes the next)
        self._seen: dict[int, Any] = {}  # ids of large values weighed since the writer's last take
        self._waker: Callable[[], None] | None = None
        self._wake_pending = False
        self.wake_on_first = False  # set by an idle writer: the next record wakes it (bus empty till then)
        self._drop_lock = threading.Lock()
        self.dropped = 0  # events lost, all causes together
        self.drop_causes: dict[str, int] = {}  # cause -> events lost (sums to ``dropped``)
        self.lost_completions = 0  # agent-call completions refused by a full queue (their rows stay "running")

    def put(self, record: EventRecord) -> bool:
        """Enqueue ``record``; False (and counted) when the queue is full. Never blocks.

        An asynchronous exception (Ctrl-C, SIGTERM) raised here once the record is queued or counted
        is marked with :func:`mark_accounted`, so the capture call it unwinds does not count it again.
        """
        queue = self._queue
        depth = len(queue)
        if depth >= self._maxsize:
            return self._refuse(record, QUEUE_FULL)
        size = estimate_size(record, self._seen)
        if self._bytes + self._held + size > self._max_bytes:
            forget_added(self._seen)
            return self._refuse(record, QUEUE_BYTES)
        self._bytes += size
        try:  # from the append on: the record is queued (no signal can land between them: see accounted())
            queue.append(record)
            self._sizes.append(size)
            if not depth and self.wake_on_first:  # the writer sleeps until the first record
                self.wake_on_first = False
                waker = self._waker
                if waker is not None:
                    waker()
            elif depth + 1 >= self._batch_size and not self._wake_pending:
                self._wake_pending = True
                waker = self._waker
                if waker is not None:
                    waker()
        except BaseException as exc:
            mark_accounted(exc, record.seq)
            raise
        return True

    def _refuse(self, record: EventRecord, cause: str) -> bool:
        """The queue is full (by count or by bytes): ``record`` is dropped and counted (rare path)."""
        counted = False
        try:
            # A lock keeps the count exact when several threads overflow at once.
            with self._drop_lock:
                if record.seq < 0:  # an agent call's completion: not an event of its own (no seq)
                    self.lost_completions += 1
                else:
                    self._count(1, cause)
                counted = True
        except BaseException as exc:
            if counted:
                mark_accounted(exc, record.seq)
            raise
        return False

    def put_control(self, record: EventRecord) -> None:
        """Enqueue a control record (flush barrier) regardless of the bound, and wake the writer."""
        self._queue.append(record)
        self._sizes.append(0)
        self._wake_pending = True
        waker = self._waker
        if waker is not None:
            waker()

    def set_waker(self, waker: Callable[[], None] | None) -> None:
        """Install the callable that wakes the writer (it must be safe from any thread)."""
        self._waker = waker

    def take(self, limit: int, max_bytes: int | None = None) -> list[EventRecord]:
        """Pop up to ``limit`` records in FIFO order (writer side only); with ``max_bytes``, only as many
        as weigh that much (at least one)."""
        self._wake_pending = False
        queue = self._queue
        popleft = queue.popleft
        out: list[EventRecord] = []
        append = out.append
        n = min(limit, len(queue))
        if max_bytes is not None and n > 1:
            weight = 0
            for k, size in enumerate(self._sizes):
                weight += size
                if k >= n or (weight > max_bytes and k):
                    n = k
                    break
        for _ in range(n):
            append(popleft())
        sizes = self._sizes
        self._seen.clear()  # ids seen only among records put since this take: all still alive, never reused
        if not queue:  # the usual case: the writer took everything
            self._held = self._bytes
            sizes.clear()
            self._bytes = 0
        else:
            pop = sizes.popleft
            taken = 0
            for _ in range(min(n, len(sizes))):
                taken += pop()
            self._held = taken
            self._bytes = max(0, self._bytes - taken)
        return out

    def release(self) -> None:
        """The writer is done with the batch it took last (written, spilled or counted)."""
        self._held = 0

    def discard(self) -> None:
        """Forget everything queued, uncounted: for a forked child, whose copies of the parent's
        records are the parent's to write."""
        self._queue.clear()
        self._sizes.clear()
        self._bytes = self._held = 0
        self._seen.clear()

    def count_dropped(self, n: int, cause: str) -> None:
        """Count ``n`` events lost for ``cause`` (e.g. a row the database refused)."""
        if n <= 0:
            return
        with self._drop_lock:
            self._count(n, cause)

    def _count(self, n: int, cause: str) -> None:
        # both totals stored with no call between them: an asynchronous exception (which can only
        # be raised after a call) never leaves ``dropped`` and ``drop_causes`` disagreeing
        causes = self.drop_causes
        by_cause = causes.get(cause, 0) + n
        self.dropped += n
        causes[cause] = by_cause

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def queued_bytes(self) -> int:
        """Estimated bytes held by the queued records and the batch the writer holds."""
        return self._bytes + self._held


RECORD_BYTES = 400  # a record, its tuple and its own fields, roughly
ITEM_BYTES = 32  # a value inside a payload that is neither a string nor a container (an int, a float, ...)
STR_BYTES = 50  # a string's own header
DICT_ITEM_BYTES = 40  # a dict's slot per item (entry + index + spare room); a list's or tuple's is 8
WEIGH_NODES = 4096  # values looked at per record; past them, a container's items are counted by slot only
SHARED_FROM = 32  # containers with this many items (and every nested one) are counted once while queued ...
SHARED_STR_FROM = 64  # ... and strings this long (shorter ones cost less to count again than to look up)


def estimate_size(record: EventRecord, seen: dict[int, Any] | None = None) -> int:
    """A cheap estimate of the memory ``record`` keeps alive: its strings at any depth, containers by
    their slots, within ``WEIGH_NODES`` values. A large container or string whose id is in ``seen`` is
    not counted again: a record queued since the writer's last take holds it (capture copies a dict's
    top level, so a context shared by every call shares its values: only the copy's slots are new).
    The ids this record adds to ``seen`` are kept under ``seen[0]`` (a list) until the next call, so
    that a refused record takes them back (:func:`forget_added`)."""
    size = RECORD_BYTES
    if seen is not None and 0 in seen:
        del seen[0]
    budget = [WEIGH_NODES]
    try:
        for value in (record.inputs, record.outputs, record.meta, record.extra, record.error_message):
            kind = type(value)
            if kind is str or kind is bytes:
                size += len(value)
            elif kind is tuple or kind is dict or kind is list:
                size += _weigh(value, seen, budget)
            elif value is not None:
                size += ITEM_BYTES
        extra = record.extra
        if type(extra) is tuple and len(extra) == 2 and extra[0] == LLM_ROW:  # a model call's whole request
            size += extra[1].weight
    except Exception:  # a dict another thread changes meanwhile: an estimate, never an error
        pass
    return size


def forget_added(seen: dict[int, Any]) -> None:
    """Take back the ids the last :func:`estimate_size` added (its record was refused: once freed,
    its objects' ids may be reused by others)."""
    for ident in seen.pop(0, None) or ():
        seen.pop(ident, None)


def _weigh(value: Any, seen: dict[int, Any] | None, budget: list[int], nested: bool = False) -> int:
    """A container: its slots, then (within ``budget`` values in all) what it holds, recursively. A
    nested container (AG2's llm_config inside a call's meta, a context's history) is often the same
    object in every record: counted once, and not walked again."""
    n = len(value)
    if type(value) is dict:
        total = 64 + DICT_ITEM_BYTES * n
        items: Any = value.values()
    else:
        total = 64 + 8 * n
        items = value
    if (nested or n >= SHARED_FROM) and seen is not None:
        if id(value) in seen:
            return 0
        _add(seen, id(value))
    budget[0] -= n
    if budget[0] < 0:  # past the budget: slots only
        return total
    for item in items:
        kind = type(item)
        if kind is str or kind is bytes:
            length = len(item)
            if length >= SHARED_STR_FROM and seen is not None:
                if id(item) in seen:
                    continue
                _add(seen, id(item))
            total += length + STR_BYTES
        elif kind is dict or kind is list or kind is tuple:
            total += _weigh(item, seen, budget, True)
        elif item is not None:
            total += ITEM_BYTES
    return total


def _add(seen: dict[int, Any], ident: int) -> None:
    seen[ident] = 1
    added = seen.get(0)
    if added is None:
        seen[0] = [ident]
    else:
        added.append(ident)


# -- asynchronous exceptions (Ctrl-C, SIGTERM) inside a capture call -------------------------------
# CPython raises a signal handler's exception only where its interpreter loop checks for pending
# work: after a call returns, on entry to a Python function, on a backward jump; never between two
# plain loads, stores or arithmetic. So an exception caught around ``queue.append(record)`` arrived
# after the append, and one arriving before the ``try`` left the record neither queued nor counted.
_ACCOUNTED_ATTR = "_cmbagent_events_accounted_seq"


def mark_accounted(exc: BaseException, seq: int) -> None:
    """Note on ``exc`` that the event ``seq`` it interrupted was queued or counted already."""
    try:
        setattr(exc, _ACCOUNTED_ATTR, seq)
    except Exception:  # an exception type that refuses attributes: counted twice at worst
        pass


def accounted(exc: BaseException, seq: int) -> bool:
    """Whether the bus already queued or counted the event ``seq`` that ``exc`` interrupted."""
    return seq >= 0 and getattr(exc, _ACCOUNTED_ATTR, None) == seq
