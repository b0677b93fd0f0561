"""The JSON shape of runs and events as live readers see them (subscribers, WebSocket, viewer).

An event is a dict of the ``execution_events`` columns (the same keys as ``render.event_json``),
JSON values decoded, timestamps as ISO 8601 in UTC. It is built either from a model read back
from the database, or from a row the writer has just committed (in-process subscribers), and both
give the same dict.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..store.columns import EVENT_COLUMNS, UPDATE_FIELDS, Update, decode_json
from ..store.models import EventColumns, RunColumns

_JSON_COLUMNS = ("inputs", "outputs", "meta")
_TIME_COLUMNS = ("timestamp", "completed_at")
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


def iso(value: Any) -> str | None:
    """A stored timestamp (aware or naive-UTC datetime, or SQLite's text layout) as ISO 8601 UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.strptime(value, _SQLITE_TIME)
        except ValueError:
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def seq_of_event_id(event_id: str) -> int | None:
    """The seq encoded in an event id (``<run>-<seq>``, see ``ids.py``), or None."""
    try:
        return int(event_id.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def event_dict(event: EventColumns) -> dict[str, Any]:
    """An event read from the database."""
    out = {c: getattr(event, c) for c in EVENT_COLUMNS}
    for c in _TIME_COLUMNS:
        out[c] = iso(out[c])
    return out


def event_from_row(row: tuple) -> dict[str, Any]:
    """An event from a committed writer row (``EVENT_COLUMNS`` order, JSON columns encoded)."""
    out = dict(zip(EVENT_COLUMNS, row))
    for c in _JSON_COLUMNS:
        out[c] = decode_json(out[c])
    for c in _TIME_COLUMNS:
        out[c] = iso(out[c])
    return out


def update_from_row(row: tuple) -> dict[str, Any]:
    """The completion of an agent call from a committed writer update (``UPDATE_FIELDS`` + id).

    Only the changed fields and ``id``; ``meta`` is a patch to merge into the event's meta.
    """
    out = dict(zip(UPDATE_FIELDS, row))
    out["id"] = row[Update.id]
    out["outputs"] = decode_json(out["outputs"])
    out["meta"] = decode_json(out["meta"]) or {}
    out["completed_at"] = iso(out["completed_at"])
    if out["error_message"] is None:
        del out["error_message"]
    return out


def run_dict(row: RunColumns | Mapping[str, Any]) -> dict[str, Any]:
    """A run for the wire: the read API's run dict (its columns, duration, tokens, cost; a model row is
    made one) with its times in ISO 8601."""
    if isinstance(row, Mapping):
        out = dict(row)
    else:
        from ..read.store import run_dict as columns_and_totals  # here: no SQLAlchemy on the capture path

        out = columns_and_totals(row)
    out["started_at"], out["completed_at"] = iso(out["started_at"]), iso(out["completed_at"])
    if not isinstance(out.get("meta"), dict):
        out["meta"] = {}
    return out


def dumps(message: dict[str, Any]) -> str:
    """Encode a message for the wire (anything unexpected becomes its str)."""
    return json.dumps(message, default=str, ensure_ascii=False, separators=(",", ":"))
