"""The performance paths give the same results as the plain ones: connections kept across runs
(one SQLite writer thread per file, PostgreSQL connections per loop), and the batch-wide secret
scan of the writer's encoding."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import threading
from pathlib import Path

import pytest

from cmbagent_events import CaptureConfig, capture_run
from cmbagent_events.errors import DatabaseFileReplaced
from cmbagent_events.store import pg_connections
from cmbagent_events.store.sqlite_thread import sqlite_thread
from cmbagent_events.writer.encode import Failed, Sanitizer
from cmbagent_events.writer.fit import NeedsUserCode


def _count(path: Path, sql: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchone()[0]


async def test_sqlite_runs_share_one_writer_thread_and_connection(tmp_path: Path, config: CaptureConfig) -> None:
    path = tmp_path / "events.db"
    url = f"sqlite+aiosqlite:///{path}"
    threads = []
    for i in range(3):
        async with capture_run(url, config=config, hooks=False) as run:
            for j in range(5):
                run.capture_message("a", "b", f"run {i} message {j}")
        threads.append(threading.active_count())
    assert threads[0] == threads[1] == threads[2]  # later runs started no thread of their own
    writer = sqlite_thread(str(path))
    connection_ids = await asyncio.gather(*(writer.call(lambda db: id(db)) for _ in range(3)))
    assert len(set(connection_ids)) == 1
    assert writer._thread.daemon  # never holds up interpreter exit
    assert _count(path, "SELECT count(*) FROM messages") == 15
    assert _count(path, "SELECT count(*) FROM workflow_runs WHERE status = 'completed'") == 3


async def test_sqlite_thread_reopens_a_replaced_file(tmp_path: Path, config: CaptureConfig) -> None:
    path = tmp_path / "events.db"
    url = f"sqlite+aiosqlite:///{path}"
    async with capture_run(url, config=config, hooks=False) as run:
        run.capture_message("a", "b", "before")
    writer = sqlite_thread(str(path))
    before = await writer.call(lambda db: id(db))
    os.replace(path, tmp_path / "moved.db")  # the kept connection now points at a file nobody reads
    os.replace(tmp_path / "moved.db", path)  # same file back: same inode, connection still good
    assert await writer.call(lambda db: id(db)) == before
    copy = tmp_path / "copy.db"
    with sqlite3.connect(copy) as db:
        db.execute("CREATE TABLE only_in_the_copy (x)")
    os.replace(copy, path)  # a different file under the same name: said once, then opened
    with pytest.raises(DatabaseFileReplaced):
        await writer.call(lambda db: None)
    assert await writer.call(lambda db: db.execute("SELECT count(*) FROM only_in_the_copy").fetchone()[0]) == 0


async def test_sqlite_thread_returns_errors_and_keeps_serving(tmp_path: Path) -> None:
    writer = sqlite_thread(str(tmp_path / "plain.db"))
    await writer.call(lambda db: db.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)"))
    await writer.call(lambda db: db.execute("INSERT INTO t VALUES (1)"))
    with pytest.raises(sqlite3.IntegrityError):
        await writer.call(lambda db: db.execute("INSERT INTO t VALUES (1)"))
    with pytest.raises(ZeroDivisionError):
        await writer.call(lambda db: 1 / 0)
    assert await writer.call(lambda db: db.execute("SELECT count(*) FROM t").fetchone()[0]) == 1


async def test_postgres_connection_kept_for_the_next_run_on_the_loop(pg_url: str, config: CaptureConfig) -> None:
    from cmbagent_events.run.loop_thread import writer_loop
    from cmbagent_events.store.database import asyncpg_dsn, parse_db_url

    dsn = asyncpg_dsn(parse_db_url(pg_url))
    kept = []
    for _ in range(3):
        async with capture_run(pg_url, config=config, hooks=False) as run:
            run.capture_message("a", "b", "hello")
        pool = pg_connections._pools[writer_loop().loop]  # the runs' writers all live on the writer loop
        kept.append({conn.get_server_pid() for conn in pool.idle[dsn]})
    assert kept[0] and kept[0] == kept[1] == kept[2]  # the same server backends served all three runs


async def test_postgres_connection_that_failed_is_not_kept(pg_url: str) -> None:
    from cmbagent_events.store.database import asyncpg_dsn, parse_db_url

    dsn = asyncpg_dsn(parse_db_url(pg_url))
    conn = await pg_connections.acquire(dsn)
    await pg_connections.release(dsn, conn, healthy=False)
    assert conn.is_closed()
    conn = await pg_connections.acquire(dsn)
    transaction = conn.transaction()
    await transaction.start()
    await pg_connections.release(dsn, conn, healthy=True)  # inside a transaction: not reusable
    assert conn.is_closed()


def test_postgres_connections_closed_when_the_loop_shuts_down(pg_url: str) -> None:
    from cmbagent_events.store.database import asyncpg_dsn, parse_db_url

    dsn = asyncpg_dsn(parse_db_url(pg_url))
    kept = []

    async def one_run() -> None:
        conn = await pg_connections.acquire(dsn)
        kept.append(conn)
        await pg_connections.release(dsn, conn, healthy=True)
        assert not conn.is_closed()

    asyncio.run(one_run())  # asyncio.run finalises async generators: the pool's closer runs
    assert kept[0].is_closed()


# -- the batch-wide secret scan --------------------------------------------------------------------
_WORDS = ["hello", "tokens", "token", "token: abcdefgh123", "prompt_tokens", "api_key", "sk-abcdefghijklmnopqrstu",
          "task-12", "Bearer abcdefghijk", "http://u:pw@host", "passw", "\x00", "İstanbul", "ÉCOLE", "key",
          "Authorization", '{"access_token": "abcdefghij"}', "tokenizer", "access_token", "x" * 50, "\n",
          "AKIAABCDEFGHIJKLMNOP", "password=hunter22", "-----BEGIN RSA PRIVATE KEY-----abc", "cookie", "basic",
          "Basic dXNlcjpwYXNzd29yZA==", "my_field"]


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(0, 4)))


def _value(rng: random.Random, depth: int = 0) -> object:
    r = rng.random()
    if depth > 3 or r < 0.4:
        return rng.choice([_text(rng), 1, 2.5, None, True, _text(rng), b"bytes", {1, 2}])
    if r < 0.7:
        return {rng.choice([*_WORDS, "a", "b", "tokens"]): _value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]


def test_column_encoding_equals_value_by_value() -> None:
    """One secret scan over a whole column gives each value what it gets alone."""
    sanitizer = Sanitizer(("api_key", "my_field"))
    rng = random.Random(13)
    for _ in range(2000):
        values = [_value(rng) for _ in range(rng.randint(1, 12))]
        limit = rng.choice([10, 40, 1000])
        alone = [sanitizer.encode_column([v], limit, user_code=True)[0] for v in values]
        assert sanitizer.encode_column(values, limit, user_code=True) == alone
        texts = [_text(rng) if rng.random() < 0.8 else _value(rng) for _ in values]
        alone = [sanitizer.text_column([v], limit, user_code=True)[0] for v in texts]
        assert sanitizer.text_column(texts, limit, user_code=True) == alone


def test_one_value_given_its_json_is_encoded_as_the_column_encodes_it() -> None:
    """``encode_value`` (a model call's content, its msgspec JSON already made) decides alone what
    the column's scan decides: replay hashes live requests through ``encode_column``."""
    import msgspec

    sanitizer = Sanitizer(("api_key", "my_field"))
    rng = random.Random(17)
    for _ in range(3000):
        value = _value(rng)
        limit = rng.choice([10, 40, 1000])
        try:
            raw = msgspec.json.encode(value)
        except (TypeError, msgspec.EncodeError):
            raw = None  # (what the writer passes for a value msgspec refuses)
        by_column = sanitizer.encode_column([value], limit)[0]
        alone = sanitizer.encode_value(value, limit, raw)
        assert (alone.error.__class__ if type(alone) is Failed else alone) == (
            by_column.error.__class__ if type(by_column) is Failed else by_column)


def test_column_encoding_redacts_and_marks_what_needs_user_code() -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    sanitizer = Sanitizer(())
    out = sanitizer.encode_column([{"api_key": "sk-live"}, {"tokens": 3}, None, {}], 100)
    assert out == ['{"api_key":"***"}', '{"tokens":3}', None, "{}"]
    texts = sanitizer.text_column(["use sk-abcdefghijklmnopqrstu now", "plain", None], 100)
    assert texts == ["use sk-*** now", "plain", None]
    waiting = sanitizer.encode_column([{"x": Hostile()}, "plain"], 100)  # user code off: not called
    assert type(waiting[0]) is Failed and type(waiting[0].error) is NeedsUserCode and waiting[1] == '"plain"'
    assert "no" not in str(sanitizer.text_column([Hostile()], 100, user_code=True))
    assert type(sanitizer.encode_column([Hostile()], 100, user_code=True)[0]) is str  # a marker, never lost


# -- multi-row INSERTs on SQLite --------------------------------------------------------------------
@pytest.mark.parametrize("count", [1, 3, 85, 256, 341, 500])
@pytest.mark.parametrize("max_variables", [None, 100])
def test_sqlite_multi_row_insert_stores_every_row_in_order(tmp_path: Path, count: int,
                                                           max_variables: int | None) -> None:
    from cmbagent_events.store.sink import SqliteSink

    db = sqlite3.connect(tmp_path / "rows.db", isolation_level=None)
    db.execute("CREATE TABLE t (a INTEGER, b TEXT, c REAL)")
    if max_variables is not None:  # an SQLite built with a low limit: smaller chunks, same rows
        db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, max_variables)
    rows = [(i, f"row {i}", None if i % 3 else i / 2) for i in range(count)]
    SqliteSink._insert_rows(db, "INSERT INTO t (a, b, c) VALUES (?, ?, ?)", rows)
    assert db.execute("SELECT a, b, c FROM t ORDER BY rowid").fetchall() == rows


