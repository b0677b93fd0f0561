"""The read API for scripts and notebooks: :class:`Store`, the sync face of :class:`AsyncStore`.

Every call runs on a private event loop in a thread of the store's own (anyio's blocking portal),
so it works where a loop is already running (Jupyter) as well as in plain scripts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from .store import AsyncStore

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal



class Store:
    """Read-only access to captured runs; see :func:`~cmbagent_events.read.open_store`."""

    def __init__(self, db_url: str | None = None, *, table_prefix: str | None = None,
                 db_schema: str | None = None) -> None:
        from anyio.from_thread import start_blocking_portal

        self._async = AsyncStore(db_url, table_prefix=table_prefix, db_schema=db_schema)
        self._portal_cm = start_blocking_portal()
        self._portal: BlockingPortal | None = self._portal_cm.__enter__()
        try:
            self._portal.call(self._async.open)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise

    @property
    def db_url(self) -> str:
        return self._async.db.url

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._portal is None:
            raise RuntimeError("this Store is closed")
        return self._portal.call(functools.partial(method, *args, **kwargs))

    def close(self) -> None:
        """Release the connections and the store's thread (idempotent)."""
        if self._portal is not None:
            try:
                self._portal.call(self._async.aclose)
            finally:
                self._portal = None
                self._portal_cm.__exit__(None, None, None)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the queries: each is AsyncStore's, run on the store's loop ----------------------------------------
    def runs(self, limit: int | None = 50, *, offset: int = 0, status: str | None = None, mode: str | None = None,
             since: datetime | date | str | None = None, task_contains: str | None = None) -> list[dict[str, Any]]:
        """Runs, newest first (see :meth:`AsyncStore.runs`)."""
        return self._call(self._async.runs, limit, offset=offset, status=status, mode=mode, since=since,
                          task_contains=task_contains)

    def run(self, run_id: str) -> dict[str, Any]:
        """One run by id or unique prefix (raises ``RunNotFound``)."""
        return self._call(self._async.run, run_id)

    def events(self, run_id: str, event_type: str | None = None, agent: str | None = None, status: str | None = None,
               *, after_seq: int = -1, limit: int | None = None) -> list[dict[str, Any]]:
        """The run's events in seq order, as dicts of their columns."""
        return self._call(self._async.events, run_id, event_type, agent, status, after_seq=after_seq, limit=limit)

    def iter_events(self, run_id: str, event_type: str | None = None, agent: str | None = None,
                    status: str | None = None, *, page: int = 2000) -> Iterator[dict[str, Any]]:
        """The run's events one by one, read a page at a time (for runs too big to hold)."""
        run_id = self._call(self._async.run_id, run_id)
        after = -1
        while True:
            batch = self._call(self._async.events, run_id, event_type, agent, status, after_seq=after, limit=page)
            if not batch:
                return
            yield from batch
            after = batch[-1]["seq"]

    def event(self, event_id: str) -> dict[str, Any]:
        """One event by its id (raises ``EventNotFound``)."""
        return self._call(self._async.event, event_id)

    def llm_calls(self, run_id: str) -> list[dict[str, Any]]:
        """Every model call of the run whole, in seq order (see :meth:`AsyncStore.llm_calls`)."""
        return self._call(self._async.llm_calls, run_id)

    def llm_call(self, event_id: str) -> dict[str, Any]:
        """A model call whole: request, response, usage, cost and its source (see :meth:`AsyncStore.llm_call`)."""
        return self._call(self._async.llm_call, event_id)

    def tree(self, run_id: str) -> list[dict[str, Any]]:
        """The run's events nested under ``children``; the roots."""
        return self._call(self._async.tree, run_id)

    def files(self, run_id: str) -> list[dict[str, Any]]:
        """The files the run produced."""
        return self._call(self._async.files, run_id)

    def cost(self, run_id: str, by: str = "agent") -> list[dict[str, Any]]:
        """Cost, tokens and time per ``by`` = agent, model, step or node (see :meth:`AsyncStore.cost`)."""
        return self._call(self._async.cost, run_id, by)

    def cost_total(self, run_id: str) -> dict[str, Any]:
        """The run's cost, tokens and time in one row."""
        return self._call(self._async.cost_total, run_id)

    def diff(self, run_a: str, run_b: str) -> dict[str, Any]:
        """How run B differs from run A (see :meth:`AsyncStore.diff`)."""
        return self._call(self._async.diff, run_a, run_b)

    def frame(self, what: str | list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        """A pandas DataFrame of ``runs``, ``events``, ``cost`` or ``files`` (the method of that name,
        called with the arguments), or of a list of dicts; needs pandas (``[pandas]`` extra)."""
        from .frames import to_frame

        if isinstance(what, str):
            if what not in ("runs", "events", "cost", "files"):
                raise ValueError(f"frame() of 'runs', 'events', 'cost' or 'files', got {what!r}")
            return to_frame(getattr(self, what)(*args, **kwargs))
        return to_frame(what)
