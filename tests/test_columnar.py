"""The writer's one row path (writer/rows.py): records to rows column by column, every record a row
in its seq (or an UPDATE), every value storable, bounded and redacted; values only the caller's own
code can describe wait for the worker thread, and become markers when it gives up."""

from __future__ import annotations

import json
import random
from typing import Any

from cmbagent_events import CaptureConfig
from cmbagent_events.records import COMPLETE, FILE_ROW, INPUT_FIELDS, INSERT, MESSAGE_ROW, EventRecord
from cmbagent_events.store.columns import EVENT_WIDTHS, Event, MessageRow, Update, names
from cmbagent_events.store.sink import Batch
from cmbagent_events.writer.rows import RowBuilder

_TEXT = ["hello", "tokens", "token: abcdefgh123", "sk-abcdefghijklmnopqrstu", "Bearer abcdefghijk", "http://u:pw@h",
         "\x00", "İstanbul", "x" * 70, "[[[[" * 10, "api_key", "password=hunter22", "high through", ""]
_TYPES = [*INPUT_FIELDS, "custom", None, "", "e" * 80]
_NAMES: list[Any] = ["engineer", "planner", None, "a" * 300, "naïve", 7, "", "tab\x00"]


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(_TEXT) for _ in range(rng.randint(0, 3)))


def _value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 2 or r < 0.45:
        return rng.choice([_text(rng), 1, 2.5, None, True, float("nan"), 2**70, b"raw", _text(rng)])
    if r < 0.75:
        keys = ["a", "api_key", "tokens", "content", "Authorization", "b", "c", "d"]
        if rng.random() < 0.03:
            keys.append(3)  # a key only str() can name: the caller's code, so it waits for the worker
        return {rng.choice(keys): _value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]


def _deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


def _records(rng: random.Random, n: int) -> list[EventRecord]:
    records: list[EventRecord] = []
    running: list[str] = []
    for seq in range(n):
        if running and rng.random() < 0.25:  # a completion: of a start in this batch, or of an earlier one
            eid = running.pop(rng.randrange(len(running))) if rng.random() < 0.8 else f"earlier-{seq}"
            records.append(EventRecord(
                COMPLETE, eid, -1, 1_700_000_000_000_000_000 + seq * 1_000_000, None, rng.choice(["complete", None]),
                None, None, 0, None, None, 0, None, _value(rng), rng.choice([None, _text(rng)]),
                rng.choice(["completed", "failed"]), rng.choice([1.5, None, float("inf")]),
                rng.choice([None, {}, {"late": _value(rng)}]), None))
            continue
        event_type = rng.choice(_TYPES)
        fields = INPUT_FIELDS.get(event_type or "", ())
        inputs = (tuple(rng.choice([_value(rng), None]) for _ in fields) if fields and rng.random() < 0.7
                  else rng.choice([_value(rng), _deep(40), None]))
        outputs = (tuple(rng.randint(0, 9) for _ in range(4)) if event_type == "llm_call" and rng.random() < 0.5
                   else _value(rng))
        extra: Any = None
        if rng.random() < 0.3:
            content = _text(rng) if rng.random() < 0.9 else _value(rng)
            extra = (MESSAGE_ROW, rng.choice(_NAMES), rng.choice(_NAMES), content, rng.choice([None, 12, 2**40, True]))
        elif rng.random() < 0.05:
            path = rng.choice(["/tmp/out.png", None, "/tmp/a"])
            extra = (FILE_ROW, path, rng.choice(["png", None]), rng.randint(0, 99))
        status = rng.choice(["running", "completed", "failed", "s" * 40, None])
        eid = f"run-{seq:09d}"
        if status == "running":
            running.append(eid)
        records.append(EventRecord(
            INSERT, eid, seq, 1_700_000_000_000_000_000 + seq * 1_000_000, event_type,
            rng.choice(["start", None, "x" * 70]), rng.choice(_NAMES), rng.choice([None, "run-000000000"]),
            rng.randint(0, 3), rng.choice(_NAMES), rng.choice(_NAMES), seq, inputs, outputs,
            rng.choice([None, None, _text(rng)]), status, rng.choice([None, 3.0, 7, float("nan"), 1e301, "slow"]),
            rng.choice([None, {}, {"k": _value(rng)}, {"api_key": "s3cret"}]), extra))
    return records


def _builder() -> RowBuilder:
    config = CaptureConfig(max_input_size=200, max_output_size=120)
    return RowBuilder(config, "run-id", "session", lambda t_ns: f"t{t_ns}")


def _batch(builder: RowBuilder, records: list[EventRecord]) -> Batch:
    """What the writer does: build on its loop, user code on a worker (here: inline), assemble."""
    built = builder.build(records)
    if built.waiting:
        built.fill(built.run_user_code(CaptureConfig().secret_keys))
    return built.batch()


def _json_or_none(value: Any) -> None:
    assert value is None or type(value) is str
    if value is not None:
        json.loads(value)


