"""Rows from captured records: pure functions of the records, tied to the one column spec.

Everything the hot path skipped happens here: datetimes, the naming of tuple inputs, the merge of
an agent call's start and completion when both are in the same batch, then truncation, redaction
and JSON encoding (:mod:`.encode`). No I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..bus import ENCODE_FAILED
from ..config import CaptureConfig
from ..records import COMPLETE, FILE_ROW, INPUT_FIELDS, INSERT, MESSAGE_ROW, USAGE_FIELDS, EventRecord
from ..store.columns import Event, FileRow, MessageRow, Run, RunFinish, Update, make_row
from ..store.sink import Batch
from . import columnar
from .encode import FAILED, NeedsUserCode, Sanitizer
from .fit import EVENT_WIDTHS, FILE_INTS, FILE_WIDTHS, MESSAGE_WIDTHS, RUN_WIDTHS, fit_float, fit_int, fit_text

_W = EVENT_WIDTHS

OpenRows = dict[str, list[Any]]  # running agent_call id -> its event row, while the batch is built


class RowBuilder:
    """Builds one run's rows into batches; ``timestamp`` is the sink's (its drivers differ)."""

    def __init__(self, config: CaptureConfig, run_id: str, session_id: Any,
                 timestamp: Callable[[int], Any], count_dropped: Callable[[int, str], None] | None = None,
                 timestamps: Callable[[list[int]], list[Any]] | None = None) -> None:
        self._config = config
        self._run_id = run_id
        self._session_id = fit_text(session_id, RUN_WIDTHS["session_id"]) or "default"
        self._timestamp = timestamp
        self._timestamps = timestamps or (lambda t_ns: list(map(timestamp, t_ns)))  # the sink's, for a batch
        self._sanitizer = Sanitizer(config.secret_keys)
        # The caller's own code (__repr__, __str__, model_dump) runs only in encode(user_code=True),
        # which the writer calls on a worker thread: never on the loop (the caller's, in an async run).
        self._sanitizer.user_code = False
        self._later: list[EventRecord] = []  # records whose rows need user code: built by encode(user_code=True)
        self._count_dropped = count_dropped or (lambda n, cause: None)
        self.placeholders = 0  # rows stored with a marker instead of a value that could not be encoded

    def build(self, records: list[EventRecord]) -> tuple[Batch, int] | None:
        """The batch of ``records`` (no barrier among them), every row encoded, and how many events it
        holds; None when they need the per-record path (:meth:`add`, then :meth:`encode`)."""
        return columnar.build(self, records)

    @property
    def waiting_events(self) -> int:
        """How many events (not completions) wait in the records put aside for user code."""
        return sum(1 for r in self._later if r.seq >= 0)

    @property
    def waiting(self) -> bool:
        """Records :meth:`add` put aside for ``encode(batch, user_code=True)``: the batch is not empty."""
        return bool(self._later)

    def add(self, batch: Batch, open_rows: OpenRows, r: EventRecord) -> None:
        """Add one INSERT or COMPLETE record to ``batch`` (rows stay lists until :meth:`encode`).
        A record whose names or values only the caller's code can turn into text waits for
        ``encode(batch, user_code=True)``, which adds it to the same batch."""
        try:
            if r.kind == INSERT:
                self._add_insert(batch, open_rows, r)
            elif r.kind == COMPLETE:
                self._add_completion(batch, open_rows, r)
        except NeedsUserCode:
            self._later.append(r)

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
        companion = None
        if extra is not None:
            try:  # before the event row goes in: NeedsUserCode leaves the batch as it was
                companion = self._companion(r, extra, ts)
            except Exception:  # the event row stays; only its messages/files twin is lost
                self.placeholders += 1
        batch.events.append(row)
        if r.status == "running" and r.id is not None:
            open_rows[r.id] = row
        if companion is not None:
            (batch.messages if extra[0] == MESSAGE_ROW else batch.files).append(companion)

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
        try:
            outputs = s.encode({"response": r.outputs}, cfg.max_output_size)
            error = s.text(r.error_message, cfg.max_output_size)
            meta = s.encode(r.meta, cfg.max_input_size) if r.meta else None
        except Exception as exc:  # never lose the completion: store why its values are missing
            self.placeholders += 1
            outputs, error, meta = _unstorable(exc), None, None
        user_code = s.user_code
        batch.updates.append(make_row(
            Update, event_subtype=fit_text(r.event_subtype, _W["event_subtype"], user_code),
            status=fit_text(r.status, _W["status"], user_code), outputs=outputs, error_message=error,
            completed_at=completed_at, duration_ms=fit_float(r.duration_ms), meta=meta,
            id=fit_text(r.id, _W["id"], user_code)))

    def _companion(self, r: EventRecord, extra: tuple[Any, ...], ts: Any) -> Any:
        """The ``messages`` or ``files`` row of an event (None for neither)."""
        s = self._sanitizer
        user_code = s.user_code
        if extra[0] == MESSAGE_ROW:
            _, sender, recipient, content, tokens = extra
            # a list until encode(): its content is cleaned there, with the whole batch's texts
            return list(make_row(
                MessageRow, id=r.id, run_id=self._run_id, event_id=r.id,
                node_id=fit_text(r.node_id, MESSAGE_WIDTHS["node_id"], user_code),
                step_id=fit_text(r.step_id, MESSAGE_WIDTHS["step_id"], user_code),
                sender=fit_text(sender, MESSAGE_WIDTHS["sender"], user_code),
                recipient=fit_text(recipient, MESSAGE_WIDTHS["recipient"], user_code),
                content=content, tokens=fit_int(tokens), timestamp=ts))
        if extra[0] == FILE_ROW:
            _, path, file_type, size = extra
            return make_row(
                FileRow, id=r.id, run_id=self._run_id, event_id=r.id,
                node_id=fit_text(r.node_id, FILE_WIDTHS["node_id"], user_code),
                step_id=fit_text(r.step_id, FILE_WIDTHS["step_id"], user_code),
                file_path=s.text(path, 4096) or "", file_type=fit_text(file_type, FILE_WIDTHS["file_type"], user_code),
                size_bytes=fit_int(size, FILE_INTS["size_bytes"]), created_at=ts)
        return None

    def encode(self, batch: Batch, *, user_code: bool = True, give_up: BaseException | None = None) -> int:
        """Sanitise and JSON-encode the batch's event rows in place; they become tuples.

        Each row under its own guard: a value that cannot be encoded makes its row a placeholder
        saying why (still stored, in its seq); a row that cannot even be that is left out and
        counted as dropped (``encode failure``), with its messages/files twin.

        With ``user_code=False`` a row whose encoding would call the caller's own code (``__repr__``,
        ``model_dump``) is left as it is, for a second call on a worker thread; returns how many rows
        (and records :meth:`add` put aside) wait for it. With ``user_code=True`` those records are
        added to this batch first. With ``give_up`` (the reason: user code that did not return in
        time), user code stays off and such rows become placeholders naming it (or are left out and
        counted, when even their names need user code); waiting message contents become the reason.
        The values of all rows are converted first with one secret scan for the whole batch
        (``Sanitizer.encode_batch`` / ``text_batch``: the same results as value by value)."""
        rows = batch.events
        lost: list[Any] = []
        deferred = 0
        sanitizer = self._sanitizer
        sanitizer.user_code = user_code
        try:
            if user_code and self._later:
                self._add_later(batch)
                rows = batch.events
            ready = self._convert_all([row for row in rows if type(row) is not tuple])
            for i, row in enumerate(rows):
                if type(row) is tuple:  # already encoded (a batch retried or split, or the first pass)
                    continue
                try:
                    rows[i] = self._encode_event(row, ready.get(id(row)))
                except NeedsUserCode:
                    if give_up is None:
                        deferred += 1
                        continue
                    try:
                        self._placeholder_or_lost(rows, i, row, give_up, lost)
                    except NeedsUserCode:  # its names need user code too: left out, counted
                        lost.append(row[Event.id])
                except Exception as exc:
                    try:
                        self._placeholder_or_lost(rows, i, row, exc, lost)
                    except NeedsUserCode:  # its names need user code too: the row waits, intact
                        if give_up is None:
                            deferred += 1
                        else:
                            lost.append(row[Event.id])
            deferred += self._encode_messages(batch, give_up)
        finally:
            sanitizer.user_code = False
        deferred += len(self._later)
        if lost:
            gone = set(lost)
            batch.events = [r for r in rows if r[Event.id] not in gone]
            batch.messages = [m for m in batch.messages if m[MessageRow.event_id] not in gone]
            batch.files = [f for f in batch.files if f[FileRow.event_id] not in gone]
            self._count_dropped(len(lost), ENCODE_FAILED)
        return deferred

    def _add_later(self, batch: Batch) -> None:
        """The records :meth:`add` put aside, added to ``batch`` now that user code may run."""
        later, self._later = self._later, []
        open_rows: OpenRows = {}  # their completions in this batch become updates, applied after the inserts
        for r in later:
            try:
                self.add(batch, open_rows, r)
            except Exception:  # as the writer does for any record it cannot make a row of
                if r.seq >= 0:
                    self._count_dropped(1, ENCODE_FAILED)

    def _placeholder_or_lost(self, rows: list[Any], i: int, row: list[Any], exc: BaseException,
                             lost: list[Any]) -> None:
        """Row ``i`` as a placeholder naming ``exc``; if even that fails, its id goes to ``lost``."""
        try:
            rows[i] = self._placeholder(row, exc)
            self.placeholders += 1
        except Exception:
            lost.append(row[Event.id])

    def _convert_all(self, rows: list[list[Any]]) -> dict[int, tuple[Any, ...]]:
        """id(row) -> its (inputs, outputs, meta, error_message) converted batch-wide (``FAILED``
        where a value raised: the row's own guard then sees the error, or defers the row)."""
        if not rows:
            return {}
        s, cfg = self._sanitizer, self._config
        n = len(rows)
        lim_in, lim_out = cfg.max_input_size, cfg.max_output_size
        try:
            json = s.encode_batch([row[c] for c in (Event.inputs, Event.outputs, Event.meta) for row in rows],
                                  [lim for lim in (lim_in, lim_out, lim_in) for _ in range(n)])
            errors = s.text_batch([row[Event.error_message] for row in rows], [lim_out] * n)
        except Exception:  # a value that broke the batch path: each row converts its own
            return {}
        return {id(row): (json[k], json[n + k], json[2 * n + k], errors[k]) for k, row in enumerate(rows)}

    def _encode_event(self, row: list[Any], ready: tuple[Any, ...] | None = None) -> tuple[Any, ...]:
        s, cfg = self._sanitizer, self._config
        self._fit_names(row, s.user_code)  # first: cut names stay the same when fitted again
        # all computed before any is stored: a row deferred half-way must be encoded again intact
        ready_in, ready_out, ready_meta, ready_error = ready or (FAILED,) * 4
        inputs = s.encode(row[Event.inputs], cfg.max_input_size) if ready_in is FAILED else ready_in
        outputs = s.encode(row[Event.outputs], cfg.max_output_size) if ready_out is FAILED else ready_out
        meta = s.encode(row[Event.meta], cfg.max_input_size) if ready_meta is FAILED else ready_meta
        error = s.text(row[Event.error_message], cfg.max_output_size) if ready_error is FAILED else ready_error
        row[Event.inputs], row[Event.outputs], row[Event.meta], row[Event.error_message] = inputs, outputs, meta, error
        return tuple(row)

    def _encode_messages(self, batch: Batch, give_up: BaseException | None = None) -> int:
        """Message contents cleaned batch-wide; a content that cannot be read becomes a marker. Returns
        how many wait for user code (a content only its own ``__repr__`` describes): left as lists
        (with ``give_up``: the reason instead)."""
        messages = [m for m in batch.messages if type(m) is list]
        if not messages:
            return 0
        s, limit = self._sanitizer, self._config.max_input_size
        try:
            contents = s.text_batch([m[MessageRow.content] for m in messages], [limit] * len(messages))
        except Exception:
            contents = [FAILED] * len(messages)
        waiting: set[int] = set()
        for m, converted in zip(messages, contents):
            if converted is not FAILED:
                m[MessageRow.content] = converted
                continue
            try:  # the batch pass failed on this one: encode it alone, under its own guard
                m[MessageRow.content] = s.text(m[MessageRow.content], limit)
            except NeedsUserCode:
                if give_up is None:
                    waiting.add(id(m))
                else:
                    m[MessageRow.content] = _unstorable(give_up)
            except Exception as exc:
                m[MessageRow.content] = _unstorable(exc)
        batch.messages = [tuple(m) if type(m) is list and id(m) not in waiting else m for m in batch.messages]
        return len(waiting)

    @staticmethod
    def _fit_names(row: list[Any], user_code: bool = True) -> None:
        """The row's names fitted to their columns, all or none (NeedsUserCode leaves the row as it was)."""
        node = fit_text(row[Event.node_id], _W["node_id"], user_code)
        step = fit_text(row[Event.step_id], _W["step_id"], user_code)
        event_type = fit_text(row[Event.event_type], _W["event_type"], user_code) or "unknown"
        subtype = fit_text(row[Event.event_subtype], _W["event_subtype"], user_code)
        agent = fit_text(row[Event.agent_name], _W["agent_name"], user_code)
        status = fit_text(row[Event.status], _W["status"], user_code)
        row[Event.node_id], row[Event.step_id], row[Event.event_type] = node, step, event_type
        row[Event.event_subtype], row[Event.agent_name], row[Event.status] = subtype, agent, status
        row[Event.duration_ms] = fit_float(row[Event.duration_ms])

    def _placeholder(self, row: list[Any], exc: BaseException) -> tuple[Any, ...]:
        """The row with its payload replaced by the reason it could not be stored (NeedsUserCode when
        its names need user code: the row is then left as it was)."""
        reason = _unstorable(exc)
        try:
            self._fit_names(row, self._sanitizer.user_code)
        except NeedsUserCode:
            raise
        except Exception:  # the names themselves cannot be read: keep none of them
            for column in (Event.node_id, Event.step_id, Event.event_subtype, Event.agent_name, Event.status,
                           Event.duration_ms):
                row[column] = None
            row[Event.event_type] = "unknown"
        row[Event.inputs], row[Event.outputs], row[Event.meta] = reason, None, reason
        row[Event.error_message] = None
        return tuple(row)

    def finish_row(self, status: str, completed_ns: int, total: int, dropped: int, meta_patch: Any) -> tuple[Any, ...]:
        """The run's closing values (``meta_patch`` already encoded)."""
        return make_row(RunFinish, status=status, completed_at=self._timestamp(completed_ns), total_events=total,
                        dropped_events=dropped, meta=meta_patch, id=self._run_id)


def run_row(config: CaptureConfig, timestamp: Callable[[int], Any], *, run_id: str, session_id: str,
            task_description: str, mode: str, agent: str | None, model: str | None, started_ns: int,
            meta: dict[str, Any], user_code: bool = True) -> tuple[Any, ...]:
    """The ``workflow_runs`` row a run starts with (inserted with its first batch); every field
    fitted to its column, whatever type the caller passed. With ``user_code`` False, a value only
    its own ``__repr__``/``model_dump`` can describe raises :class:`NeedsUserCode` (build the row on
    a worker thread then)."""
    clean = Sanitizer(config.secret_keys)
    clean.user_code = user_code
    try:
        task = clean.text(task_description, config.max_input_size)
    except Exception as exc:
        task = _unstorable(exc)
    try:
        encoded_meta = clean.encode(meta, config.max_input_size)
    except Exception as exc:
        encoded_meta = _unstorable(exc)
    return make_row(
        Run, id=run_id, session_id=fit_text(session_id, RUN_WIDTHS["session_id"], user_code) or "default",
        task_description=task, mode=fit_text(mode, RUN_WIDTHS["mode"], user_code),
        agent=fit_text(agent, RUN_WIDTHS["agent"], user_code), model=fit_text(model, RUN_WIDTHS["model"], user_code),
        status="running", started_at=timestamp(started_ns), completed_at=None, total_events=0, dropped_events=0,
        meta=encoded_meta)


def _unstorable(exc: BaseException) -> str:
    """A JSON value saying why the original could not be stored."""
    name = type(exc).__name__.replace('"', "")
    return f'{{"<unstorable>": "{name}"}}'
