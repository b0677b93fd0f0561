"""Comparing two runs: where they first did something different, then what it cost.

Events are aligned per agent, in order (each agent's own sequence of events in run A against its
sequence in run B), never by ids: two runs of one task share no ids, and concurrent agents may
interleave differently without doing anything different. An event is compared by its fingerprint:
type, subtype, agent, status and what it carried (a message's content, a reply, a tool's name,
arguments and result, code and its output), with what varies between identical runs left out
(timestamps, durations, process ids, call ids, and the run's own work directory in any text).

The comparison streams both runs in pages and keeps, per agent, only the events not yet matched;
once an agent's lanes disagree, it stops keeping that agent's events. Memory stays bounded by the
distance between the two runs, not by their length.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec

# Keys whose values differ between two runs that did the same thing.
VOLATILE_KEYS = frozenset({
    "started_at", "completed_at", "timestamp", "time", "created", "created_at", "execution_time", "duration",
    "duration_ms", "elapsed", "elapsed_s", "pid", "host", "process", "run_id", "event_id", "id", "tool_call_id",
    "call_id", "system_fingerprint", "work_dir",
})
WORK_DIR_MARK = "<work_dir>"

_decode = msgspec.json.decode
_encode_sorted = msgspec.json.Encoder(order="sorted", enc_hook=str).encode


def _clean(value: Any, work_dirs: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v, work_dirs) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, (list, tuple)):
        return [_clean(v, work_dirs) for v in value]
    if isinstance(value, str) and work_dirs:
        for directory in work_dirs:
            if directory in value:
                value = value.replace(directory, WORK_DIR_MARK)
    return value


def _json(text: Any) -> Any:
    if text is None or not isinstance(text, (str, bytes)):
        return text
    try:
        return _decode(text)
    except msgspec.DecodeError:
        return text


def fingerprint(row: Any, work_dirs: tuple[str, ...]) -> bytes:
    """What an event did, as 16 bytes: equal for the same action in two runs (see the module doc)."""
    event_type, subtype = row.event_type, row.event_subtype
    inputs, outputs = _json(row.inputs), _json(row.outputs)
    inputs = inputs if isinstance(inputs, dict) else {"value": inputs}
    outputs = outputs if isinstance(outputs, dict) else {"value": outputs}
    content: Any
    if event_type == "agent_call" and subtype != "message":
        content = (inputs.get("message"), outputs.get("response"))
    elif event_type == "llm_call":
        content = inputs.get("model")
    elif event_type == "error":
        content = row.error_message
    elif event_type == "code_exec":
        meta = _json(row.meta)
        content = (inputs, outputs, meta.get("exit_code") if isinstance(meta, dict) else None)
    else:
        content = (inputs, outputs)
    signature = (event_type, subtype, row.agent_name, row.status, _clean(content, work_dirs))
    return hashlib.blake2b(_encode_sorted(signature), digest_size=16).digest()


def work_dirs_of(meta: Any) -> tuple[str, ...]:
    """The run's own work directory (``meta.work_dir``), as text to hide when comparing."""
    if isinstance(meta, dict) and isinstance(meta.get("work_dir"), str) and len(meta["work_dir"]) > 1:
        return (meta["work_dir"].rstrip("/"),)
    return ()


def raw_key(row: Any, work_dirs: tuple[str, ...]) -> tuple[Any, ...]:
    """The event as stored (texts with the work directory hidden): equal keys are the same action, so
    most events are matched without decoding their JSON; unequal ones are compared by fingerprint."""
    texts = [row.inputs, row.outputs, row.error_message]
    if work_dirs:
        for i, text in enumerate(texts):
            if isinstance(text, str):
                for directory in work_dirs:
                    if directory in texts[i]:
                        texts[i] = texts[i].replace(directory, WORK_DIR_MARK)
    return (row.event_type, row.event_subtype, row.agent_name, row.status, *texts)