def test_every_record_becomes_one_bounded_redacted_row_in_its_seq() -> None:
    rng = random.Random(11)
    waited = 0
    for _ in range(400):
        records = _records(rng, rng.randint(1, 30))
        builder = _builder()
        built = builder.build(records)
        waited += bool(built.waiting)
        batch = _batch(builder, records) if built.waiting else built.batch()
        inserts = [r for r in records if r.kind == INSERT]
        assert [row[Event.seq] for row in batch.events] == [r.seq for r in inserts]
        assert built.events == len(inserts)
        started = {r.id for r in inserts if r.status == "running"}
        merged, updates = [], []
        for r in records:
            if r.kind == COMPLETE:
                (merged if r.id in started else updates).append(r.id)
                started.discard(r.id)
        assert [u[Update.id] for u in batch.updates] == updates
        assert len(batch.messages) == sum(1 for r in inserts if r.extra and r.extra[0] == MESSAGE_ROW)
        assert len(batch.files) == sum(1 for r in inserts if r.extra and r.extra[0] == FILE_ROW)
        stored = repr([batch.events, batch.updates, batch.messages, batch.files])
        assert "Failed" not in stored and "s3cret" not in stored and "sk-abcdef" not in stored
        assert "hunter22" not in stored
        for row in batch.events:
            assert type(row) is tuple and len(row) == len(names(Event))
            for column in (Event.inputs, Event.outputs, Event.meta):
                _json_or_none(row[column])
            for column, name in ((Event.node_id, "node_id"), (Event.agent_name, "agent_name"),
                                 (Event.event_type, "event_type"), (Event.status, "status")):
                assert row[column] is None or len(row[column]) <= EVENT_WIDTHS[name]
            assert row[Event.event_type]  # never empty: "unknown"
            assert row[Event.duration_ms] is None or type(row[Event.duration_ms]) is float
        if merged:  # the completed agent calls are their start's row
            rows = {row[Event.id]: row for row in batch.events}
            assert all(rows[m][Event.completed_at] is not None for m in merged)
    assert waited > 5  # int keys (str() is the caller's code) really went to the worker


def test_plain_batches_need_no_user_code_and_redact() -> None:
    records = [EventRecord(INSERT, f"e{i}", i, 1_700_000_000_000_000_000, "tool_call", "execute", "engineer", None, 0,
                           None, None, i, ("search", {"q": f"query {i}", "api_key": "sk-abcdefghijklmnopqrstu"}),
                           {"result": i}, None, "completed", 2.5, {}, None) for i in range(50)]
    built = _builder().build(records)
    assert built.events == 50 and not built.waiting
    batch = built.batch()
    assert len(batch.events) == 50 and all(type(row) is tuple for row in batch.events)
    assert '"api_key":"***"' in batch.events[0][12] and "sk-abcdef" not in batch.events[0][12]
    assert json.loads(batch.events[0][12]) == {"tool_name": "search", "arguments": {"q": "query 0", "api_key": "***"}}


class Opaque:
    calls = 0

    def __repr__(self) -> str:
        Opaque.calls += 1
        return "opaque"


def _opaque_records() -> list[EventRecord]:
    return [EventRecord(INSERT, "e0", 0, 1_700_000_000_000_000_000, "tool_call", None, Opaque(), None, 0, None, None,
                        0, ("t", Opaque()), None, None, "completed", None, {}, None),
            EventRecord(INSERT, "e1", 1, 1_700_000_000_000_000_000, "message", None, "a", None, 0, None, None, 1,
                        None, None, None, "completed", None, {}, (MESSAGE_ROW, "a", Opaque(), Opaque(), 3)),
            EventRecord(COMPLETE, "earlier", -1, 1_700_000_000_000_000_000, None, "complete", None, None, 0, None,
                        None, 0, None, Opaque(), None, "completed", 1.0, None, None)]


def test_values_needing_the_callers_code_wait_for_the_worker() -> None:
    Opaque.calls = 0
    builder = _builder()
    built = builder.build(_opaque_records())
    assert Opaque.calls == 0 and len(built.waiting) == 6  # never on the writer's loop
    built.fill(built.run_user_code(CaptureConfig().secret_keys))
    batch = built.batch()
    assert Opaque.calls == 7 and builder.placeholders == 0  # (e1 holds two in its inputs)
    assert batch.events[0][Event.agent_name] == "opaque" and "opaque" in batch.events[0][Event.inputs]
    assert batch.messages[0][MessageRow.recipient] == "opaque" and batch.messages[0][MessageRow.content] == "opaque"
    assert json.loads(batch.updates[0][Update.outputs]) == {"response": "opaque"}


def test_values_given_up_on_become_placeholders_naming_why() -> None:
    from cmbagent_events.writer.fit import UserCodeTimeout

    Opaque.calls = 0
    builder = _builder()
    built = builder.build(_opaque_records())
    built.give_up(UserCodeTimeout("too slow"))
    batch = built.batch()
    assert Opaque.calls == 0 and builder.placeholders == 4
    event = batch.events[0]
    assert event[Event.agent_name] is None and event[Event.seq] == 0
    assert "UserCodeTimeout" in event[Event.inputs] and "UserCodeTimeout" in event[Event.meta]
    message = batch.messages[0]
    assert message[MessageRow.recipient] is None and "UserCodeTimeout" in message[MessageRow.content]
    assert "UserCodeTimeout" in batch.updates[0][Update.outputs]
    assert [row[Event.seq] for row in batch.events] == [0, 1]


def test_sinks_batch_timestamps_equal_their_one_by_one_timestamps() -> None:
    from cmbagent_events.store.sink import PostgresSink, SqliteSink

    rng = random.Random(3)
    sinks = [SqliteSink("unused.db"), PostgresSink("")]
    for _ in range(300):
        base = 1_700_000_000_000_000_000 + rng.randrange(10**12)
        t_ns = [base + rng.randrange(rng.choice([10**6, 10**9, 5 * 10**9])) for _ in range(rng.randint(1, 40))]
        for sink in sinks:
            assert sink.timestamps(t_ns) == [sink.timestamp(t) for t in t_ns]
