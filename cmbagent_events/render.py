"""Turning a stored run into text: the event tree, one line per event, and JSON lines."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from .store.columns import EVENT_COLUMNS
from .store.models import EventColumns, RunColumns

PREVIEW_CHARS = 72

# Captured text may hold terminal escape sequences (ESC [ ... ), carriage returns, bidi overrides:
# printed raw they could rewrite the terminal. Every line we print shows them escaped instead.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROL.update({c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))})


def printable(text: str) -> str:
    """``text`` with control characters (C0, DEL, C1, bidi overrides) shown as escapes."""
    return text.translate(_CONTROL)


def _preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _message_preview(value: Any, limit: int) -> str:
    """A chat message as a person would read it: text, or the tool calls / tool results it carries."""
    if isinstance(value, dict):
        calls = value.get("tool_calls")
        if calls:
            names = ", ".join(
                f"{(c.get('function') or {}).get('name')}({(c.get('function') or {}).get('arguments', '')})"
                for c in calls if isinstance(c, dict))
            return _preview(f"calls {names}", limit)
        responses = value.get("tool_responses")
        if responses:
            return _preview("tool result: " + "; ".join(str(r.get("content")) for r in responses
                                                        if isinstance(r, dict)), limit)
        if value.get("content") is not None:
            return _preview(value.get("content"), limit)
    return _preview(value, limit)


def recipients_text(recipients: list[Any], shown: int = 3) -> str:
    """``bob, carol, dave +41`` for a folded broadcast's recipients."""
    names = ", ".join(str(r) for r in recipients[:shown])
    return f"{names} +{len(recipients) - shown}" if len(recipients) > shown else names


def describe(event: EventColumns) -> str:
    """One line for an event: type, who, what, and how it ended (control characters escaped)."""
    return printable(_describe(event))


def _describe(event: EventColumns) -> str:
    inputs = event.inputs if isinstance(event.inputs, dict) else {}
    outputs = event.outputs if isinstance(event.outputs, dict) else {}
    meta = event.meta if isinstance(event.meta, dict) else {}
    kind, sub = event.event_type, event.event_subtype
    took = f" {event.duration_ms:.1f} ms" if event.duration_ms is not None else ""
    if kind == "agent_call" and sub == "message":
        recipients = meta.get("recipients")
        if isinstance(recipients, list):  # a folded broadcast: one event for every member it reached
            to, tag = recipients_text(recipients), f" [broadcast to {len(recipients)}]"
        else:
            to, tag = str(inputs.get("recipient")), " [broadcast]" if meta.get("broadcast") else ""
        return (f"message {inputs.get('sender')} -> {to}{tag}: "
                f"{_message_preview(inputs.get('content'), PREVIEW_CHARS)}")
    if kind == "agent_call":
        state = event.status if event.status != "completed" else "done"
        return (f"agent_call {event.agent_name} ({state}{took}): {_message_preview(inputs.get('message'), 40)}"
                f" => {_message_preview(outputs.get('response'), 40)}")
    if kind == "tool_call":
        ok = "ok" if event.status == "completed" else event.status
        return (f"tool_call {inputs.get('tool_name')}({_preview(inputs.get('arguments'), 40)}) -> "
                f"{_preview(outputs.get('result'), 40)} [{ok}{took}]")
    if kind == "code_exec":
        return (f"code_exec {meta.get('language', '')} exit={meta.get('exit_code')}{took}: "
                f"{_preview(outputs.get('result'), 50)}")
    if kind == "file_gen":
        return f"file_gen {inputs.get('file_path')} ({inputs.get('file_type')}, {meta.get('size_bytes')} bytes)"
    if kind == "handoff":
        reason = f" [{meta['reason']}]" if meta.get("reason") else ""
        return f"handoff {inputs.get('from_agent')} -> {inputs.get('to_agent')}{reason}"
    if kind == "error":
        return f"error {sub} in {event.agent_name}: {_preview(event.error_message)}"
    if kind == "llm_call":
        usage = outputs.get("usage") or {}
        cost = usage.get("cost")
        cost_text = f" cost=${cost:.6f}" if isinstance(cost, (int, float)) else ""
        tokens = usage.get("total_tokens")
        return f"llm_call {event.agent_name} {meta.get('model', '')} tokens={tokens}{cost_text}{took}"
    if kind == "human_input":
        return (f"human_input {event.agent_name}{took}: {_preview(inputs.get('prompt'), 40)} => "
                f"{_preview(outputs.get('response'), 40)}")
    if kind in ("plan", "workflow"):
        detail = inputs.get("task") or outputs or inputs
        return f"{kind} {sub}: {_preview(detail, 60)}"
    return f"{kind}/{sub} {event.agent_name or ''} {_preview(inputs)}"


