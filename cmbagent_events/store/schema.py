"""Schema migration (Alembic, applied automatically on first use).

``capture_run``'s entry goes through here on every run, so this module imports nothing heavy at
load: :func:`migrate` first asks the database for our stored revision with the raw driver; only
when it is not :data:`HEAD_REVISION` are Alembic and SQLAlchemy imported and the upgrade run.
URLs and reading engines live in database.py.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import DatabaseURLError, SchemaConflictError
from .database import (
    Database,
    check_placement,
    immutable_uri,
    make_engine,
    read_only_place,
    resolve_db,
    sqlite_path,
)
from .placement import TABLES, Placement

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

MIGRATIONS_PACKAGE = "cmbagent_events.migrations"  # the repo's migrations/, mapped into the package
# The newest migration (migrations/versions). A new migration must update it: a test compares it
# with Alembic's head. Stored revision == HEAD_REVISION means: nothing to migrate, skip Alembic.
HEAD_REVISION = "0004_fewer_event_indexes"
PG_MIGRATION_LOCK = 727274061  # pg_advisory_xact_lock key serialising migrators across processes


_migrated: set[tuple[str, Placement]] = set()  # (URL, placement) already at head in this process
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, Placement], asyncio.Lock]] = (
    weakref.WeakKeyDictionary())
# Alembic keeps its running migration in module globals: two upgrades in one process at once (two URLs,
# on one loop or on two threads) break each other (KeyError 'script'). One at a time per process.
_alembic_loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
_alembic_thread_lock = threading.Lock()


def migrations_dir() -> Path:
    """The Alembic script directory shipped inside the package (works from any working directory).

    Raises:
        RuntimeError: when the install carries no migrations (a broken or hand-made install).
    """
    from importlib import resources

    try:
        location = Path(str(resources.files(MIGRATIONS_PACKAGE)))
    except (ModuleNotFoundError, TypeError) as exc:
        raise RuntimeError(f"cmbagent-events migrations not installed ({MIGRATIONS_PACKAGE}: {exc})") from None
    if not (location / "env.py").is_file():
        raise RuntimeError(f"cmbagent-events migrations not found at {location}")
    return location


# -- the cheap check: is our stored revision current? -------------------------------------------------
async def stored_revision(db: Database, placement: Placement) -> str | None:
    """Our Alembic revision stored in ``db`` (None: no version table or no row yet), read with the raw
    driver: no SQLAlchemy, no Alembic. Connection errors propagate (an unusable database fails here)."""
    query = f"SELECT version_num FROM {placement.qualified('alembic_version')}"
    if db.is_sqlite:
        return await asyncio.to_thread(_sqlite_revision, db, query)
    import asyncpg

    conn = await asyncpg.connect(db.dsn)
    try:
        try:
            rows = await conn.fetch(query)
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            return None
    finally:
        conn.terminate()  # nothing to finish gracefully after a read
    return rows[0][0] if len(rows) == 1 else None


def _sqlite_revision(db: Database, query: str) -> str | None:
    import sqlite3

    path = Path(db.path or "").expanduser()
    if not path.is_file():  # don't let the check create the file: the migration does, after its checks
        return None
    if read_only_place(db):
        conn = sqlite3.connect(immutable_uri(db), uri=True)
    else:
        conn = sqlite3.connect(str(path), timeout=10.0)
    try:
        rows = conn.execute(query).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    finally:
        conn.close()
    return rows[0][0] if len(rows) == 1 else None


def forget_migrated(db_url: str | Database | URL) -> None:
    """Migrate ``db_url`` again on its next :func:`migrate`, whatever the placement (its SQLite file
    was replaced, or it was unreachable when first asked)."""
    url = resolve_db(db_url).url
    for key in [k for k in _migrated if k[0] == url]:
        _migrated.discard(key)


# -- migration ------------------------------------------------------------------------------------------
async def migrate(db_url: str | Database | URL, placement: Placement | None = None) -> None:
    """Bring the database at ``db_url`` to the latest schema (once per URL and placement per process).

    ``placement`` (table prefix, PostgreSQL schema) defaults to ``CMBAGENT_EVENTS_TABLE_PREFIX`` /
    ``CMBAGENT_EVENTS_DB_SCHEMA``. A database whose stored revision is already the head costs one
    small query; otherwise Alembic runs. Concurrent migrators are serialised: in this process by a
    lock, across processes by a PostgreSQL advisory lock or (SQLite) a file lock.

    Raises:
        DatabaseURLError: for a URL that cannot work.
        SchemaConflictError: when another application's tables or Alembic history are in the way.
    """
    db = resolve_db(db_url)
    placement = Placement.from_env() if placement is None else placement
    check_placement(db, placement)
    key = (db.url, placement)
    if key in _migrated:
        return
    if db.is_sqlite:
        parent = Path(sqlite_path(db)).expanduser().resolve().parent
        if not parent.is_dir():
            raise DatabaseURLError(f"directory {str(parent)!r} for SQLite file {db.path!r} does not exist")
    if await stored_revision(db, placement) == HEAD_REVISION:
        _migrated.add(key)
        return
    migrations_dir()  # fail at entry, with the reason, when the install lacks its migrations
    # asyncio locks are per loop
    lock = _locks.setdefault(asyncio.get_running_loop(), {}).setdefault(key, asyncio.Lock())
    async with lock:
        file_lock = await asyncio.to_thread(_lock_sqlite_file, db) if db.is_sqlite else None
        try:
            await _migrate_with_retries(db, placement, key)
        finally:
            if file_lock is not None:
                file_lock.close()  # releases the flock


async def _migrate_with_retries(db: Database, placement: Placement, key: tuple[str, Placement]) -> None:
    from sqlalchemy.exc import DBAPIError

    for attempt in range(1, 4):
        if key in _migrated:
            return
        try:
            await _migrate_once(db, placement)
        except DBAPIError:
            if attempt == 3:
                raise
            await asyncio.sleep(0.2 * attempt)
        else:
            _migrated.add(key)


def _lock_sqlite_file(db: Database) -> IO[bytes] | None:
    """An exclusive lock beside the SQLite file, held while migrating.

    Python's sqlite3 commits each CREATE TABLE on its own, so two migrators (threads with their
    own loops, or processes) could interleave and leave a half-made schema; this serialises them.
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): rely on the retry loop
        return None
    handle = open(str(Path(db.path or "").expanduser()) + ".migrate.lock", "ab")  # noqa: SIM115 - held open
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    return handle


