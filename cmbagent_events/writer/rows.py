"""Rows from captured records: pure functions of the records, tied to the one column spec.

Everything the hot path skipped happens here: datetimes, the naming of tuple inputs, the merge of
an agent call's start and completion when both are in the same batch, then truncation, redaction
and JSON encoding (:mod:`.encode`). No I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import CaptureConfig
from ..records import COMPLETE, FILE_ROW, INPUT_FIELDS, INSERT, MESSAGE_ROW, USAGE_FIELDS, EventRecord
from ..store.columns import Event, FileRow, MessageRow, Run, RunFinish, Update, make_row
from ..store.sink import Batch
from .encode import Sanitizer

OpenRows = dict[str, list[Any]]  # running agent_call id -> its event row, while the batch is built


class RowBuilder:
    """Builds one run's rows into batches; ``timestamp`` is the sink's (its drivers differ)."""

    def __init__(self, config: CaptureConfig, run_id: str, session_id: str,
                 timestamp: Callable[[int], Any]) -> None:
        self._config = config
        self._run_id = run_id
        self._session_id = session_id
        self._timestamp = timestamp
        self._sanitizer = Sanitizer(config.secret_keys)

    def add(self, batch: Batch, open_rows: OpenRows, r: EventRecord) -> None:
        """Add one INSERT or COMPLETE record to ``batch`` (rows stay lists until :meth:`encode`)."""
        if r.kind == INSERT:
            self._add_insert(batch, open_rows, r)
        elif r.kind == COMPLETE:
            self._add_completion(batch, open_rows, r)

    def _add_insert(self, batch: Batch, open_rows: OpenRows, r: EventRecord) -> None:
        ts = self._timestamp(r.t_ns)
        inputs, outputs, meta, extra = r.inputs, r.outputs, r.meta, r.extra
        if type(inputs) is tuple:  # see records.INPUT_FIELDS
            inputs = dict(zip(INPUT_FIELDS.get(r.event_type or "", ()), inputs))
            if "context" in inputs and inputs["context"] is None:
                inputs["context"] = {}
        if type(outputs) is tuple and r.event_type == "llm_call":
            outputs = {"usage": dict(zip(USAGE_FIELDS, outputs))}
        if extra is not None and extra[0] == MESSAGE_ROW:  # see capture_message
            _, sender, recipient, content, tokens = extra
            inputs = {"sender": sender, "recipient": recipient, "content": content}
            meta = {"tokens": tokens, **meta} if meta else {"tokens": tokens}
        # Positional for speed (this runs for every event); the order is Event's, checked by tests.
        row = [r.id, self._run_id, self._session_id, r.node_id, r.step_id, r.parent_id, r.event_type,
               r.event_subtype, r.agent_name, r.execution_order, r.seq, r.depth, inputs, outputs,
               r.error_message, r.status, ts, None, r.duration_ms, meta]
        batch.events.append(row)
        if r.status == "running" and r.id is not None:
            open_rows[r.id] = row
        if extra is not None:
            self._add_companion(batch, r, extra, ts)

    def _add_completion(self, batch: Batch, open_rows: OpenRows, r: EventRecord) -> None:
        row = open_rows.pop(r.id, None) if r.id is not None else None
        completed_at = self._timestamp(r.t_ns)
        if row is not None:  # start and completion in one batch: a single INSERT
            row[Event.event_subtype] = r.event_subtype
            row[Event.status] = r.status
            row[Event.outputs] = {"response": r.outputs}
            if r.error_message is not None:
                row[Event.error_message] = r.error_message
            row[Event.completed_at] = completed_at
            row[Event.duration_ms] = r.duration_ms
            if r.meta:
                started_meta = row[Event.meta]
                row[Event.meta] = {**started_meta, **r.meta} if isinstance(started_meta, dict) else r.meta
            return
        s, cfg = self._sanitizer, self._config
        batch.updates.append(make_row(
            Update, event_subtype=r.event_subtype, status=r.status,
            outputs=s.encode({"response": r.outputs}, cfg.max_output_size),
            error_message=s.text(r.error_message, cfg.max_output_size), completed_at=completed_at,
            duration_ms=r.duration_ms, meta=s.encode(r.meta, cfg.max_input_size) if r.meta else None, id=r.id))

    def _add_companion(self, batch: Batch, r: EventRecord, extra: tuple[Any, ...], ts: Any) -> None:
        s = self._sanitizer
        if extra[0] == MESSAGE_ROW:
            _, sender, recipient, content, tokens = extra
            batch.messages.append(make_row(
                MessageRow, id=r.id, run_id=self._run_id, event_id=r.id, node_id=r.node_id, step_id=r.step_id,
                sender=s.text(sender, 256), recipient=s.text(recipient, 256),
                content=s.text(content, self._config.max_input_size),
                tokens=tokens if isinstance(tokens, int) else None, timestamp=ts))
        elif extra[0] == FILE_ROW:
            _, path, file_type, size = extra
            batch.files.append(make_row(
                FileRow, id=r.id, run_id=self._run_id, event_id=r.id, node_id=r.node_id, step_id=r.step_id,
                file_path=s.text(path, 4096), file_type=s.text(file_type, 64),
                size_bytes=size if isinstance(size, int) else None, created_at=ts))

    def encode(self, batch: Batch) -> None:
        """Sanitise and JSON-encode the batch's event rows in place; they become tuples."""
        s, cfg = self._sanitizer, self._config
        text = s.text
        encode = s.encode
        rows = batch.events
        for i, row in enumerate(rows):
            row[Event.inputs] = encode(row[Event.inputs], cfg.max_input_size)
            row[Event.outputs] = encode(row[Event.outputs], cfg.max_output_size)
            row[Event.meta] = encode(row[Event.meta], cfg.max_input_size)
            row[Event.error_message] = text(row[Event.error_message], cfg.max_output_size)
            row[Event.event_type] = text(row[Event.event_type], 64)
            row[Event.event_subtype] = text(row[Event.event_subtype], 64)
            row[Event.agent_name] = text(row[Event.agent_name], 256)
            rows[i] = tuple(row)

    def finish_row(self, status: str, completed_ns: int, total: int, dropped: int, meta_patch: Any) -> tuple[Any, ...]:
        """The run's closing values (``meta_patch`` already encoded)."""
        return make_row(RunFinish, status=status, completed_at=self._timestamp(completed_ns), total_events=total,
                        dropped_events=dropped, meta=meta_patch, id=self._run_id)


def run_row(config: CaptureConfig, timestamp: Callable[[int], Any], *, run_id: str, session_id: str,
            task_description: str, mode: str, agent: str | None, model: str | None, started_ns: int,
            meta: dict[str, Any]) -> tuple[Any, ...]:
    """The ``workflow_runs`` row a run starts with (inserted with its first batch)."""
    clean = Sanitizer(config.secret_keys)
    return make_row(
        Run, id=run_id, session_id=session_id, task_description=clean.text(task_description, config.max_input_size),
        mode=mode, agent=clean.text(agent, 256), model=clean.text(model, 256), status="running",
        started_at=timestamp(started_ns), completed_at=None, total_events=0, dropped_events=0,
        meta=clean.encode(meta, config.max_input_size))
