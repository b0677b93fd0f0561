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


SPAN_MESSAGES = 100  # the last messages of a model call's request put on its span, one by one
SPAN_MESSAGE_CHARS = 20_000  # characters of one message's content on a span (the store keeps it whole)


def llm_message_attributes(exchange: Any) -> dict[str, Any]:
    """A model call's conversation on its span, both ways peers read it: GenAI's
    ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON) and OpenInference's
    ``llm.input_messages.N.message.role|content`` (and ``llm.output_messages``). ``exchange``:
    ``{"messages": [...], "response": {...}}`` as stored (OpenAI chat format), or None."""
    if not isinstance(exchange, dict):
        return {}
    attrs: dict[str, Any] = {}
    messages = exchange.get("messages")
    if isinstance(messages, list):
        shown = [_short(m) for m in messages[-SPAN_MESSAGES:]]
        attrs["gen_ai.input.messages"] = text(shown)
        for i, message in enumerate(shown):
            _oi_message(attrs, f"llm.input_messages.{i}.message", message)
    response = exchange.get("response")
    choices = response.get("choices") if isinstance(response, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = _short(choices[0].get("message"))
        attrs["gen_ai.output.messages"] = text([{**message, "finish_reason": choices[0].get("finish_reason")}])
        _oi_message(attrs, "llm.output_messages.0.message", message)
        put(attrs, "gen_ai.response.finish_reasons", choices[0].get("finish_reason"))
    return attrs


def _short(message: Any) -> dict[str, Any]:
    if not isinstance(message, dict):
        return {"role": "unknown", "content": text(message)[:SPAN_MESSAGE_CHARS]}
    content = message.get("content")
    if isinstance(content, str) and len(content) > SPAN_MESSAGE_CHARS:
        return {**message, "content": content[:SPAN_MESSAGE_CHARS] + f"...[{len(content)} chars]"}
    return message


def _oi_message(attrs: dict[str, Any], prefix: str, message: dict[str, Any]) -> None:
    put(attrs, f"{prefix}.role", message.get("role"))
    put(attrs, f"{prefix}.content", message.get("content"))
    put(attrs, f"{prefix}.name", message.get("name"))
    calls = message.get("tool_calls")
    for j, call in enumerate(calls if isinstance(calls, list) else []):
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            put(attrs, f"{prefix}.tool_calls.{j}.tool_call.function.name", function.get("name"))
            put(attrs, f"{prefix}.tool_calls.{j}.tool_call.function.arguments", function.get("arguments"))