async def _migrate_once(db: Database, placement: Placement) -> None:
    from sqlalchemy import text

    # Same loop: an asyncio lock (a thread lock would block the loop the holder needs). Other threads'
    # loops: the thread lock, polled so that waiting never blocks a loop and a cancelled wait holds nothing.
    loop_lock = _alembic_loop_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with loop_lock:
        while not _alembic_thread_lock.acquire(blocking=False):  # noqa: ASYNC110 - a thread lock, not an event
            await asyncio.sleep(0.005)
        try:
            engine = make_engine(db)
            try:
                async with engine.begin() as conn:
                    if not db.is_sqlite:
                        await conn.execute(text(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})"))
                    await conn.run_sync(_upgrade, placement)
            finally:
                await engine.dispose()
        finally:
            _alembic_thread_lock.release()


def _upgrade(sync_conn: Any, placement: Placement) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = sync_conn
    cfg.attributes["placement"] = placement
    _check_conflicts(sync_conn, placement, {s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()})
    command.upgrade(cfg, "head")


def _check_conflicts(sync_conn: Any, placement: Placement, our_revisions: set[str]) -> None:
    """Refuse, with a way out, a database where our names are taken by someone else: tables of ours
    without our version table, or a version table holding revisions that are not ours."""
    from sqlalchemy import inspect, text

    inspector = inspect(sync_conn)
    schema = placement.schema
    if schema and schema not in inspector.get_schema_names():
        return  # a new schema: nothing of anyone's in it yet
    existing = set(inspector.get_table_names(schema=schema))
    hint = ("set CMBAGENT_EVENTS_TABLE_PREFIX (e.g. 'cmbagent_') or, on PostgreSQL, CMBAGENT_EVENTS_DB_SCHEMA "
            "so that our tables live beside the existing ones")
    where = f" in schema {schema!r}" if schema else ""
    if placement.version_table in existing:
        stored = {row[0] for row in sync_conn.execute(
            text(f"SELECT version_num FROM {placement.qualified('alembic_version')}"))}
        foreign = stored - our_revisions
        if foreign:
            raise SchemaConflictError(
                f"table {placement.version_table!r}{where} holds Alembic revisions of another application "
                f"({', '.join(sorted(foreign))}), not ours: {hint}")
        return
    taken = [placement.table(t) for t in TABLES if placement.table(t) in existing]
    if taken:
        raise SchemaConflictError(
            f"table(s) {', '.join(taken)}{where} already exist and were not created by cmbagent-events "
            f"(no {placement.version_table!r} table): {hint}")
