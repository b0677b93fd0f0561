"""The one small object built per event on the hot path.

A record is a positional ``msgspec.Struct`` (``gc=False``, ~75 ns to build, not tracked by the
garbage collector): it holds plain references and ints only. Everything costly (timestamps as
datetimes, truncation, redaction, JSON) is done later by the writer, off the caller's thread.
"""

from __future__ import annotations

from typing import Any

import msgspec

# Record kinds
INSERT = 0  # a new event row (and its messages/files row, if ``extra`` says so)
COMPLETE = 1  # completion of an open agent_call: applied as an UPDATE, or merged into its INSERT
BARRIER = 2  # flush() marker: everything queued before it is committed when it is reached

# Capture calls pass ``inputs`` (and llm_call ``outputs``) as tuples, which the writer names with
# these fields: a tuple is cheaper to build on the hot path than a dict. Dicts pass through as-is.
INPUT_FIELDS: dict[str, tuple[str, ...]] = {
    "agent_call": ("message", "context"),
    "tool_call": ("tool_name", "arguments"),
    "code_exec": ("code",),
    "file_gen": ("file_path", "file_type"),
    "handoff": ("from_agent", "to_agent", "context"),
    "llm_call": ("model",),
}
# llm_call outputs: a tuple of USAGE_FIELDS then the cost's source, named by usage_outputs() in the writer
USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "cost", "cached_tokens", "reasoning_tokens")
COST_SOURCES = ("reported", "ag2_price_table", "unknown")  # where an llm_call's cost comes from

# ``extra`` tags for companion rows
MESSAGE_ROW = "message"
FILE_ROW = "file"
LLM_ROW = "llm"  # (LLM_ROW, capture_values.LlmExchange): the call's llm_calls row and its new llm_contents rows


def usage_outputs(values: tuple[Any, ...]) -> dict[str, Any]:
    """An llm_call's outputs from its captured tuple: ``{"usage": {...}, "cost_source": ...}``; cached and
    reasoning tokens only where the API reported them."""
    usage = dict(zip(USAGE_FIELDS[:4], values))
    for name, value in zip(USAGE_FIELDS[4:], values[4:6]):
        if value is not None:
            usage[name] = value
    return {"usage": usage, "cost_source": values[6] if len(values) > 6 else "unknown"}


class EventRecord(msgspec.Struct, gc=False, array_like=True):
    """An event as captured: positional fields, no defaults, no validation (see module doc)."""

    kind: int
    id: str | None
    seq: int
    t_ns: int  # time.time_ns() at capture
    event_type: str | None
    event_subtype: str | None
    agent_name: str | None
    parent_id: str | None
    depth: int
    node_id: str | None
    step_id: str | None
    execution_order: int
    inputs: Any
    outputs: Any
    error_message: Any  # str, or a capture_values.ErrorText the writer makes text (its __str__ off the loop)
    status: str | None
    duration_ms: float | None
    meta: Any
    extra: Any  # (MESSAGE_ROW, sender, recipient, content, tokens) | (FILE_ROW, path, type, size) | barrier future


def barrier(future: Any) -> EventRecord:
    """A flush marker carrying the future the writer resolves once it has committed up to here."""
    return EventRecord(BARRIER, None, -1, 0, None, None, None, None, 0, None, None, 0,
                       None, None, None, None, None, None, future)
