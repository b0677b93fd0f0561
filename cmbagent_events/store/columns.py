"""The one column spec of the rows the writer builds and the sinks, spill files and live readers read.

Each row kind is an ``IntEnum`` whose members, in order, are the table's columns: ``row[Event.seq]``
reads a row by name, ``EVENT_COLUMNS`` is the column list in the same order. Nothing else in the
package may index a row by a bare number or copy a column list.
"""

from __future__ import annotations

import json
from enum import IntEnum, auto
from typing import Any


class _Columns(IntEnum):
    """Members numbered 0, 1, 2, ... in declaration order (row positions)."""

    @staticmethod
    def _generate_next_value_(name: str, start: int, count: int, last_values: list[Any]) -> int:
        return count


class Event(_Columns):
    """An ``execution_events`` row."""

    id = auto()
    run_id = auto()
    session_id = auto()
    node_id = auto()
    step_id = auto()
    parent_event_id = auto()
    event_type = auto()
    event_subtype = auto()
    agent_name = auto()
    execution_order = auto()
    seq = auto()
    depth = auto()
    inputs = auto()
    outputs = auto()
    error_message = auto()
    status = auto()
    timestamp = auto()
    completed_at = auto()
    duration_ms = auto()
    meta = auto()


class MessageRow(_Columns):
    """A ``messages`` row."""

    id = auto()
    run_id = auto()
    event_id = auto()
    node_id = auto()
    step_id = auto()
    sender = auto()
    recipient = auto()
    content = auto()
    tokens = auto()
    timestamp = auto()


class FileRow(_Columns):
    """A ``files`` row."""

    id = auto()
    run_id = auto()
    event_id = auto()
    node_id = auto()
    step_id = auto()
    file_path = auto()
    file_type = auto()
    size_bytes = auto()
    created_at = auto()


class LlmCallRow(_Columns):
    """An ``llm_calls`` row: one model call's request and response, by reference to ``llm_contents``."""

    event_id = auto()
    run_id = auto()
    model = auto()
    messages = auto()  # JSON list of the request's messages, in order, as llm_contents ordinals
    tools = auto()  # ordinal of the tools offered (a JSON list), or None
    params = auto()  # JSON object: the call's other parameters (temperature, response_format, ...)
    response = auto()  # ordinal of the response as the client returned it (its JSON), or None
    replayable = auto()  # 1 when the call can be served again whole; 0 when not (see note)
    note = auto()  # why not replayable (a message cut at the size bound, no response, ...), or None


class LlmContentRow(_Columns):
    """An ``llm_contents`` row: one distinct message, tool list or response of a run, stored once."""

    run_id = auto()
    ordinal = auto()  # 0, 1, 2... in the order the run first sent or received it: what calls refer to
    hash = auto()  # BLAKE2b of body: how the writer (and replay) knows a content seen before
    kind = auto()  # "message" | "tools" | "response"
    body = auto()  # canonical JSON (redacted)
    size = auto()  # bytes of the JSON before any cut
    cut = auto()  # 1 when body was cut at CMBAGENT_EVENT_MAX_LLM_MESSAGE_SIZE


class Run(_Columns):
    """A ``workflow_runs`` row (inserted with a run's first batch)."""

    id = auto()
    session_id = auto()
    task_description = auto()
    mode = auto()
    agent = auto()
    model = auto()
    status = auto()
    started_at = auto()
    completed_at = auto()
    total_events = auto()
    dropped_events = auto()
    meta = auto()


class Update(_Columns):
    """The completion of an agent call: the changed fields, then the event id (an UPDATE's parameters)."""

    event_subtype = auto()
    status = auto()
    outputs = auto()
    error_message = auto()
    completed_at = auto()
    duration_ms = auto()
    meta = auto()
    id = auto()


class RunFinish(_Columns):
    """A run's closing values (an UPDATE's parameters); ``meta`` is a patch merged into the run's meta."""

    status = auto()
    completed_at = auto()
    total_events = auto()
    dropped_events = auto()
    meta = auto()
    id = auto()


def names(columns: type[_Columns]) -> tuple[str, ...]:
    """The column names of a row kind, in row order."""
    return tuple(member.name for member in columns)


_names_of: dict[type[_Columns], tuple[str, ...]] = {}


def make_row(columns: type[_Columns], **values: Any) -> tuple[Any, ...]:
    """A row built by name; every column must be given, and no other."""
    order = _names_of.get(columns)
    if order is None:
        order = _names_of[columns] = names(columns)
    if len(values) != len(order):
        raise TypeError(f"{columns.__name__} row: expected {order}, got {tuple(values)}")
    return tuple([values[name] for name in order])


EVENT_COLUMNS = names(Event)
MESSAGE_COLUMNS = names(MessageRow)
FILE_COLUMNS = names(FileRow)
RUN_COLUMNS = names(Run)
LLM_CALL_COLUMNS = names(LlmCallRow)
LLM_CONTENT_COLUMNS = names(LlmContentRow)
UPDATE_FIELDS = names(Update)[:-1]  # the fields an UPDATE sets; the id follows them
RUN_FINISH_FIELDS = names(RunFinish)[:-1]

# Widths (characters) of the VARCHAR columns, for the writer to fit values into (writer/fit.py);
# the models declare the same (a test compares them). Unlisted text columns are unbounded TEXT.
_IDS = {"id": 64, "run_id": 64, "event_id": 64, "node_id": 256, "step_id": 256}
EVENT_WIDTHS = {"id": 64, "run_id": 64, "session_id": 128, "node_id": 256, "step_id": 256, "parent_event_id": 64,
                "event_type": 64, "event_subtype": 64, "agent_name": 256, "status": 32}
RUN_WIDTHS = {"id": 64, "session_id": 128, "mode": 64, "agent": 256, "model": 256, "status": 32}
MESSAGE_WIDTHS = {**_IDS, "sender": 256, "recipient": 256}
FILE_WIDTHS = {**_IDS, "file_type": 64}
LLM_CALL_WIDTHS = {"event_id": 64, "run_id": 64, "model": 256}
LLM_CONTENT_WIDTHS = {"run_id": 64, "hash": 64, "kind": 16}
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
FILE_INTS = {"size_bytes": INT64}  # every other integer column is a 32-bit INTEGER


def decode_json(value: Any) -> Any:
    """A JSON column's value as Python: drivers hand over text, bytes or parsed values; text that is
    not JSON stays text."""
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
