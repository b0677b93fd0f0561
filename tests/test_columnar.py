"""The writer's column-by-column batch path (writer/columnar.py) gives the per-record path's rows,
value for value, and leaves every batch it cannot do alone to the per-record path."""

from __future__ import annotations

import random
from typing import Any

from cmbagent_events import CaptureConfig
from cmbagent_events.records import COMPLETE, FILE_ROW, INPUT_FIELDS, INSERT, MESSAGE_ROW, EventRecord
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
            keys.append(3)  # a key only str() can name: the caller's code, so the per-record path's
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


def _per_record(builder: RowBuilder, records: list[EventRecord]) -> Batch:
    batch: Batch = Batch()
    open_rows: dict[str, list[Any]] = {}
    for record in records:
        builder.add(batch, open_rows, record)
    builder.encode(batch)
    return batch


def test_columns_give_the_per_record_rows() -> None:
    rng = random.Random(11)
    built_count = 0
    for _ in range(400):
        records = _records(rng, rng.randint(1, 30))
        built = _builder().build(records)
        reference = _per_record(_builder(), records)
        if built is None:
            continue
        built_count += 1
        batch, events = built
        assert batch.events == reference.events
        assert batch.updates == reference.updates
        assert batch.messages == reference.messages
        assert batch.files == reference.files
        assert events == sum(1 for r in records if r.kind == INSERT)
    assert built_count > 200  # the column path really took most batches


def test_plain_batches_take_the_column_path_and_redact() -> None:
    records = [EventRecord(INSERT, f"e{i}", i, 1_700_000_000_000_000_000, "tool_call", "execute", "engineer", None, 0,
                           None, None, i, ("search", {"q": f"query {i}", "api_key": "sk-abcdefghijklmnopqrstu"}),
                           {"result": i}, None, "completed", 2.5, {}, None) for i in range(50)]
    built = _builder().build(records)
    assert built is not None
    batch, events = built
    assert events == 50 and len(batch.events) == 50
    assert all(type(row) is tuple for row in batch.events)
    assert '"api_key":"***"' in batch.events[0][12] and "sk-abcdef" not in batch.events[0][12]


def test_values_needing_the_callers_code_go_the_per_record_way() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "opaque"

    builder = _builder()
    before = builder.placeholders
    record = EventRecord(INSERT, "e0", 0, 1_700_000_000_000_000_000, "tool_call", None, "a", None, 0, None, None,
                         0, ("t", Opaque()), None, None, "completed", None, {}, None)
    assert builder.build([record]) is None  # __repr__ is the caller's code: never on the loop's fast path
    assert builder.placeholders == before
    assert "opaque" in _per_record(builder, [record]).events[0][12]


def test_sinks_batch_timestamps_equal_their_one_by_one_timestamps() -> None:
    from cmbagent_events.store.sink import PostgresSink, SqliteSink

    rng = random.Random(3)
    sinks = [SqliteSink("unused.db"), PostgresSink("")]
    for _ in range(300):
        base = 1_700_000_000_000_000_000 + rng.randrange(10**12)
        t_ns = [base + rng.randrange(rng.choice([10**6, 10**9, 5 * 10**9])) for _ in range(rng.randint(1, 40))]
        for sink in sinks:
            assert sink.timestamps(t_ns) == [sink.timestamp(t) for t in t_ns]
