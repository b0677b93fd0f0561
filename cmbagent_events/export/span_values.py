"""Span ids and attribute values: derived ids (never random), stored values as OTLP attributes.

Ids: the trace id is the run id (a UUID) and each span id a hash of its event id, so exporting a
run twice sends the same spans and a span's parent is known from ``parent_event_id`` alone.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- ids ----------------------------------------------------------------------------------------------
def trace_id_for(run_id: str) -> int:
    """The trace id of a run: the run id itself when it is a UUID (so it can be searched for),
    else 128 bits of its SHA-256."""
    try:
        value = uuid.UUID(run_id).int
    except ValueError:
        value = int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:16], "big")
    return value or 1


def span_id_for(key: str) -> int:
    """A span id from an event id (or ``run:<run id>`` for the root): 64 bits of its SHA-256."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") or 1


def root_key(run_id: str) -> str:
    return f"run:{run_id}"


# -- values ----------------------------------------------------------------------------------------------
def to_ns(value: Any) -> int | None:
    """A stored timestamp (datetime, naive meaning UTC, or ISO 8601 text) in ns since the epoch."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def text(value: Any) -> str:
    """A stored value as an attribute string: text as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _mime(value: Any) -> str:
    return "text/plain" if isinstance(value, str) else "application/json"


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def number(value: Any) -> int | float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def put(attrs: dict[str, Any], key: str, value: Any) -> None:
    """Set an attribute when there is a value (OTLP has no null)."""
    if value is None:
        return
    if isinstance(value, (str, bool, int, float)):
        attrs[key] = value
    else:
        attrs[key] = text(value)


def put_io(attrs: dict[str, Any], prefix: str, value: Any) -> None:
    """OpenInference ``input.*`` / ``output.*``: the value and its MIME type."""
    if value is None:
        return
    attrs[f"{prefix}.value"] = text(value)
    attrs[f"{prefix}.mime_type"] = _mime(value)


def exception_attributes(message: str, error_type: str | None = None) -> dict[str, Any]:
    """``exception.*`` attributes; the type from ``error_type`` or a ``Type: message`` prefix."""
    kind = error_type
    if kind is None and ": " in message:
        head = message.split(": ", 1)[0]
        if head.replace(".", "").replace("_", "").isalnum():
            kind = head
    attrs = {"exception.message": message}
    if kind:
        attrs["exception.type"] = kind
    return attrs
