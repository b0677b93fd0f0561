"""A batch's rows built column by column: the writer's fast path.

The per-record path (``RowBuilder.add`` for each record, then ``RowBuilder.encode``) handles every
value of every row in Python. Here a run of records with no barrier inside is transposed into
columns once (``msgspec.structs.astuple`` and ``zip``, in C), and each column is fitted or encoded as
a whole (``fit.*_column``, ``Sanitizer.encode_column`` / ``text_column``): a usual column (plain
JSON values, names that fit, no secret markers) costs a few C calls, and only what a record alone
can say takes a Python step per record (naming tuple inputs, message rows, completions).

The rows are the per-record path's, value for value (tests/test_columnar.py compares them). Anything
unusual, a value that only the caller's own code can describe (``__repr__``, ``model_dump``), a
value that fails to encode, a record kind it does not know, makes :func:`build` return None, and
the writer takes the per-record path for those records, which handles each case row by row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import starmap
from operator import itemgetter
from typing import Any, Protocol

from msgspec import defstruct
from msgspec.structs import asdict, astuple

from ..config import CaptureConfig
from ..records import COMPLETE, FILE_ROW, INPUT_FIELDS, INSERT, MESSAGE_ROW, USAGE_FIELDS, EventRecord
from ..store.sink import Batch
from .encode import FAILED, NeedsUserCode, Sanitizer
from .fit import EVENT_WIDTHS, MESSAGE_WIDTHS, fit_float_column, fit_int_column, fit_text_column


class RowBuilder(Protocol):
    """What this module uses of ``rows.RowBuilder`` (which calls it: no import back)."""

    placeholders: int
    _config: CaptureConfig
    _run_id: str
    _session_id: str
    _sanitizer: Sanitizer
    _timestamp: Callable[[int], Any]
    _timestamps: Callable[[list[int]], list[Any]]

    def _add_completion(self, batch: Batch, open_rows: dict[str, list[Any]], r: EventRecord) -> None: ...
    def _companion(self, r: EventRecord, extra: tuple[Any, ...], ts: Any) -> Any: ...

_W = EVENT_WIDTHS
_NO_EXTRA = {type(None)}


def build(rows: RowBuilder, records: list[EventRecord]) -> tuple[Batch, int] | None:
    """The batch of ``records`` (no barrier among them) with every row encoded, and how many events
    it holds; None when a record needs the per-record path (nothing is changed then)."""
    if not records:
        return Batch(), 0
    sanitizer = rows._sanitizer
    placeholders = rows.placeholders
    user_code, sanitizer.user_code = sanitizer.user_code, False  # values needing it: the per-record path
    try:
        built = _build(rows, records)
    except (Exception, NeedsUserCode):
        built = None
    finally:
        sanitizer.user_code = user_code
    if built is None:
        rows.placeholders = placeholders  # the per-record path counts them again
    return built


def _build(rb: RowBuilder, records: list[EventRecord]) -> tuple[Batch, int] | None:
    (kinds, ids, seqs, t_ns, types, subtypes, agents, parents, depths, nodes, steps, orders, inputs, outputs,
     errors, statuses, durations, metas, extras) = map(list, zip(*map(astuple, records)))
    n = len(records)
    batch = Batch()
    stamp = rb._timestamp
    stamps = rb._timestamps(t_ns)
    completed: list[Any] = [None] * n

    # what only a record can say: tuple inputs named, llm usage, message rows' inputs and meta
    if tuple in set(map(type, inputs)):
        _name_inputs(inputs, types)
    if tuple in set(map(type, outputs)):
        for k, v in enumerate(outputs):
            if type(v) is tuple and types[k] == "llm_call":
                outputs[k] = {"usage": dict(zip(USAGE_FIELDS, v))}
    messages: list[int] = []
    files: list[int] = []
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

    # completions: merged into their start when it is in this batch, else an UPDATE row
    keep: Sequence[int] = range(n)
    if kinds.count(INSERT) != n:
        inserts: list[int] = []
        keep = inserts
        open_at: dict[Any, int] = {}
        for k, kind in enumerate(kinds):
            if kind == INSERT:
                inserts.append(k)
                if statuses[k] == "running" and ids[k] is not None:
                    open_at[ids[k]] = k
            elif kind == COMPLETE:
                r = records[k]
                at = open_at.pop(r.id, None) if r.id is not None else None
                if at is None:
                    rb._add_completion(batch, {}, r)
                    continue
                subtypes[at], statuses[at], outputs[at] = r.event_subtype, r.status, {"response": r.outputs}
                if r.error_message is not None:
                    errors[at] = r.error_message
                completed[at], durations[at] = stamps[k], r.duration_ms
                if r.meta:
                    started = metas[at]
                    metas[at] = {**started, **r.meta} if isinstance(started, dict) else r.meta
            else:
                return None
        if not keep:
            return batch, 0
        if len(keep) < n:
            pick = itemgetter(*keep)
            one = len(keep) == 1
            (ids, seqs, types, subtypes, agents, parents, depths, nodes, steps, orders, inputs, outputs, errors,
             statuses, durations, metas, stamps, completed) = (
                [pick(col)] if one else list(pick(col))
                for col in (ids, seqs, types, subtypes, agents, parents, depths, nodes, steps, orders, inputs,
                            outputs, errors, statuses, durations, metas, stamps, completed))

    s, cfg = rb._sanitizer, rb._config
    inputs_json = s.encode_column(inputs, cfg.max_input_size, _as_dict)
    outputs_json = s.encode_column(outputs, cfg.max_output_size)
    metas_json = s.encode_column(metas, cfg.max_input_size)
    error_text = s.text_column(errors, cfg.max_output_size)
    if FAILED in inputs_json or FAILED in outputs_json or FAILED in metas_json or FAILED in error_text:
        return None  # the per-record path makes that row a placeholder saying why
    fitted_types = fit_text_column(types, _W["event_type"])
    if None in fitted_types or "" in fitted_types:
        fitted_types = [t or "unknown" for t in fitted_types]
    fitted_nodes = fit_text_column(nodes, _W["node_id"])
    fitted_steps = fit_text_column(steps, _W["step_id"])
    batch.events = list(zip(
        ids, [rb._run_id] * len(ids), [rb._session_id] * len(ids), fitted_nodes, fitted_steps, parents, fitted_types,
        fit_text_column(subtypes, _W["event_subtype"]), fit_text_column(agents, _W["agent_name"]), orders, seqs,
        depths, inputs_json, outputs_json, error_text, fit_text_column(statuses, _W["status"]), stamps, completed,
        fit_float_column(durations), metas_json))
    if messages:
        _message_rows(rb, batch, records, messages, keep, fitted_nodes, fitted_steps, stamps)
    for k in files:
        row = rb._companion(records[k], extras[k], stamp(records[k].t_ns))
        if row is not None:
            batch.files.append(row)
    return batch, sum(map((0).__le__, seqs))


# Tuple inputs named by a Struct per event type: built in C, encoded as the dict the per-record path
# builds (same keys, same order); the exact path (a value with a possible secret) gets that dict.
_NAMED = {event_type: defstruct(f"{event_type}_inputs", [(name, object) for name in fields], gc=False)
          for event_type, fields in INPUT_FIELDS.items() if "context" not in fields}  # context: None -> {}
_NAMED_TYPES = frozenset(_NAMED.values())


def _as_dict(value: Any) -> Any:
    """The per-record path's value for a value of the inputs column."""
    return asdict(value) if type(value) in _NAMED_TYPES else value


