"""What the read commands share: a reader on the database, run ids, pages of events, progress."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, Any

EXIT_OK, EXIT_FAIL = 0, 1


class CliError(Exception):
    """A failure to report as one line on stderr (exit code 1)."""


class Progress:
    """``label: done/total`` on one stderr line, redrawn at most 10 times a second; silent when
    stderr is not a terminal."""

    def __init__(self, label: str, total: int | None, stream: IO[str] | None = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self._stream = stream or sys.stderr
        self._on = self._stream.isatty()
        self._last = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self._on and now - self._last >= 0.1:
            self._last = now
            of = f"/{self.total}" if self.total is not None else ""
            self._stream.write(f"\r{self.label}: {self.done}{of}")
            self._stream.flush()

    def finish(self) -> None:
        if self._on and self._last:
            self._stream.write("\r\033[K")
            self._stream.flush()



# -- database access --------------------------------------------------------------------------------
async def open_reader(args: argparse.Namespace):
    """A RunReader on ``args.db`` and ``args.placement``; refuses a missing SQLite file and a database
    that holds no cmbagent-events tables (never creating them there); an older schema of ours is upgraded."""
    from ..read.opening import check_readable
    from ..store.database import make_engine, resolve_db
    from ..store.reader import RunReader
    from ..store.schema import HEAD_REVISION, migrate

    db = resolve_db(args.db)
    if db.is_sqlite and not Path(db.path or "").expanduser().exists():
        raise CliError(f"no database at {db.path!r}: capture a run first (cmbagent-events demo), "
                       "or pass --db URL / set CMBAGENT_EVENTS_DB_URL")
    if await check_readable(db, args.placement) != HEAD_REVISION:
        await migrate(db, args.placement)
    return RunReader(make_engine(db, args.placement), args.placement)


async def open_store(args: argparse.Namespace):
    """The read API's store on ``args.db`` and ``args.placement`` (read-only; open; close it with aclose)."""
    from ..read import open_async_store

    return await open_async_store(args.db, table_prefix=args.placement.prefix,
                                  db_schema=args.placement.schema or "").open()


async def with_reader(args: argparse.Namespace, body: Callable[[Any], Awaitable[int]]) -> int:
    reader = await open_reader(args)
    try:
        return await body(reader)
    finally:
        await reader.engine.dispose()


async def with_store(args: argparse.Namespace, body: Callable[[Any], Awaitable[int]]) -> int:
    store = await open_store(args)
    try:
        return await body(store)
    finally:
        await store.aclose()


async def resolve_run(reader, run_id: str | None) -> str:
    if run_id is None:
        run = await reader.latest_run()
        if run is None:
            raise CliError("no runs in this database yet")
        return run.id
    from ..errors import RunNotFound

    found = await reader.matching_run_ids(run_id)
    if len(found) != 1:
        raise CliError(str(RunNotFound.named(run_id, several=bool(found))))
    return found[0]


async def close_orphans_quietly(reader) -> None:
    """Runs whose process died are shown (and stored) as abandoned, not as running forever."""
    from ..store.orphans import close_orphans

    try:
        closed = await close_orphans(reader.engine, placement=reader.placement)
    except Exception as exc:  # e.g. a read-only database: still list what is there
        print(f"cmbagent-events: could not close orphaned runs: {exc}", file=sys.stderr)
        return
    for run in closed:
        hint = spill_hint(run.run_id)
        if hint:
            print(f"cmbagent-events: run {run.run_id} closed as abandoned; {hint}", file=sys.stderr)


def spill_hint(run_id: str) -> str | None:
    """What to do with the run's spill file here (SIGTERM or close during an outage), if there is one."""
    from ..writer.spill import spill_path

    path = spill_path(run_id)
    return f"its spill file is waiting: cmbagent-events replay {path}" if path.is_file() else None


async def pages(reader, run_id: str, progress: Progress, size: int = 2000) -> AsyncIterator[list]:
    """A run's events in seq order, a page at a time (keyset on seq), advancing ``progress``."""
    after = -1
    try:
        while True:
            page = await reader.events_after(run_id, after, size)
            if not page:
                return
            progress.advance(len(page))
            yield page
            after = page[-1].seq
    finally:
        progress.finish()



def make_notifier(db_url: str, poll: float):
    from ..live.notify import PgNotifier, PollNotifier
    from ..store.database import resolve_db

    db = resolve_db(db_url)
    return PollNotifier(poll) if db.is_sqlite else PgNotifier(db.dsn or "")

