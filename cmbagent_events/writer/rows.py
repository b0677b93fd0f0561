"""Rows from captured records, column by column: pure functions of the records, tied to the one
column spec. No I/O, and no user code on the writer's loop.

Everything the hot path skipped happens here: datetimes, the naming of tuple inputs, the merge of
an agent call's start and completion when both are in the same batch, then truncation, redaction
and JSON encoding (:mod:`.encode`). A batch of records (no barrier among them) is transposed into
columns once (``msgspec.structs.astuple`` and ``zip``, in C) and each column is fitted or encoded
as a whole: a usual column (plain JSON values, names that fit, no secret markers) costs a few C
calls, and only what a record alone can say takes a Python step per record (naming tuple inputs,
message rows, completions).

A value only the caller's own code can turn into text (``__repr__``, ``model_dump``) is not made
text here: :meth:`RowBuilder.build` leaves its cell waiting (:class:`Built`), the writer fills the
waiting cells on a worker thread (:meth:`Built.run_user_code`), or gives up on them past its
timeout. A value that fails, or is given up on, makes its row a placeholder saying why (names: NULL),
so every row is stored in its seq and the builder never bails out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import starmap
from operator import itemgetter
from typing import Any

from msgspec import defstruct
from msgspec.structs import asdict, astuple

from ..config import CaptureConfig
from ..records import COMPLETE, FILE_ROW, INPUT_FIELDS, INSERT, LLM_ROW, MESSAGE_ROW, EventRecord, usage_outputs
from ..store.columns import (
    EVENT_WIDTHS,
    FILE_INTS,
    FILE_WIDTHS,
    MESSAGE_WIDTHS,
    RUN_WIDTHS,
    Event,
    FileRow,
    MessageRow,
    Run,
    RunFinish,
    Update,
    make_row,
)
from ..store.sink import Batch
from .encode import Failed, Sanitizer
from .fit import (
    NeedsUserCode,
    UserCodeTimeout,
    fit_float,
    fit_float_column,
    fit_int,
    fit_int_column,
    fit_text,
    fit_text_column,
)
from .llm_rows import LlmRows, described_response, needs_user_code

_W = EVENT_WIDTHS
_NO_EXTRA = {type(None)}

Convert = Callable[[Sanitizer, Any], Any]  # how a waiting value is made storable once user code may run
Cell = tuple[list[Any], int, Any, Convert]  # (the list holding it, its index, the original value, how)


def _json(limit: int, exact: Callable[[Any], Any] | None = None) -> Convert:
    return lambda s, value: s.encode_column([value], limit, exact, user_code=True)[0]


def _text(limit: int) -> Convert:
    return lambda s, value: s.text_column([value], limit, user_code=True)[0]


def _name(width: int | None) -> Convert:
    return lambda s, value: fit_text(value, width)


@dataclass
class Built:
    """A batch built on the writer's loop: ``events`` it holds, the ``waiting`` cells only user code
    can fill, and how to assemble the rows once they are filled (:meth:`batch`)."""

    events: int
    waiting: list[Cell] = field(default_factory=list)
    assemble: Callable[[], Batch] = Batch
    failed: bool = False  # whether a value failed (its row is then a placeholder)

    def run_user_code(self, secret_keys: Any) -> list[Any]:
        """The waiting cells' values, made storable with the caller's own code (call it on a worker
        thread); nothing is stored into the batch here (a late thread must not change it)."""
        sanitizer = Sanitizer(secret_keys)  # its own: the loop's sanitizer keeps user code off
        out: list[Any] = []
        for _, _, value, convert in self.waiting:
            try:
                out.append(convert(sanitizer, value))
            except Exception as exc:
                out.append(Failed(exc))
        return out

    def fill(self, values: list[Any]) -> None:
        """The waiting cells set to ``values`` (what :meth:`run_user_code` returned)."""
        for (where, index, _, _), value in zip(self.waiting, values):
            where[index] = value
            self.failed = self.failed or type(value) is Failed
        self.waiting = []

    def give_up(self, reason: BaseException) -> None:
        """The waiting cells set to markers naming ``reason`` (user code did not return in time)."""
        self.fill([Failed(reason)] * len(self.waiting))

    def batch(self) -> Batch:
        """The rows, every value storable (cells still waiting are given up on)."""
        if self.waiting:
            self.give_up(UserCodeTimeout("user code not run"))
        return self.assemble()


class RowBuilder:
    """Builds one run's rows into batches; ``timestamp`` is the sink's (its drivers differ)."""

    def __init__(self, config: CaptureConfig, run_id: str, session_id: Any,
                 timestamp: Callable[[int], Any], timestamps: Callable[[list[int]], list[Any]] | None = None) -> None:
        self._config = config
        self._run_id = run_id
        self._session_id = fit_text(session_id, RUN_WIDTHS["session_id"]) or "default"
        self._timestamp = timestamp
        self._timestamps = timestamps or (lambda t_ns: list(map(timestamp, t_ns)))  # the sink's, for a batch
        self._sanitizer = Sanitizer(config.secret_keys)
        self.llm = LlmRows(run_id, self._llm_value, config.max_llm_message_size, config.max_input_size)
        self.placeholders = 0  # rows stored with a marker instead of a value that could not be encoded

    def build(self, records: list[EventRecord]) -> Built:
        """The rows of ``records`` (no barrier among them); values only user code can write wait in
        :attr:`Built.waiting`. Records of another kind than INSERT and COMPLETE are ignored."""
        if not records:
            return Built(0)
        (kinds, ids, seqs, t_ns, types, subtypes, agents, parents, depths, nodes, steps, orders, inputs, outputs,
         errors, statuses, durations, metas, extras) = map(list, zip(*map(astuple, records)))
        built = Built(0)
        failures = self._sanitizer.failures
        stamps = at_capture = self._timestamps(t_ns)
        completed: list[Any] = [None] * len(records)
        if tuple in set(map(type, inputs)):
            _name_inputs(inputs, types)
        if tuple in set(map(type, outputs)):
            for k, v in enumerate(outputs):
                if type(v) is tuple and types[k] == "llm_call":
                    outputs[k] = usage_outputs(v)
        messages, files, llm = _companions(kinds, extras, inputs, metas)
        updates: list[list[Any]] = []
        keep: Sequence[int] = range(len(records))
        if kinds.count(INSERT) != len(records):  # completions: merged into their start, or an UPDATE
            keep = self._merge(records, kinds, statuses, subtypes, outputs, errors, completed, durations, metas,
                               stamps, updates, built)
            if len(keep) < len(records):
                pick = itemgetter(*keep) if keep else (lambda col: ())
                (ids, seqs, types, subtypes, agents, parents, depths, nodes, steps, orders, inputs, outputs, errors,
                 statuses, durations, metas, stamps, completed) = (
                    [pick(col)] if len(keep) == 1 else list(pick(col))
                    for col in (ids, seqs, types, subtypes, agents, parents, depths, nodes, steps, orders, inputs,
                                outputs, errors, statuses, durations, metas, stamps, completed))
        built.events = sum(map((0).__le__, seqs))
        names = [self._names(col, _W[name], built.waiting)
                 for col, name in ((nodes, "node_id"), (steps, "step_id"), (types, "event_type"),
                                   (subtypes, "event_subtype"), (agents, "agent_name"), (statuses, "status"))]
        values = self._values(inputs, outputs, metas, errors, built.waiting)
        columns = (ids, parents, orders, seqs, depths, stamps, completed, fit_float_column(durations), *names, *values)
        message_rows = self._message_rows(records, messages, keep, stamps, built.waiting)
        file_rows = [self._file_row(records[k], at_capture[k], built.waiting) for k in files]
        built.failed = self._sanitizer.failures != failures  # (cells waiting too: checked, harmlessly)
        exchanges = [records[k].extra[1] for k in llm]
        responses = [exchange.response for exchange in exchanges]
        for i, response in enumerate(responses):
            if needs_user_code(response):  # dumped by its own code: on the user-code thread, within budget
                built.waiting.append((responses, i, response, self._describe_response))

        def assemble() -> Batch:
            llm_calls: list[tuple[Any, ...]] = []
            llm_contents: list[tuple[Any, ...]] = []
            for k, exchange, response in zip(llm, exchanges, responses):  # a model call's markers are its own rows'
                exchange.response = response  # (described, or a marker, when its own code had to dump it)
                r = records[k]
                self.llm.add(r.id, r.inputs[0] if type(r.inputs) is tuple else None, exchange, llm_calls, llm_contents)
            check = built.failed
            return Batch(events=self._event_rows(check, *columns), messages=message_rows(check, names[0], names[1]),
                         files=self._stored(file_rows, _FILE_FIXES), updates=self._stored(updates, _UPDATE_FIXES),
                         llm_calls=llm_calls, llm_contents=llm_contents)
        built.assemble = assemble
        return built

    def _describe_response(self, sanitizer: Sanitizer, response: Any) -> Any:
        return described_response(sanitizer, response, self._config.max_llm_message_size)

    def _llm_value(self, value: Any, limit: int, raw: bytes | None = None) -> Any:
        """A model call's message, tool list, response or parameters as stored JSON (user code off: a
        value only its own ``__repr__`` describes is a :class:`Failed`, stored as a marker); ``raw``:
        its msgspec JSON, when made already."""
        return self._sanitizer.encode_value(value, limit, raw)

    def finish_row(self, status: str, completed_ns: int, total: int, dropped: int, meta_patch: Any) -> tuple[Any, ...]:
        """The run's closing values (``meta_patch`` already encoded)."""
        return make_row(RunFinish, status=status, completed_at=self._timestamp(completed_ns), total_events=total,
                        dropped_events=dropped, meta=meta_patch, id=self._run_id)

    def _merge(self, records: list[EventRecord], kinds: list[Any], statuses: list[Any], subtypes: list[Any],
               outputs: list[Any], errors: list[Any], completed: list[Any], durations: list[Any], metas: list[Any],
               stamps: list[Any], updates: list[list[Any]], built: Built) -> list[int]:
        """Each completion merged into its start when that is in this batch (one INSERT), else an
        UPDATE row; returns the indices of the inserts."""
        inserts: list[int] = []
        open_at: dict[Any, int] = {}
        for k, kind in enumerate(kinds):
            r = records[k]
            if kind == INSERT:
                inserts.append(k)
                if statuses[k] == "running" and r.id is not None:
                    open_at[r.id] = k
            elif kind == COMPLETE:
                at = open_at.pop(r.id, None) if r.id is not None else None
                if at is None:
                    updates.append(self._update_row(r, stamps[k], built.waiting))
                    continue
                subtypes[at], statuses[at], outputs[at] = r.event_subtype, r.status, {"response": r.outputs}
                if r.error_message is not None:
                    errors[at] = r.error_message
                completed[at], durations[at] = stamps[k], r.duration_ms
                if r.meta:
                    started = metas[at]
                    metas[at] = {**started, **r.meta} if isinstance(started, dict) else r.meta
        return inserts

    def _names(self, values: list[Any], width: int | None, waiting: list[Cell]) -> list[Any]:
        """A names column fitted; a name only user code can write waits."""
        try:
            return fit_text_column(values, width)  # type: ignore[return-value]
        except NeedsUserCode:
            out = [_try(fit_text, v, width) for v in values]
            _wait(out, values, _name(width), waiting)
            return out

    def _values(self, inputs: list[Any], outputs: list[Any], metas: list[Any], errors: list[Any],
                waiting: list[Cell]) -> list[list[Any]]:
        """The JSON and text columns of the event rows."""
        s, cfg = self._sanitizer, self._config
        failures = s.failures
        out = [s.encode_column(inputs, cfg.max_input_size, _as_dict), s.encode_column(outputs, cfg.max_output_size),
               s.encode_column(metas, cfg.max_input_size), s.text_column(errors, cfg.max_output_size)]
        if s.failures != failures:  # (the usual batch: no value failed, no cell to look for)
            for column, values, convert in zip(out, (inputs, outputs, metas, errors),
                                               (_json(cfg.max_input_size, _as_dict), _json(cfg.max_output_size),
                                                _json(cfg.max_input_size), _text(cfg.max_output_size))):
                _wait(column, values, convert, waiting)
        return out

    def _event_rows(self, check: bool, ids: Any, parents: Any, orders: Any, seqs: Any, depths: Any, stamps: Any,
                    completed: Any, durations: Any, nodes: Any, steps: Any, types: Any, subtypes: Any,
                    agents: Any, statuses: Any, inputs: Any, outputs: Any, metas: Any, errors: Any) -> list[Any]:
        if None in types or "" in types:
            types = [t or "unknown" for t in types]
        n = len(ids)
        rows: list[Any] = list(zip(
            ids, [self._run_id] * n, [self._session_id] * n, nodes, steps, parents, types, subtypes, agents,
            orders, seqs, depths, inputs, outputs, errors, statuses, stamps, completed, durations, metas))
        if check:
            rows = [self._placeholder(row) if Failed in set(map(type, row)) else row for row in rows]
        return rows

    def _placeholder(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        """The row with its payload replaced by the reason it could not be stored; names that could
        not be written are NULL (the event type ``unknown``)."""
        self.placeholders += 1
        out = [None if type(v) is Failed else v for v in row]
        if out[Event.event_type] is None:
            out[Event.event_type] = "unknown"
        failed = [row[c] for c in (Event.inputs, Event.outputs, Event.meta, Event.error_message)
                  if type(row[c]) is Failed]
        if failed:
            reason = _unstorable(failed[0].error)
            out[Event.inputs], out[Event.outputs], out[Event.meta] = reason, None, reason
            out[Event.error_message] = None
        return tuple(out)

    def _stored(self, rows: Iterable[Sequence[Any]], fixes: tuple[int, ...]) -> list[Any]:
        """Rows as tuples; a value that could not be stored becomes a marker naming why in the columns
        ``fixes`` (text columns), NULL in any other."""
        out: list[Any] = []
        for row in rows:
            if Failed in set(map(type, row)):
                self.placeholders += 1
                out.append(tuple((_unstorable(v.error) if c in fixes else None) if type(v) is Failed else v
                                 for c, v in enumerate(row)))
            else:
                out.append(tuple(row))
        return out

    def _update_row(self, r: EventRecord, completed_at: Any, waiting: list[Cell]) -> list[Any]:
        """The UPDATE of a completion whose start was in an earlier batch."""
        s, cfg = self._sanitizer, self._config
        response = {"response": r.outputs}
        row = list(make_row(
            Update, event_subtype=r.event_subtype, status=r.status,
            outputs=s.encode_column([response], cfg.max_output_size)[0],
            error_message=s.text_column([r.error_message], cfg.max_output_size)[0],
            completed_at=completed_at, duration_ms=fit_float(r.duration_ms),
            meta=s.encode_column([r.meta], cfg.max_input_size)[0] if r.meta else None, id=r.id))
        for column, name in ((Update.event_subtype, "event_subtype"), (Update.status, "status"), (Update.id, "id")):
            row[column] = _try(fit_text, row[column], _W[name])
        _wait_cells(row, {Update.outputs: (response, _json(cfg.max_output_size)),
                          Update.error_message: (r.error_message, _text(cfg.max_output_size)),
                          Update.meta: (r.meta, _json(cfg.max_input_size)),
                          Update.event_subtype: (r.event_subtype, _name(_W["event_subtype"])),
                          Update.status: (r.status, _name(_W["status"])), Update.id: (r.id, _name(_W["id"]))},
                    waiting)
        return row

    def _file_row(self, r: EventRecord, ts: Any, waiting: list[Cell]) -> list[Any]:
        """The ``files`` row of a file_gen event."""
        _, path, file_type, size = r.extra
        node = _try(fit_text, r.node_id, FILE_WIDTHS["node_id"])
        step = _try(fit_text, r.step_id, FILE_WIDTHS["step_id"])
        row = list(make_row(
            FileRow, id=r.id, run_id=self._run_id, event_id=r.id, node_id=node, step_id=step,
            file_path=self._sanitizer.text_column([path], 4096)[0] or "",
            file_type=_try(fit_text, file_type, FILE_WIDTHS["file_type"]),
            size_bytes=fit_int(size, FILE_INTS["size_bytes"]), created_at=ts))
        _wait_cells(row, {FileRow.node_id: (r.node_id, _name(FILE_WIDTHS["node_id"])),
                          FileRow.step_id: (r.step_id, _name(FILE_WIDTHS["step_id"])),
                          FileRow.file_path: (path, lambda s, v: s.text_column([v], 4096, user_code=True)[0] or ""),
                          FileRow.file_type: (file_type, _name(FILE_WIDTHS["file_type"]))}, waiting)
        return row

    def _message_rows(self, records: list[EventRecord], messages: list[int], keep: Sequence[int],
                      stamps: list[Any], waiting: list[Cell]) -> Callable[[bool, list[Any], list[Any]], list[Any]]:
        """The ``messages`` rows of the batch's message events, column by column too: a function of the
        events' fitted node and step ids (filled by then), called at assembly."""
        if not messages:
            return lambda check, nodes, steps: []
        at = {k: i for i, k in enumerate(keep)}  # record index -> row index
        rows = [at[k] for k in messages]
        _, senders, recipients, contents, tokens = map(list, zip(*(records[k].extra for k in messages)))
        limit = self._config.max_input_size
        failures = self._sanitizer.failures
        texts = self._sanitizer.text_column(contents, limit)
        if self._sanitizer.failures != failures:
            _wait(texts, contents, _text(limit), waiting)
        ids = [records[k].id for k in messages]
        columns = (self._names(senders, MESSAGE_WIDTHS["sender"], waiting),
                   self._names(recipients, MESSAGE_WIDTHS["recipient"], waiting), texts, fit_int_column(tokens),
                   [stamps[i] for i in rows])

        def assemble(check: bool, nodes: list[Any], steps: list[Any]) -> list[Any]:  # the events' (test_fit)
            all_columns = (ids, [self._run_id] * len(ids), ids, [nodes[i] for i in rows], [steps[i] for i in rows],
                           *columns)
            if check:
                return self._stored(zip(*all_columns), _MESSAGE_FIXES)
            return list(zip(*all_columns))
        return assemble


_MESSAGE_FIXES = (MessageRow.content,)
_FILE_FIXES = (FileRow.file_path,)
_UPDATE_FIXES = (Update.outputs,)


def _try(fit: Callable[..., Any], value: Any, width: int | None) -> Any:
    """``fit(value, width, False)``, or a :class:`Failed` naming NeedsUserCode."""
    try:
        return fit(value, width, False)
    except NeedsUserCode as exc:
        return Failed(exc)


def _wait(out: list[Any], values: Sequence[Any], convert: Convert, waiting: list[Cell]) -> None:
    """The cells of ``out`` only user code can fill, added to ``waiting``."""
    if Failed in set(map(type, out)):
        for k, v in enumerate(out):
            if type(v) is Failed and type(v.error) is NeedsUserCode:
                waiting.append((out, k, values[k], convert))


def _wait_cells(row: list[Any], sources: dict[int, tuple[Any, Convert]], waiting: list[Cell]) -> None:
    """The cells of one row only user code can fill (``sources``: column -> original value, how)."""
    for column, (value, convert) in sources.items():
        cell = row[column]
        if type(cell) is Failed and type(cell.error) is NeedsUserCode:
            waiting.append((row, column, value, convert))


def _companions(kinds: list[Any], extras: list[Any], inputs: list[Any],
                metas: list[Any]) -> tuple[list[int], list[int], list[int]]:
    """Indices of the message, file and model-call (stored whole) events; a message event's inputs and
    meta are its message's."""
    messages: list[int] = []
    files: list[int] = []
    llm: list[int] = []
    if set(map(type, extras)) != _NO_EXTRA:
        for k, extra in enumerate(extras):
            if extra is None or kinds[k] != INSERT:
                continue
            if extra[0] == MESSAGE_ROW:
                _, sender, recipient, content, tokens = extra
                inputs[k] = {"sender": sender, "recipient": recipient, "content": content}
                meta = metas[k]
                metas[k] = {"tokens": tokens, **meta} if meta else {"tokens": tokens}
                messages.append(k)
            elif extra[0] == FILE_ROW:
                files.append(k)
            elif extra[0] == LLM_ROW:
                llm.append(k)
    return messages, files, llm


# Tuple inputs named by a Struct per event type: built in C, encoded as the dict of the same keys in
# the same order; the exact path (a value with a possible secret) gets that dict (_as_dict).
_NAMED = {event_type: defstruct(f"{event_type}_inputs", [(name, object) for name in fields], gc=False)
          for event_type, fields in INPUT_FIELDS.items() if "context" not in fields}  # context: None -> {}
_NAMED_TYPES = frozenset(_NAMED.values())


def _as_dict(value: Any) -> Any:
    """A value of the inputs column as the exact path reads it (a named Struct as its dict)."""
    return asdict(value) if type(value) in _NAMED_TYPES else value


def _name_inputs(inputs: list[Any], types: list[Any]) -> None:
    """Tuple inputs named by their event type's fields (records.INPUT_FIELDS), in place."""
    at = [k for k, v in enumerate(inputs) if type(v) is tuple]
    groups: dict[Any, list[int]] = {}
    for k in at:
        groups.setdefault(types[k], []).append(k)
    for event_type, where in groups.items():
        fields = INPUT_FIELDS.get(event_type or "", ())
        values = list(map(inputs.__getitem__, where))
        struct = _NAMED.get(event_type) if type(event_type) is str else None
        if struct is not None and set(map(len, values)) == {len(fields)}:
            named: list[Any] = list(starmap(struct, values))
        else:
            named = [dict(zip(fields, v)) for v in values]
            if "context" in fields:
                for value in named:
                    if "context" in value and value["context"] is None:
                        value["context"] = {}
        for k, value in zip(where, named):
            inputs[k] = value


def run_row(config: CaptureConfig, timestamp: Callable[[int], Any], *, run_id: str, session_id: str,
            task_description: str, mode: str, agent: str | None, model: str | None, started_ns: int,
            meta: dict[str, Any], user_code: bool = True) -> tuple[Any, ...]:
    """The ``workflow_runs`` row a run starts with (inserted with its first batch); every field
    fitted to its column, whatever type the caller passed. With ``user_code`` False, a value only
    its own ``__repr__``/``model_dump`` can describe raises :class:`NeedsUserCode` (build the row on
    a worker thread then)."""
    clean = Sanitizer(config.secret_keys)
    task = clean.text_column([task_description], config.max_input_size, user_code=user_code)[0]
    encoded_meta = clean.encode_column([meta], config.max_input_size, user_code=user_code)[0]
    for value in (task, encoded_meta):
        if type(value) is Failed and type(value.error) is NeedsUserCode:
            raise NeedsUserCode
    return make_row(
        Run, id=run_id, session_id=fit_text(session_id, RUN_WIDTHS["session_id"], user_code) or "default",
        task_description=_unstorable(task.error) if type(task) is Failed else task,
        mode=fit_text(mode, RUN_WIDTHS["mode"], user_code),
        agent=fit_text(agent, RUN_WIDTHS["agent"], user_code), model=fit_text(model, RUN_WIDTHS["model"], user_code),
        status="running", started_at=timestamp(started_ns), completed_at=None, total_events=0, dropped_events=0,
        meta=_unstorable(encoded_meta.error) if type(encoded_meta) is Failed else encoded_meta)


def _unstorable(exc: BaseException) -> str:
    """A JSON value saying why the original could not be stored."""
    name = type(exc).__name__.replace('"', "")
    return f'{{"<unstorable>": "{name}"}}'