def tree_lines(events: Sequence[EventColumns], full: bool = False) -> list[str]:
    """The events as an indented tree (children under their parent agent call, in seq order);
    ``full``: an error event's traceback printed under it."""
    by_id = {e.id: e for e in events}
    children: dict[str | None, list[EventColumns]] = defaultdict(list)
    for e in sorted(events, key=lambda e: e.seq):
        parent = e.parent_event_id if e.parent_event_id in by_id else None
        children[parent].append(e)
    lines: list[str] = []

    def walk(parent: str | None, prefix: str) -> None:
        kids = children.get(parent, [])
        for i, e in enumerate(kids):
            last = i == len(kids) - 1
            lines.append(f"{prefix}{'└─ ' if last else '├─ '}#{e.seq} {describe(e)}")  # describe: printable
            inner = prefix + ("   " if last else "│  ")
            if full:
                lines.extend(f"{inner}   {printable(line)}" for line in traceback_lines(e))
            walk(e.id, inner)

    walk(None, "")
    return lines


def traceback_lines(event: EventColumns) -> list[str]:
    """An error event's stored traceback, line by line (none for other events)."""
    meta = event.meta if isinstance(event.meta, dict) else {}
    text = meta.get("traceback") if event.event_type == "error" else None
    return text.rstrip("\n").splitlines() if isinstance(text, str) else []


def _fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def run_header(run: RunColumns) -> str:
    took = ""
    if run.started_at and run.completed_at:
        took = f", {(run.completed_at - run.started_at).total_seconds():.2f}s"
    tokens = ((run.meta or {}).get("usage") or {}).get("total_tokens")
    tok = f", {tokens} tokens" if tokens is not None else ""
    return printable(f"run {run.id} [{run.status}] mode={run.mode} started {_fmt_time(run.started_at)} UTC{took}: "
                     f"{run.total_events} events, {run.dropped_events} dropped{tok}")