# -- None bound without the adapter protocol's failing lookups ----------------------------------------
_NONE_ADAPTER = (type(None), sqlite3.PrepareProtocol)


async def test_sqlite_run_binds_none_through_a_registered_adapter(tmp_path: Path, config: CaptureConfig,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from cmbagent_events.store import sqlite_thread as threads

    monkeypatch.delitem(sqlite3.adapters, _NONE_ADAPTER, raising=False)
    monkeypatch.setattr(threads, "_threads", {})  # a new file's thread registers it at its start
    path = tmp_path / "nulls.db"
    async with capture_run(f"sqlite+aiosqlite:///{path}", config=config, hooks=False) as run:
        run.capture_message("a", "b", "hello")
    adapter = sqlite3.adapters[_NONE_ADAPTER]
    assert adapter(None) is None
    # NULLs are still SQL NULL: node_id, step_id, error_message, completed_at of the message event
    assert _count(path, "SELECT count(*) FROM execution_events WHERE typeof(node_id) = 'null' AND "
                        "typeof(step_id) = 'null' AND typeof(error_message) = 'null' AND "
                        "typeof(completed_at) = 'null'") == 1


def test_a_none_adapter_of_the_users_own_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from cmbagent_events.store.sqlite_thread import bind_none_directly

    def users_own(value: None) -> str:
        return "none"

    monkeypatch.setitem(sqlite3.adapters, _NONE_ADAPTER, users_own)
    bind_none_directly()
    assert sqlite3.adapters[_NONE_ADAPTER] is users_own