@dataclass(slots=True)
class _Pending:
    seq: int
    id: str
    key: tuple[Any, ...]
    row: Any
    print: bytes | None = None

    def fingerprint(self, work_dirs: tuple[str, ...]) -> bytes:
        if self.print is None:
            self.print = fingerprint(self.row, work_dirs)
        return self.print


@dataclass(slots=True)
class _Lane:
    """One agent's events of each run not matched yet."""

    a: deque[_Pending] = field(default_factory=deque)
    b: deque[_Pending] = field(default_factory=deque)
    diverged: tuple[tuple[int, str] | None, tuple[int, str] | None] | None = None


class Aligner:
    """Feed both runs' events in seq order (any interleaving of the two); then :meth:`divergences`."""

    def __init__(self, work_dirs_a: tuple[str, ...], work_dirs_b: tuple[str, ...]) -> None:
        self._lanes: dict[Any, _Lane] = {}
        self._dirs = (work_dirs_a, work_dirs_b)
        self.matched = 0

    def add(self, side: int, row: Any) -> None:
        lane = self._lanes.get(row.agent_name)
        if lane is None:
            lane = self._lanes[row.agent_name] = _Lane()
        if lane.diverged is not None:
            return
        (lane.b if side else lane.a).append(_Pending(row.seq, row.id, raw_key(row, self._dirs[side]), row))
        while lane.a and lane.b:
            a, b = lane.a[0], lane.b[0]
            if a.key != b.key and a.fingerprint(self._dirs[0]) != b.fingerprint(self._dirs[1]):
                lane.diverged = ((a.seq, a.id), (b.seq, b.id))
                lane.a.clear()
                lane.b.clear()
                return
            lane.a.popleft()
            lane.b.popleft()
            self.matched += 1

    def earliest_divergence(self) -> int | None:
        """The smallest seq at which a lane has diverged so far (None: none yet)."""
        seqs = [x[0] for lane in self._lanes.values() if lane.diverged for x in lane.diverged if x is not None]
        return min(seqs) if seqs else None

    def divergences(self) -> list[tuple[Any, tuple[int, str] | None, tuple[int, str] | None]]:
        """Per agent that diverged: (agent, (seq, id) in A or None, (seq, id) in B or None), earliest first.

        Call once both runs were fed whole: an agent with events left on one side only did more in
        that run (the other side is None)."""
        out = []
        for agent, lane in self._lanes.items():
            if lane.diverged is not None:
                out.append((agent, *lane.diverged))
            elif lane.a or lane.b:
                a = (lane.a[0].seq, lane.a[0].id) if lane.a else None
                b = (lane.b[0].seq, lane.b[0].id) if lane.b else None
                out.append((agent, a, b))
        out.sort(key=lambda d: min(x[0] for x in d[1:] if x is not None))
        return out


def merge_rollups(rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rollup rows of two runs side by side: per group, A's and B's figures and B minus A."""
    from .rollup import ROW_NUMBERS, empty_row

    by = (rows_a or rows_b or [{"by": "agent"}])[0]["by"]
    a_of = {r["name"]: r for r in rows_a}
    b_of = {r["name"]: r for r in rows_b}
    names = list(dict.fromkeys([*a_of, *b_of]))
    out = []
    for name in names:
        a, b = a_of.get(name) or empty_row(by, name), b_of.get(name) or empty_row(by, name)
        delta = {k: (round(b[k] - a[k], 12) if isinstance(b[k], float) else b[k] - a[k]) for k in ROW_NUMBERS}
        out.append({"name": name, "a": {k: a[k] for k in ROW_NUMBERS}, "b": {k: b[k] for k in ROW_NUMBERS},
                    "delta": delta})
    out.sort(key=lambda r: (-abs(r["delta"]["cost"]), -abs(r["delta"]["total_tokens"]), -abs(r["delta"]["events"]),
                            str(r["name"])))
    return out


def normalised_paths(paths: list[str], work_dirs: tuple[str, ...]) -> dict[str, str]:
    """Each file path with the run's work directory hidden -> the path as stored."""
    return {_clean(path, work_dirs): path for path in paths}
