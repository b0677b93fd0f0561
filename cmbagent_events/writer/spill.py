"""Spill files: what a run could not write because its database never came back.

When a run closes and its writer still cannot reach the database within the close timeout, the
rows it holds (the run row, the batch in hand, everything still queued, and the run's closing
values) are written, already sanitised, as JSON lines to ``<spill_dir>/<run_id>.jsonl`` instead of
being lost. ``cmbagent-events replay FILE`` (or :func:`replay`) writes them into a database later,
in one transaction per line, leaving out the rows the database holds already (a replay cut short
can be run again); a replayed file is renamed ``*.replayed``.

Each line is one :class:`~cmbagent_events.store.sink.Batch` (rows in store/columns.py order):
``{"run_insert": [...] | null, "events": [[...]], "updates": [...], "messages": [...],
"files": [...], "run_finish": [...] | null}`` with timestamps as ISO 8601 strings.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..store.columns import Event, FileRow, LlmCallRow, LlmContentRow, MessageRow, Run, RunFinish, Update
from ..store.database import resolve_db
from ..store.placement import Placement
from ..store.schema import migrate
from ..store.sink import Batch, Sink, open_sink

DEFAULT_SPILL_DIR = "cmbagent_events_spill"

# Positions of timestamp values in each row kind (see store/columns.py).
_EVENT_TS = (Event.timestamp, Event.completed_at)
_UPDATE_TS = (Update.completed_at,)
_MESSAGE_TS = (MessageRow.timestamp,)
_FILE_TS = (FileRow.created_at,)
_RUN_TS = (Run.started_at, Run.completed_at)
_FINISH_TS = (RunFinish.completed_at,)


def spill_dir() -> Path:
    return Path(os.environ.get("CMBAGENT_EVENTS_SPILL_DIR") or DEFAULT_SPILL_DIR)


def spill_path(run_id: str, directory: Path | None = None) -> Path:
    """Where run ``run_id`` spills, in ``directory`` (default: :func:`spill_dir`)."""
    return (directory or spill_dir()) / f"{Path(run_id).name}.jsonl"  # run ids are UUIDs; .name keeps it inside


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_spill(run_id: str, batches: Iterable[Batch], directory: Path | None = None) -> Path | None:
    """Append ``batches`` to the run's spill file in ``directory`` (default: :func:`spill_dir`);
    returns its path (None when nothing to write)."""
    lines = []
    for batch in batches:
        if batch.is_empty():
            continue
        lines.append(json.dumps({
            "run_insert": batch.run_insert, "events": batch.events, "updates": batch.updates,
            "messages": batch.messages, "files": batch.files, "run_finish": batch.run_finish,
            "llm_calls": batch.llm_calls, "llm_contents": batch.llm_contents,
        }, default=_json_default))
    if not lines:
        return None
    path = spill_path(run_id, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return path


def _timestamps(row: list[Any], positions: tuple[int, ...], sink: Sink) -> tuple[Any, ...]:
    values = list(row)
    for i in positions:
        if isinstance(values[i], str):
            parsed = datetime.fromisoformat(values[i])
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            values[i] = sink.timestamp(int(parsed.timestamp() * 1_000_000) * 1000)
    return tuple(values)


def _optional(row: list[Any] | None, positions: tuple[int, ...], sink: Sink) -> tuple[Any, ...] | None:
    return None if row is None else _timestamps(row, positions, sink)


def read_spill(path: Path, sink: Sink) -> list[Batch]:
    """The batches of a spill file, with timestamps in the form ``sink`` writes."""
    batches = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not a spill line ({exc})") from None
            batches.append(Batch(
                events=[_timestamps(r, _EVENT_TS, sink) for r in data.get("events", [])],
                updates=[_timestamps(r, _UPDATE_TS, sink) for r in data.get("updates", [])],
                messages=[_timestamps(r, _MESSAGE_TS, sink) for r in data.get("messages", [])],
                files=[_timestamps(r, _FILE_TS, sink) for r in data.get("files", [])],
                llm_calls=[tuple(r) for r in data.get("llm_calls", [])],
                llm_contents=[tuple(r) for r in data.get("llm_contents", [])],
                run_insert=_optional(data.get("run_insert"), _RUN_TS, sink),
                run_finish=_optional(data.get("run_finish"), _FINISH_TS, sink),
            ))
    return batches


async def replay(path: str | Path, db_url: str, placement: Placement | None = None) -> int:
    """Write a spill file into ``db_url`` (tables placed by ``placement``, default from the
    environment); returns the number of event rows written. Rows the database holds already are
    left out, so a replay cut short (or run twice) can be run again: it writes what is missing."""
    url = resolve_db(db_url)
    placement = Placement.from_env() if placement is None else placement
    await migrate(url, placement)
    sink = open_sink(url, placement)
    await sink.open()
    written = 0
    try:
        batches = read_spill(Path(path), sink)
        missing = await _not_stored(url, placement, batches)
        for batch in map(missing, batches):
            if not batch.is_empty():
                await sink.write(batch)
            written += len(batch.events)
    finally:
        await sink.close()
    Path(path).rename(Path(str(path) + ".replayed"))
    return written


# a batch's row lists, and the key that names a row in its table: (field, model, ((position, column), ...))
_KEYS = (
    ("events", "ExecutionEvent", ((Event.id, "id"),)),
    ("messages", "Message", ((MessageRow.id, "id"),)),
    ("files", "File", ((FileRow.id, "id"),)),
    ("llm_calls", "LlmCall", ((LlmCallRow.event_id, "event_id"),)),
    ("llm_contents", "LlmContent", ((LlmContentRow.run_id, "run_id"), (LlmContentRow.ordinal, "ordinal"))),
)


async def _not_stored(url: Any, placement: Placement, batches: list[Batch]) -> Callable[[Batch], Batch]:
    """What of a batch the database does not hold yet: its rows whose keys are not stored (the
    tables' keys, :data:`_KEYS`, and the run row's id); updates and the run's close are idempotent."""
    from sqlalchemy import select, tuple_

    from ..store.database import make_engine
    from ..store.models import models_for

    models = models_for(placement)
    run_ids = sorted({row[Run.id] for b in batches if (row := b.run_insert) is not None})
    stored: dict[str, set[tuple[Any, ...]]] = {}
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            for name, model, key in _KEYS:
                columns = [getattr(getattr(models, model), column) for _, column in key]
                held = sorted({tuple(row[p] for p, _ in key) for b in batches for row in getattr(b, name)})
                stored[name] = set()
                for chunk in _chunks(held):
                    where = (columns[0].in_([k[0] for k in chunk]) if len(columns) == 1
                             else tuple_(*columns).in_(chunk))
                    stored[name].update(map(tuple, (await conn.execute(select(*columns).where(where))).all()))
            run = models.WorkflowRun.id
            stored_runs = set((await conn.execute(select(run).where(run.in_(run_ids)))).scalars()) if run_ids else set()
    finally:
        await engine.dispose()

    def missing(batch: Batch) -> Batch:
        rows: dict[str, Any] = {
            name: [r for r in getattr(batch, name) if tuple(r[p] for p, _ in key) not in stored[name]]
            for name, _, key in _KEYS}
        run_insert = batch.run_insert
        if run_insert is not None and run_insert[Run.id] in stored_runs:
            run_insert = None
        return dataclasses.replace(batch, run_insert=run_insert, **rows)
    return missing


def _chunks(keys: list[Any], size: int = 500) -> Iterable[list[Any]]:
    for start in range(0, len(keys), size):
        yield keys[start:start + size]
