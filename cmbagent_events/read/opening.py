"""Opening a database for reading only: checked first, never created, never migrated.

A reader pointed at the wrong file must not turn it into ours (the writer's ``migrate`` would create
our tables in any database it is given). So before an engine exists, the database is asked, with the
raw driver, for our Alembic revision: a missing SQLite file, a database without our version table,
and a version table holding another application's revisions are refused with one line saying what
to do. SQLite files are opened ``mode=ro`` (``immutable`` in a read-only place), with no WAL switch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import env_db_url
from ..errors import DatabaseURLError, NotACaptureDatabase
from ..store.database import (
    Database,
    check_placement,
    immutable_uri,
    parse_db_url,
    read_only_place,
    resolve_db,
    sqlite_path,
)
from ..store.placement import Placement
from ..store.schema import migrations_dir, stored_revision

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

def database_for(db_url: str | None) -> Database:
    """``db_url``, else ``$CMBAGENT_EVENTS_DB_URL``, else the default SQLite file, validated."""
    return resolve_db(db_url or env_db_url())


def our_revisions() -> set[str]:
    """The revision ids of the migrations shipped with this package (read from their file names)."""
    return {path.stem for path in (migrations_dir() / "versions").glob("[0-9]*.py")}


async def check_readable(db: Database, placement: Placement) -> str:
    """Our stored revision in ``db``; raises when ``db`` is not a cmbagent-events database.

    Raises:
        DatabaseURLError: a SQLite file that does not exist (it is never created here).
        NotACaptureDatabase: no version table of ours, or one holding another application's revisions.
    """
    check_placement(db, placement)
    if db.is_sqlite and not _is_file(db):
        sqlite_path(db)  # names a directory, or an in-memory URL, as such
        raise DatabaseURLError(f"no database at {db.path!r}: capture a run first (cmbagent-events demo), "
                               "or pass the database URL (--db / CMBAGENT_EVENTS_DB_URL)")
    try:
        revision = await stored_revision(db, placement)
    except Exception as exc:  # (sqlite3's DatabaseError: that module is imported only where it is used)
        if not db.is_sqlite or "file is not a database" not in str(exc):
            raise
        raise NotACaptureDatabase(f"{db.path!r} is not an SQLite database file: check the path "
                                  "(--db / CMBAGENT_EVENTS_DB_URL)") from None
    hint = ("check the URL, or where our tables are: a prefix (--table-prefix / CMBAGENT_EVENTS_TABLE_PREFIX) "
            "or a schema (--db-schema / CMBAGENT_EVENTS_DB_SCHEMA)")
    if revision is None:
        raise NotACaptureDatabase(f"{_shown(db)} holds no cmbagent-events tables ({placement.describe()}: no "
                                  f"{placement.version_table!r}; readers never create them): {hint}")
    if revision not in our_revisions():
        raise NotACaptureDatabase(f"{_shown(db)}: {placement.version_table!r} holds revision {revision!r}, not one "
                                  f"of cmbagent-events' (another application's, or a newer cmbagent-events): {hint}")
    return revision


def _is_file(db: Database) -> bool:
    return Path(db.path or "").expanduser().is_file()


def _shown(db: Database) -> str:
    if db.is_sqlite:
        return f"SQLite file {db.path!r}"
    return "database " + repr(parse_db_url(db).render_as_string(hide_password=True))


def read_only_engine(db: Database, **kwargs: Any) -> AsyncEngine:
    """An engine that cannot write: SQLite opened ``mode=ro`` (``immutable`` where the directory is
    read-only, so that no lock or shared-memory file is needed); PostgreSQL read-only transactions."""
    from sqlalchemy.ext.asyncio import create_async_engine

    url = parse_db_url(db)
    if db.is_sqlite:
        path = Path(db.path or "").expanduser().resolve()
        uri = immutable_uri(db) if read_only_place(db) else f"file:{path}?mode=ro"
        engine = create_async_engine(url.set(database=uri, query={"uri": "true"}), **kwargs)
        from sqlalchemy import event

        @event.listens_for(engine.sync_engine, "connect")
        def _busy(dbapi_conn: Any, _record: Any) -> None:  # wait for a writer's commit, do not fail at once
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()

        return engine
    return create_async_engine(url, execution_options={"postgresql_readonly": True}, **kwargs)
