"""Cost and time of a run, grouped by agent, model, step or node: two GROUP BY queries, no rows loaded.

One query sums the model calls' usage (tokens and cost read out of ``outputs.usage`` in SQL); the
other counts every event and sums the time spent in model calls, tools and code. Their merge gives
one row per group. Totals therefore equal the sums over the events themselves (a test checks it).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select

GROUPINGS = ("agent", "model", "step", "node")
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens")
# The numbers of a rollup row, in the order the CLI prints them.
ROW_NUMBERS = ("events", "calls", *USAGE_KEYS, "cost", "llm_ms", "tool_calls", "tool_ms", "code_runs", "code_ms",
               "time_ms", "errors")


def group_key(event: Any, by: str, llm_only: bool = False) -> Any:
    """The SQL expression naming an event's group (``llm_only``: the query reads llm_call rows only)."""
    if by == "agent":
        return event.agent_name
    if by == "step":
        return event.step_id
    if by == "node":
        return event.node_id
    if by == "model":  # only model calls have one: other rows are not parsed (JSON extraction is the cost)
        model = func.coalesce(event.inputs["model"].as_string(), event.meta["model"].as_string())
        return model if llm_only else case((event.event_type == "llm_call", model), else_=None)
    raise ValueError(f"by must be one of {', '.join(GROUPINGS)}, got {by!r}")


def usage_query(event: Any, run_id: str, bys: tuple[str, ...]) -> Any:
    """Per group of every grouping in ``bys`` at once: the model calls' token counts and cost."""
    keys = [group_key(event, by, llm_only=True).label(f"key_{by}") for by in bys]
    sums = [func.sum(event.outputs[("usage", name)].as_float()).label(name) for name in (*USAGE_KEYS, "cost")]
    return (select(*keys, *sums)
            .where(event.run_id == run_id, event.event_type == "llm_call")
            .group_by(*keys))


def activity_query(event: Any, run_id: str, bys: tuple[str, ...]) -> Any:
    """Per group of every grouping in ``bys`` and event type: how many events and how long they took."""
    keys = [group_key(event, by).label(f"key_{by}") for by in bys]
    return (select(*keys, event.event_type, func.count(), func.sum(event.duration_ms))
            .where(event.run_id == run_id)
            .group_by(*keys, event.event_type))


def empty_row(by: str, name: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"by": by, "name": name}
    row.update(dict.fromkeys(ROW_NUMBERS, 0))
    for name in ("cost", "llm_ms", "tool_ms", "code_ms", "time_ms"):
        row[name] = 0.0
    return row


_TIME_OF = {"llm_call": ("calls", "llm_ms"), "tool_call": ("tool_calls", "tool_ms"),
            "code_exec": ("code_runs", "code_ms")}


def merge(bys: tuple[str, ...], usage: list[Any], activity: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """The two queries' results (grouped by every grouping in ``bys`` at once) as, per grouping, one
    row per group, the costliest first."""
    return {by: _merge_one(by, position, len(bys), usage, activity) for position, by in enumerate(bys)}


def _merge_one(by: str, position: int, width: int, usage: list[Any], activity: list[Any]) -> list[dict[str, Any]]:
    rows: dict[Any, dict[str, Any]] = {}

    def row_of(key: Any) -> dict[str, Any]:
        row = rows.get(key)
        if row is None:
            row = rows[key] = empty_row(by, key)
        return row

    for result in activity:
        event_type, count, duration = result[width:]
        row = row_of(result[position])
        row["events"] += int(count)
        if event_type == "error":
            row["errors"] += int(count)
        counted = _TIME_OF.get(event_type)
        if counted is not None:
            row[counted[0]] += int(count)
            row[counted[1]] += float(duration or 0.0)
    for result in usage:
        row = row_of(result[position])
        for name, value in zip((*USAGE_KEYS, "cost"), result[width:]):
            if value is not None:
                row[name] += float(value) if name == "cost" else int(value)
    for row in rows.values():
        row["cost"] = round(row["cost"], 10)
        row["time_ms"] = row["llm_ms"] + row["tool_ms"] + row["code_ms"]
        for name in ("llm_ms", "tool_ms", "code_ms", "time_ms"):
            row[name] = round(row[name], 3)
    return sorted(rows.values(), key=lambda r: (-r["cost"], -r["total_tokens"], -r["time_ms"], str(r["name"])))


def total(rows: list[dict[str, Any]], by: str = "total") -> dict[str, Any]:
    """The sum of rollup rows (the run as a whole)."""
    out = empty_row(by, None)
    for row in rows:
        for name in ROW_NUMBERS:
            out[name] += row[name]
    for name in ("llm_ms", "tool_ms", "code_ms", "time_ms"):
        out[name] = round(out[name], 3)
    return out
