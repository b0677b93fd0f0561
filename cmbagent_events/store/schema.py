"""Database URLs and schema migration (Alembic, applied automatically on first use)."""

from __future__ import annotations

import asyncio
import weakref
from importlib import resources
from pathlib import Path
from typing import IO

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS_PACKAGE = "cmbagent_events.migrations"  # the repo's migrations/, mapped into the package
SQLITE_DRIVERS = {"sqlite", "sqlite+aiosqlite"}
POSTGRES_DRIVERS = {"postgresql", "postgresql+asyncpg", "postgres"}

_migrated: set[str] = set()  # URLs already at head in this process
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = weakref.WeakKeyDictionary()


class DatabaseURLError(ValueError):
    """The database URL cannot be used; the message says why and what is accepted."""


def parse_db_url(db_url: str) -> URL:
    """Validate ``db_url`` and normalise it to an async driver (aiosqlite / asyncpg).

    Raises:
        DatabaseURLError: for malformed URLs or unsupported backends.
    """
    try:
        url = make_url(db_url)
    except (ArgumentError, ValueError, TypeError) as exc:
        raise DatabaseURLError(
            f"invalid database URL {db_url!r}: {exc}. Use sqlite+aiosqlite:///path.db or "
            "postgresql+asyncpg://user:pass@host:port/dbname"
        ) from None
    if url.drivername in SQLITE_DRIVERS:
        return url.set(drivername="sqlite+aiosqlite")
    if url.drivername in POSTGRES_DRIVERS:
        if not url.database:
            raise DatabaseURLError(f"PostgreSQL URL {url.render_as_string()!r} names no database")
        return url.set(drivername="postgresql+asyncpg")
    raise DatabaseURLError(
        f"unsupported database backend {url.drivername!r} in {url.render_as_string()!r}: "
        "use sqlite+aiosqlite:// or postgresql+asyncpg://"
    )


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def sqlite_path(url: URL) -> str:
    """The file path of a SQLite URL (':memory:' is refused: the writer needs its own connection)."""
    path = url.database or ""
    if path in ("", ":memory:") or path.startswith("file::memory:"):
        raise DatabaseURLError("in-memory SQLite cannot be shared by the writer; give a file path")
    return path


def asyncpg_dsn(url: URL) -> str:
    """A libpq-style DSN for asyncpg from a SQLAlchemy URL."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def make_engine(db_url: str | URL, **kwargs) -> AsyncEngine:
    """An AsyncEngine for reading (repositories, CLI, tests); SQLite connections use WAL."""
    url = parse_db_url(db_url) if isinstance(db_url, str) else db_url
    engine = create_async_engine(url, **kwargs)
    if is_sqlite(url):
        from sqlalchemy import event

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()

    return engine


def migrations_dir() -> Path:
    """The Alembic script directory shipped inside the package (works from any working directory).

    Raises:
        RuntimeError: when the install carries no migrations (a broken or hand-made install).
    """
    try:
        location = Path(str(resources.files(MIGRATIONS_PACKAGE)))
    except (ModuleNotFoundError, TypeError) as exc:
        raise RuntimeError(f"cmbagent-events migrations not installed ({MIGRATIONS_PACKAGE}: {exc})") from None
    if not (location / "env.py").is_file():
        raise RuntimeError(f"cmbagent-events migrations not found at {location}")
    return location


def _upgrade(sync_conn) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


async def migrate(db_url: str | URL) -> None:
    """Bring the database at ``db_url`` to the latest schema (once per URL per process).

    Concurrent migrators are serialised: in this process by a lock, across processes by a
    PostgreSQL advisory lock, or (SQLite) by retrying once the other migrator has created the
    tables and the upgrade has become a no-op.
    """
    url = parse_db_url(db_url) if isinstance(db_url, str) else db_url
    key = url.render_as_string(hide_password=False)
    if key in _migrated:
        return
    if is_sqlite(url):
        sqlite_path(url)
        parent = Path(url.database).expanduser().resolve().parent
        if not parent.is_dir():
            raise DatabaseURLError(f"directory {str(parent)!r} for SQLite file {url.database!r} does not exist")
    migrations_dir()  # fail at entry, with the reason, when the install lacks its migrations
    lock = _locks.setdefault(asyncio.get_running_loop(), {}).setdefault(key, asyncio.Lock())  # asyncio locks are per loop
    async with lock:
        file_lock = await asyncio.to_thread(_lock_sqlite_file, url) if is_sqlite(url) else None
        try:
            for attempt in range(1, 4):
                if key in _migrated:
                    return
                try:
                    await _migrate_once(url)
                except DBAPIError:
                    if attempt == 3:
                        raise
                    await asyncio.sleep(0.2 * attempt)
                else:
                    _migrated.add(key)
        finally:
            if file_lock is not None:
                file_lock.close()  # releases the flock


def _lock_sqlite_file(url: URL) -> IO[bytes] | None:
    """An exclusive lock beside the SQLite file, held while migrating.

    Python's sqlite3 commits each CREATE TABLE on its own, so two migrators (threads with their
    own loops, or processes) could interleave and leave a half-made schema; this serialises them.
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): rely on the retry loop
        return None
    handle = open(str(Path(url.database).expanduser()) + ".migrate.lock", "ab")  # noqa: SIM115 - held open
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    return handle


async def _migrate_once(url: URL) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            if not is_sqlite(url):
                await conn.execute(text("SELECT pg_advisory_xact_lock(727274061)"))
            await conn.run_sync(_upgrade)
    finally:
        await engine.dispose()