def counted(n: Any, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1 ("1 model call", "3 events")."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def money(value: Any) -> str:
    """Dollars as a person reads them: ``$1.23``, ``$0.0123``, ``$0.000107``; ``-`` when unknown."""
    if not isinstance(value, (int, float)):
        return "-"
    if value == 0:
        return "$0"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    return f"${value:.4f}" if abs(value) >= 0.01 else f"${value:.6f}"


def duration(ms: Any) -> str:
    """A duration in milliseconds as ``0.4 ms``, ``124 ms``, ``2.3 s``, ``1 min 5 s``, ``2 h 3 min``."""
    if not isinstance(ms, (int, float)):
        return "-"
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def runs_table(runs: Iterable[dict[str, Any]]) -> list[str]:
    """The run list (dicts of the read API): id, status, mode, start, duration, events, tokens, cost, task."""
    lines = [f"{'run id':<36}  {'status':<9} {'mode':<12} {'started (UTC)':<19} {'took':>9} {'events':>7} "
             f"{'dropped':>7} {'tokens':>8} {'cost':>10}  task"]
    for r in runs:
        took = duration(r["duration_s"] * 1000) if r.get("duration_s") is not None else "-"
        tokens = r.get("total_tokens")
        lines.append(printable(
            f"{r['id']:<36}  {r['status']:<9} {(r['mode'] or '')[:12]:<12} {_fmt_time(r['started_at']):<19} "
            f"{took:>9} {r['total_events']:>7} {r['dropped_events']:>7} {tokens if tokens is not None else '-':>8} "
            f"{money(r.get('cost')):>10}  {_preview(r['task_description'], 40)}"))
    return lines


# (header, key, width) of the cost table's number columns
COST_COLUMNS = (("events", "events", 6), ("calls", "calls", 5), ("prompt", "prompt_tokens", 8),
                ("completion", "completion_tokens", 10), ("cached", "cached_tokens", 7), ("tokens", "total_tokens", 8),
                ("cost", "cost", 10), ("model", "llm_ms", 8), ("tools", "tool_ms", 8), ("code", "code_ms", 8),
                ("errors", "errors", 6))


def _cost_cell(key: str, value: Any) -> str:
    if key == "cost":
        return money(value)
    if key.endswith("_ms"):
        return duration(value) if value else "-"
    return str(value)


def cost_table(rows: list[dict[str, Any]], total: dict[str, Any], by: str) -> list[str]:
    """A run's cost rollup: one line per group, then the total."""
    width = max([len(by), 5, *(len(str(r["name"] if r["name"] is not None else "-")) for r in rows)])
    width = min(width, 40)
    head = f"{by:<{width}}  " + " ".join(f"{label:>{w}}" for label, _, w in COST_COLUMNS)

    def line(name: str, row: dict[str, Any]) -> str:
        cells = " ".join(f"{_cost_cell(key, row[key]):>{w}}" for _, key, w in COST_COLUMNS)
        return printable(f"{name[:width]:<{width}}  {cells}")

    lines = [head, *(line(str(r["name"]) if r["name"] is not None else "-", r) for r in rows)]
    return [*lines, "-" * len(head), line("total", total)]


def _change(a: Any, b: Any, fmt: Any = str) -> str:
    return fmt(a) if a == b else f"{fmt(a)} -> {fmt(b)}"


def diff_lines(diff: dict[str, Any]) -> list[str]:
    """``cmbagent-events diff`` as text: the first divergence, then what changed per agent and model, files."""
    events = diff["events"]
    lines = [f"A {diff['run_a']} ({counted(events['a'], 'event')})",
             f"B {diff['run_b']} ({counted(events['b'], 'event')})"]
    first = diff["first_divergence"]
    if first is None:
        lines.append(f"no divergence: both runs did the same ({counted(events['matched'], 'event')} matched)")
    else:
        lines.append(f"first divergence: agent {first['agent']} ({counted(events['matched'], 'event')} matched)")
        for side in ("a", "b"):
            at = first[side]
            lines.append(f"  {side.upper()} " + (f"#{at['seq']} {at['text']}" if at else "(nothing: run ended)"))
        for side in ("a", "b"):
            for then in first[f"then_{side}"]:
                lines.append(f"    then {side.upper()} #{then['seq']} {then['text']}")
        others = diff["diverged_agents"][1:]
        if others:
            def at(seq: int | None) -> str:
                return f"#{seq}" if seq is not None else "-"

            lines.append("also diverged: " + ", ".join(
                f"{d['agent']} (A {at(d['seq_a'])}, B {at(d['seq_b'])})" for d in others))
    for title, rows in (("per agent", diff["by_agent"]), ("per model", diff["by_model"])):
        changed = [r for r in rows if any(v for k, v in r["delta"].items() if not k.endswith("_ms"))]
        if not changed:
            lines.append(f"{title}: no change in events, calls, tokens or cost")
            continue
        lines.append(f"{title} (A -> B):")
        for r in changed:
            a, b = r["a"], r["b"]
            name = r["name"] if r["name"] is not None else "-"
            lines.append(f"  {name}: events {_change(a['events'], b['events'])}, "
                         f"calls {_change(a['calls'], b['calls'])}, "
                         f"tokens {_change(a['total_tokens'], b['total_tokens'])}, "
                         f"cost {_change(a['cost'], b['cost'], money)}, "
                         f"time {_change(a['time_ms'], b['time_ms'], duration)}")
    files = diff["files"]
    for side in ("a", "b"):
        for path in files[f"only_{side}"]:
            lines.append(f"file only in {side.upper()}: {path}")
    return [printable(line) for line in lines]


def event_json(event: EventColumns) -> str:
    """One event as a JSON line (all columns, timestamps in ISO 8601)."""
    row = {c: getattr(event, c) for c in EVENT_COLUMNS}
    return json.dumps(row, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v),
                      ensure_ascii=False)


def summary(event: dict[str, Any]) -> dict[str, Any]:
    """An event (a dict of its columns) in short: where it is, what it is, and its one-line text."""
    from types import SimpleNamespace

    row: Any = SimpleNamespace(**{c: event.get(c) for c in EVENT_COLUMNS})
    return {"seq": event.get("seq"), "id": event.get("id"), "event_type": event.get("event_type"),
            "event_subtype": event.get("event_subtype"), "agent": event.get("agent_name"),
            "status": event.get("status"), "text": describe(row)}
