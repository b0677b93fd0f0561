"""Each sink maps its driver's errors to the typed hierarchy (errors.py), on real databases."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cmbagent_events.errors import BatchRejected, CaptureError, DatabaseUnavailable, DatabaseURLError
from cmbagent_events.store.columns import Event, make_row
from cmbagent_events.store.database import parse_db_url
from cmbagent_events.store.schema import migrate
from cmbagent_events.store.sink import Batch, open_sink


def _event_row(sink, event_id: str, run_id: str) -> tuple:
    return make_row(Event, id=event_id, run_id=run_id, session_id="s", node_id=None, step_id=None,
                    parent_event_id=None, event_type="error", event_subtype="x", agent_name="a", execution_order=0,
                    seq=0, depth=0, inputs=None, outputs=None, error_message=None, status="completed",
                    timestamp=sink.timestamp(1_700_000_000_000_000_000), completed_at=None, duration_ms=None,
                    meta=None)


async def test_sqlite_file_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DatabaseURLError):  # a directory is refused by name, before any connection
        open_sink(parse_db_url(f"sqlite+aiosqlite:///{tmp_path}"))
    sink = open_sink(parse_db_url(f"sqlite+aiosqlite:///{tmp_path}/gone/events.db"))  # its directory is missing
    with pytest.raises(DatabaseUnavailable) as info:
        await sink.open()
    assert isinstance(info.value, CaptureError) and info.value.__cause__ is not None
    await sink.close()


async def test_postgres_nobody_listening_is_unavailable() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = open_sink(parse_db_url(f"postgresql+asyncpg://u:p@127.0.0.1:{port}/db"))
    with pytest.raises(DatabaseUnavailable) as info:
        await sink.open()
    assert isinstance(info.value.__cause__, OSError)


async def test_a_row_the_database_refuses_is_a_rejected_batch(db_url: str) -> None:
    url = parse_db_url(db_url)
    await migrate(url)
    sink = open_sink(url)
    await sink.open()
    try:
        row = _event_row(sink, "dup-000000001", "no-such-run")
        with pytest.raises(BatchRejected) as info:  # the same primary key twice in one batch
            await sink.write(Batch(events=[row, row]))
        assert info.value.__cause__ is not None and not isinstance(info.value, DatabaseUnavailable)
    finally:
        await sink.close()
