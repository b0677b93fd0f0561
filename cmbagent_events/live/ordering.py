"""Putting committed events back in ``seq`` order, and saying when a seq will never come.

``seq`` is assigned at capture, but two threads can enqueue seq 6 before seq 5, and a batch
boundary can then fall between them: 6 is committed (and seen) one batch before 5. A reader that
only follows "seq greater than the last one I sent" would skip 5 forever. So readers hold events
that arrive ahead of a missing seq until it shows up, and give up on it, reporting a *gap*, only
when it is overdue (dropped at capture: the run's ``dropped_events`` counts it) or when the
caller knows nothing more can come (the run has finished).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_GAP_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class Released(Generic[T]):
    """An item let through in order (``late``: its seq had already been given up as a gap)."""

    seq: int
    item: T
    late: bool = False


@dataclass(frozen=True, slots=True)
class Gap:
    """Seqs ``first..last`` (inclusive) that were given up on: never committed, or overdue."""

    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1


class SeqOrderer(Generic[T]):
    """A reorder buffer keyed by ``seq``: ``add`` in any order, ``release`` in seq order.

    Not thread-safe: use it from one thread (the writer's loop, or a feed's task).
    """

    def __init__(self, next_seq: int = 0, gap_timeout: float = DEFAULT_GAP_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.next_seq = next_seq  # the seq the reader is waiting for
        self.gap_timeout = gap_timeout
        self._clock = clock
        self._held: dict[int, T] = {}
        self._late: list[Released[T]] = []
        self._gap_since: float | None = None  # when the current hole at next_seq was first seen

    def add(self, seq: int, item: T) -> None:
        """Offer an item; one below ``next_seq`` (already released or given up) comes out as late."""
        if seq < self.next_seq:
            self._late.append(Released(seq, item, True))
        else:
            self._held[seq] = item

    def is_pending(self, seq: int) -> bool:
        """True while ``seq`` is held back (added, not yet released)."""
        return seq in self._held

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def highest(self) -> int:
        """The highest seq seen so far (``next_seq - 1`` when nothing is held)."""
        return max(self._held) if self._held else self.next_seq - 1

    def deadline(self) -> float | None:
        """Clock time at which the current hole is given up, or None when nothing waits."""
        return None if self._gap_since is None else self._gap_since + self.gap_timeout

    def release(self, force: bool = False) -> list[Released[T] | Gap]:
        """Everything now deliverable, in order: late items, then the in-order run of held items.

        A hole before held items is skipped (returned as a :class:`Gap`) once it is older than
        ``gap_timeout``, or at once when ``force`` (nothing more can arrive).
        """
        out: list[Released[T] | Gap] = list(self._late)
        self._late.clear()
        held = self._held
        while held:
            seq = self.next_seq
            if seq in held:
                out.append(Released(seq, held.pop(seq)))
                self.next_seq = seq + 1
                self._gap_since = None
                continue
            now = self._clock()
            if self._gap_since is None:
                self._gap_since = now
            if not force and now - self._gap_since < self.gap_timeout:
                break
            nxt = min(held)
            out.append(Gap(seq, nxt - 1))
            self.next_seq = nxt
            self._gap_since = None
        return out
