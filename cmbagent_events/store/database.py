"""Database URLs, checked without SQLAlchemy (the capture path), and engines for the readers.

:func:`resolve_db` validates a URL and normalises it to the async drivers (aiosqlite / asyncpg);
SQLAlchemy is imported only by :func:`parse_db_url` and :func:`make_engine`. A SQLite file in a
read-only place is opened immutable (:func:`immutable_uri`): reading works, writing fails, and no
lock or shared-memory file is created beside it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ..errors import DatabaseURLError
from .placement import Placement

if TYPE_CHECKING:
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncEngine

SQLITE_DRIVERS = {"sqlite", "sqlite+aiosqlite"}
POSTGRES_DRIVERS = {"postgresql", "postgresql+asyncpg", "postgres"}

# SQLAlchemy's own URL grammar (sqlalchemy.engine.url._parse_url), so both parses always agree.
_URL = re.compile(
    r"""(?P<name>[\w\+]+)://
        (?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?
        (?:(?:\[(?P<ipv6host>[^/\?]+)\]|(?P<ipv4host>[^/:\?]+))?(?::(?P<port>[^/\?]*))?)?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?""",
    re.X,
)


@dataclass(frozen=True, slots=True)
class Database:
    """A validated database URL, as the capture path needs it (no SQLAlchemy involved).

    ``url`` is normalised to the async driver (``sqlite+aiosqlite`` / ``postgresql+asyncpg``);
    ``path`` is the SQLite file, ``dsn`` the libpq-style DSN asyncpg connects with.
    """

    url: str
    backend: str  # "sqlite" | "postgresql"
    path: str | None = None
    dsn: str | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"


def resolve_db(db_url: str | Database | URL) -> Database:
    """Validate ``db_url`` and normalise it to an async driver (aiosqlite / asyncpg).

    Raises:
        DatabaseURLError: for malformed URLs or unsupported backends.
    """
    if isinstance(db_url, Database):
        return db_url
    if not isinstance(db_url, str):  # a SQLAlchemy URL
        db_url = db_url.render_as_string(hide_password=False)
    match = _URL.match(db_url) if isinstance(db_url, str) else None
    if match is None:
        raise DatabaseURLError(
            f"invalid database URL {db_url!r}: Could not parse SQLAlchemy URL from given URL string. "
            "Use sqlite+aiosqlite:///path.db or postgresql+asyncpg://user:pass@host:port/dbname"
        )
    name, rest = match["name"], db_url[len(match["name"]):]
    if name in SQLITE_DRIVERS:
        return Database("sqlite+aiosqlite" + rest, "sqlite", path=unquote(match["database"] or ""))
    if name in POSTGRES_DRIVERS:
        if not match["database"]:
            raise DatabaseURLError(f"PostgreSQL URL {_hide_password(db_url, match)!r} names no database")
        if match["port"] and not match["port"].isdigit():
            shown = _hide_password(db_url, match)
            raise DatabaseURLError(f"invalid database URL {shown!r}: bad port {match['port']!r}")
        return Database("postgresql+asyncpg" + rest, "postgresql", dsn="postgresql" + rest)
    raise DatabaseURLError(
        f"unsupported database backend {name!r} in {_hide_password(db_url, match)!r}: "
        "use sqlite+aiosqlite:// or postgresql+asyncpg://"
    )


def _hide_password(db_url: str, match: re.Match[str]) -> str:
    if match["password"] is None:
        return db_url
    return db_url[:match.start("password")] + "***" + db_url[match.end("password"):]


def parse_db_url(db_url: str | Database | URL) -> URL:
    """:func:`resolve_db`, as a SQLAlchemy URL (for engines and readers; imports SQLAlchemy)."""
    from sqlalchemy.engine import make_url

    return make_url(resolve_db(db_url).url)


def is_sqlite(url: str | Database | URL) -> bool:
    return resolve_db(url).is_sqlite


def sqlite_path(url: str | Database | URL) -> str:
    """The file path of a SQLite URL (':memory:' is refused: the writer needs its own connection)."""
    db = resolve_db(url)
    if db.path is None:
        raise DatabaseURLError(f"{db.url!r} is not a SQLite URL")
    if db.path in ("", ":memory:") or db.path.startswith("file::memory:"):
        raise DatabaseURLError("in-memory SQLite cannot be shared by the writer; give a file path")
    if Path(db.path).expanduser().is_dir():
        raise DatabaseURLError(f"{db.path!r} is a directory, not a SQLite file: give a file path, "
                               f"e.g. {db.path}/events.db")
    return db.path


def read_only_place(db: Database) -> bool:
    """True for a SQLite file in a directory this process cannot write (e.g. a read-only mount)."""
    if not db.is_sqlite:
        return False
    return not os.access(Path(sqlite_path(db)).expanduser().resolve().parent, os.W_OK)


def check_writable(url: str | Database | URL) -> None:
    """Fail at a run's entry when its SQLite file or directory is read-only (capture could only spill).

    Raises:
        DatabaseURLError: naming the read-only path.
    """
    db = resolve_db(url)
    if not db.is_sqlite:
        return
    path = Path(sqlite_path(db)).expanduser()
    target = path if path.exists() else path.resolve().parent
    if target.exists() and not os.access(target, os.W_OK):  # a missing directory: migrate() names it
        raise DatabaseURLError(f"SQLite {'file' if target == path else 'directory'} {str(target)!r} is read-only: "
                               "capture needs to write there (give another --db / CMBAGENT_EVENTS_DB_URL)")


def immutable_uri(db: Database) -> str:
    """SQLite cannot open a WAL database it may not create the shared-memory file for, unless the file
    is opened immutable: reading then works, writing fails (what a read-only place allows anyway)."""
    return f"file:{Path(sqlite_path(db)).expanduser().resolve()}?mode=ro&immutable=1"


def asyncpg_dsn(url: str | Database | URL) -> str:
    """A libpq-style DSN for asyncpg."""
    db = resolve_db(url)
    if db.dsn is None:
        raise DatabaseURLError(f"{db.url!r} is not a PostgreSQL URL")
    return db.dsn


def check_placement(db: Database, placement: Placement) -> None:
    """A schema is a PostgreSQL feature: refuse it on SQLite rather than ignore it."""
    if placement.schema and db.is_sqlite:
        raise DatabaseURLError(f"CMBAGENT_EVENTS_DB_SCHEMA={placement.schema!r} needs PostgreSQL; on SQLite "
                               "use CMBAGENT_EVENTS_TABLE_PREFIX to keep our tables apart")


def make_engine(db_url: str | Database | URL, placement: Placement | None = None, **kwargs: Any) -> AsyncEngine:
    """An AsyncEngine for reading (repositories, CLI, tests); SQLite connections use WAL."""
    from sqlalchemy.ext.asyncio import create_async_engine

    db = resolve_db(db_url)
    if placement is not None:
        check_placement(db, placement)
    if read_only_place(db):
        url = parse_db_url(db)
        return create_async_engine(url.set(database=immutable_uri(db), query={"uri": "true"}), **kwargs)
    engine = create_async_engine(parse_db_url(db), **kwargs)
    if db.is_sqlite:
        from sqlalchemy import event

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()

    return engine
