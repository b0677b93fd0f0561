"""Reading captured runs back, for people: scripts, notebooks, the CLI and the viewer.

    from cmbagent_events.read import open_store

    with open_store() as store:                 # the default database, or open_store("postgresql+asyncpg://...")
        run = store.runs(limit=1)[0]            # the newest run, a dict of its columns
        store.cost(run["id"], by="agent")       # tokens, cost and time per agent
        store.frame("events", run["id"])        # a pandas DataFrame (the [pandas] extra)

Read-only: a store never creates tables, files or schema in a database; one without our tables is
refused (:class:`~cmbagent_events.errors.NotACaptureDatabase`). ``open_async_store`` is the same API
with ``await`` (an async context manager).
"""

from __future__ import annotations

from .store import AsyncStore
from .sync import Store


def open_store(db_url: str | None = None, *, table_prefix: str | None = None, db_schema: str | None = None) -> Store:
    """A :class:`Store` on ``db_url`` (default: ``$CMBAGENT_EVENTS_DB_URL``, else ``cmbagent_events.db``);
    table prefix and schema default to ``$CMBAGENT_EVENTS_TABLE_PREFIX`` / ``$CMBAGENT_EVENTS_DB_SCHEMA``.
    Use it as a context manager, or call ``close()``.

    Raises:
        DatabaseURLError: a bad URL, or a SQLite file that does not exist.
        NotACaptureDatabase: a database without cmbagent-events tables.
    """
    return Store(db_url, table_prefix=table_prefix, db_schema=db_schema)


def open_async_store(db_url: str | None = None, *, table_prefix: str | None = None,
                     db_schema: str | None = None) -> AsyncStore:
    """An :class:`AsyncStore`: ``async with open_async_store() as store: await store.runs()``."""
    return AsyncStore(db_url, table_prefix=table_prefix, db_schema=db_schema)


__all__ = ["AsyncStore", "Store", "open_async_store", "open_store"]