def _name_inputs(inputs: list[Any], types: list[Any]) -> None:
    """Tuple inputs named by their event type's fields (records.INPUT_FIELDS), in place."""
    at = [k for k, v in enumerate(inputs) if type(v) is tuple]
    kinds = set(map(types.__getitem__, at))
    groups = {kinds.pop(): at} if len(kinds) == 1 else _groups(at, types)
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


def _groups(at: list[int], types: list[Any]) -> dict[Any, list[int]]:
    groups: dict[Any, list[int]] = {}
    for k in at:
        groups.setdefault(types[k], []).append(k)
    return groups


def _message_rows(rb: RowBuilder, batch: Batch, records: list[EventRecord], messages: list[int],
                  keep: Any, nodes: Any, steps: Any, stamps: Any) -> None:
    """The ``messages`` rows of the batch's message events, column by column too."""
    at = {k: i for i, k in enumerate(keep)}  # record index -> row index
    rows = [at[k] for k in messages]
    extras = [records[k].extra for k in messages]
    _, senders, recipients, contents, tokens = zip(*extras)
    contents_text = rb._sanitizer.text_column(contents, rb._config.max_input_size)
    if FAILED in contents_text:
        raise ValueError("a message content the per-record path must mark")
    ids = [records[k].id for k in messages]
    if MESSAGE_WIDTHS["node_id"] != _W["node_id"] or MESSAGE_WIDTHS["step_id"] != _W["step_id"]:
        raise ValueError("message and event id widths differ")  # noticed by tests, never in use
    pick = [nodes[i] for i in rows], [steps[i] for i in rows], [stamps[i] for i in rows]
    batch.messages = list(zip(
        ids, [rb._run_id] * len(ids), ids, pick[0], pick[1], fit_text_column(senders, MESSAGE_WIDTHS["sender"]),
        fit_text_column(recipients, MESSAGE_WIDTHS["recipient"]), contents_text, fit_int_column(tokens), pick[2]))
