"""Commit listeners: what sees each batch right after the writer committed it.

They are how live subscribers (``cmbagent_events.live``) get events without reading the database:
called on the writer's loop, between batch writes, so they must be quick; an exception in one is
logged and never reaches the writer. With no listener the cost is one falsy check per batch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..store.sink import Batch

log = logging.getLogger("cmbagent_events.writer")

CommitListener = Callable[[Batch | None], None]


class CommitListeners:
    """The listener registry of a writer (:class:`~cmbagent_events.writer.loop.BatchWriter` is one)."""

    def __init__(self) -> None:
        self._listeners: tuple[CommitListener, ...] = ()
        self._listeners_lock = threading.Lock()
        self._stopped = False  # listeners have been told (None) that nothing more will be committed

    def add_commit_listener(self, listener: CommitListener) -> bool:
        """Call ``listener(batch)`` on the writer's loop after each committed batch, and
        ``listener(None)`` once when the writer stops. It must be quick and must not block: it runs
        between batch writes. Exceptions are logged and never reach the writer.

        Returns False (and registers nothing) when the writer has already stopped."""
        with self._listeners_lock:
            if self._stopped:
                return False
            self._listeners = (*self._listeners, listener)  # copy on write: safe while _notify iterates
            return True

    def remove_commit_listener(self, listener: CommitListener) -> None:
        """Stop calling ``listener`` (no-op if it is not registered)."""
        with self._listeners_lock:
            self._listeners = tuple(fn for fn in self._listeners if fn != listener)  # == : bound methods

    def _notify(self, batch: Batch | None) -> None:
        for listener in self._listeners:
            try:
                listener(batch)
            except Exception:
                log.exception("cmbagent-events: commit listener failed")

    def _stop_listeners(self) -> None:
        with self._listeners_lock:
            self._stopped = True
        if self._listeners:
            self._notify(None)
