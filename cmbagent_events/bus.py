"""The bounded, non-blocking queue between capture calls and the writer.

``put`` is a ``deque.append`` plus a length check: safe from the event loop thread and from any
other thread (both operations are atomic under the GIL), never blocks, never raises. When the
queue holds ``maxsize`` records the new one is dropped and counted; the count ends up on the
run row, so loss is never silent. The writer is woken once when a batch is ready, not per event:
a cross-thread wake-up costs ~5 us, so it must be paid per batch, never per event.

The queue is also bounded in estimated bytes (``max_bytes``), so that large payloads held through
a database outage cannot grow the process without limit. Records are weighed only while the
queue holds more than a batch (a queue the writer keeps up with seldom does, so the common path
pays one comparison and one append): the length of the payloads' strings, one level deep, plus a fixed cost per
record. Each record's weight is kept beside it (0 when not weighed) and subtracted when the writer
takes it; the total is reset whenever the writer empties the queue, so concurrent producers (or a
signal between the two appends) cannot make it drift for long.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from .records import EventRecord

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
        "_max_bytes",
        "_maxsize",
        "_queue",
        "_size_from",
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
        self._sizes: deque[int] = deque()  # beside the queue: each record's weight (0: not weighed)
        self._maxsize = maxsize
        self._batch_size = batch_size
        self._max_bytes = max_bytes
        self._bytes = 0  # estimated bytes held by the queued records
        self._size_from = min(batch_size, maxsize)  # depth from which records are weighed
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
        size = 0
        if depth >= self._size_from:  # a deep queue (the writer is behind or stalled): weigh it
            if depth >= self._maxsize:
                return self._refuse(record, QUEUE_FULL)
            size = estimate_size(record)
            if self._bytes + size > self._max_bytes:
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

    def take(self, limit: int) -> list[EventRecord]:
        """Pop up to ``limit`` records in FIFO order (writer side only)."""
        self._wake_pending = False
        queue = self._queue
        popleft = queue.popleft
        out: list[EventRecord] = []
        append = out.append
        n = min(limit, len(queue))
        for _ in range(n):
            append(popleft())
        sizes = self._sizes
        if not queue:  # the usual case: the writer took everything
            sizes.clear()
            self._bytes = 0
        else:
            pop = sizes.popleft
            freed = 0
            for _ in range(min(n, len(sizes))):
                freed += pop()
            if freed:
                self._bytes = max(0, self._bytes - freed)
        return out

    def discard(self) -> None:
        """Forget everything queued, uncounted: for a forked child, whose copies of the parent's
        records are the parent's to write."""
        self._queue.clear()
        self._sizes.clear()
        self._bytes = 0

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
        """Estimated bytes held by the queued records (0 while the queue is shallow: not weighed)."""
        return self._bytes


RECORD_BYTES = 400  # a record, its strings' headers and its containers, roughly
ITEM_BYTES = 64  # a value inside a payload that is not a string


def estimate_size(record: EventRecord) -> int:
    """A cheap estimate of the memory ``record`` keeps alive: its payloads' strings, one level deep.

    Deeper structure is counted per item, not per character: an estimate that must cost about a
    microsecond, for a bound against runaway growth, not for accounting."""
    size = RECORD_BYTES
    value: Any
    try:
        for value in (record.inputs, record.outputs, record.meta, record.extra, record.error_message):
            if value is None:
                continue
            kind = type(value)
            if kind is str or kind is bytes:
                size += len(value)
            elif kind is tuple or kind is list:
                for item in value:
                    size += len(item) if type(item) is str or type(item) is bytes else _shallow(item)
            elif kind is dict:
                for item in value.values():
                    size += len(item) if type(item) is str or type(item) is bytes else _shallow(item)
            else:
                size += ITEM_BYTES
    except Exception:  # a dict another thread changes meanwhile: an estimate, never an error
        pass
    return size


def _shallow(value: object) -> int:
    """A nested value: its strings one more level down, else a fixed cost per item."""
    items: Any
    if type(value) is dict:
        items = value.values()
    elif type(value) is list or type(value) is tuple:
        items = value
    else:
        return ITEM_BYTES
    return sum(len(v) if type(v) is str else ITEM_BYTES for v in items)


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
