"""What both client tests check on a captured run, read back with plain SQL (stdlib sqlite3)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmbagent_events.testing.fake_openai import FakeOpenAI

# Reports the clients name by the clock (cost/cost_report_<time>.json, time/timing_report_<time>.json).
_CLOCK = re.compile(r"\d{8}_\d{6}")
_DATETIME = re.compile(rb"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?")  # in the clients' chat logs


@dataclass
class Served:
    """What the fake served during one client run."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    tool_calls: int

    @classmethod
    def between(cls, fake: FakeOpenAI, first_request: int) -> Served:
        requests, replies = fake.requests[first_request:], fake.replies[first_request:]
        from cmbagent_events.testing.fake_openai import count_words

        prompt = sum(count_words(m.get("content")) for r in requests for m in r.get("messages") or [])
        completion = 0
        for reply in replies:
            completion += count_words(reply.get("content"))
            for call in reply.get("tool_calls") or []:
                completion += count_words(call["function"]["name"]) + count_words(call["function"]["arguments"])
        return cls(len(requests), prompt, completion, sum(len(r.get("tool_calls") or []) for r in replies))


def run_twice(fake: FakeOpenAI, off: Callable[[], Any], on: Callable[[], Any]) -> dict[str, Any]:
    """``off()`` then ``on()``, each with what the fake served for it and its wall time (reported only)."""
    first, started = len(fake.requests), time.perf_counter()
    result_off = off()
    served_off, seconds_off = Served.between(fake, first), time.perf_counter() - started
    first, started = len(fake.requests), time.perf_counter()
    result_on = on()
    return {"off": result_off, "served_off": served_off, "seconds_off": seconds_off, "on": result_on,
            "served": Served.between(fake, first), "seconds_on": time.perf_counter() - started,
            "requests": list(fake.requests[first:]), "replies": list(fake.replies[first:])}


@dataclass
class StoredRun:
    run: dict[str, Any]
    events: list[dict[str, Any]]
    files: list[dict[str, Any]]
    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def read(cls, db_path: Path, run_id: str | None = None) -> StoredRun:
        con = sqlite3.connect(db_path)
        con.row_factory = sqlite3.Row
        try:
            runs = [dict(r) for r in con.execute("SELECT * FROM workflow_runs ORDER BY started_at")]
            run = next(r for r in runs if r["id"] == run_id) if run_id else runs[-1]
            events = [dict(r) for r in con.execute("SELECT * FROM execution_events WHERE run_id = ? ORDER BY seq",
                                                    (run["id"],))]
            files = [dict(r) for r in con.execute("SELECT * FROM files WHERE run_id = ?", (run["id"],))]
        finally:
            con.close()
        for row in (run, *events):
            for key in ("inputs", "outputs", "meta"):
                if isinstance(row.get(key), str):
                    row[key] = json.loads(row[key])
        return cls(run, events, files, {e["id"]: e for e in events})

    def by_type(self) -> Counter[tuple[str, str]]:
        return Counter((e["event_type"], e["event_subtype"]) for e in self.events)

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event_type"] == event_type]

    def ancestors(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        chain, parent = [], event["parent_event_id"]
        while parent is not None:
            chain.append(self.by_id[parent])
            parent = self.by_id[parent]["parent_event_id"]
        return chain


def normalized_history(history: list[dict[str, Any]], work_dir: Path) -> str:
    """A chat history as text, its work dir and tool-call ids replaced (they differ run to run)."""
    text = json.dumps(history, sort_keys=True, default=str).replace(str(work_dir), "<work_dir>")
    return re.sub(r"call_\d+_\d+", "call_<n>", text)


def produced_files(work_dir: Path) -> dict[str, bytes | None]:
    """The files a run left in its work dir: contents (the work dir's path and date-times replaced),
    or None for reports named by the clock (timings and costs)."""
    out: dict[str, bytes | None] = {}
    for path in sorted(p for p in work_dir.rglob("*") if p.is_file()):
        name = str(path.relative_to(work_dir))
        content = _DATETIME.sub(b"<time>", path.read_bytes().replace(str(work_dir).encode(), b"<work_dir>"))
        out[_CLOCK.sub("<time>", name)] = None if _CLOCK.search(name) else content
    return out


def check_capture(stored: StoredRun, served: Served, manager_name: str, work_dir: Path,
                  code_files: dict[str, str], reasons: set[str]) -> None:
    """The checks both clients share (see the test modules for what each means)."""
    run, events = stored.run, stored.events
    assert (run["status"], run["dropped_events"], run["total_events"]) == ("completed", 0, len(events))
    assert [e["seq"] for e in events] == list(range(len(events)))

    # Model calls: one llm_call per request the fake answered, with exactly the tokens it served.
    llm = stored.of_type("llm_call")
    assert len(llm) == served.calls
    usage = [e["outputs"]["usage"] for e in llm]
    assert sum(u["prompt_tokens"] for u in usage) == served.prompt_tokens
    assert sum(u["completion_tokens"] for u in usage) == served.completion_tokens
    assert run["meta"]["usage"]["total_tokens"] == served.prompt_tokens + served.completion_tokens
    assert len(stored.of_type("tool_call")) == served.tool_calls

    # Nesting: the group chat manager's call is the root of everything the agents did.
    managers = [e for e in events if e["event_type"] == "agent_call" and e["agent_name"] == manager_name
                and e["parent_event_id"] is None and e["event_subtype"] != "message"]
    assert len(managers) == 1, [e["agent_name"] for e in events if e["parent_event_id"] is None]
    manager = managers[0]
    inside = [e for e in events if e["event_type"] in ("llm_call", "tool_call", "code_exec", "file_gen", "handoff")]
    assert inside and all(manager in stored.ancestors(e) for e in inside)
    assert all(e["depth"] == len(stored.ancestors(e)) for e in events)

    # Handoffs: each names its reason, and the speakers follow them in order.
    handoffs = stored.of_type("handoff")
    assert {h["meta"]["reason"] for h in handoffs} == reasons, [h["meta"] for h in handoffs]
    speakers = [e["agent_name"] for e in events if e["event_type"] == "agent_call"
                and e["parent_event_id"] == manager["id"] and e["event_subtype"] in ("complete", "error")]
    targets = [h["inputs"]["to_agent"] for h in handoffs if h["parent_event_id"] == manager["id"]]
    assert targets == speakers[: len(targets)] and len(speakers) - len(targets) <= 1

    # Code and files: the scripted code ran once, and each file it left is a files row of its size.
    execs = stored.of_type("code_exec")
    assert [e["event_subtype"] for e in execs] == ["complete"] and execs[0]["meta"]["exit_code"] == 0
    rows = {Path(f["file_path"]).name: f for f in stored.files}
    for name, file_type in code_files.items():
        path = work_dir / name
        assert rows[name]["file_type"] == file_type and rows[name]["size_bytes"] == path.stat().st_size
    assert len(stored.of_type("file_gen")) == len(stored.files)


DEAD_URL = "http://127.0.0.1:9/v1"  # the discard port: nothing listens, a request that escapes fails


def replay_offline(db: Path, run_id: str, body: Callable[[], Any]) -> tuple[Any, Any, float]:
    """``body()`` inside ``replay(run_id)`` with no model server to reach (the base URL points at a
    closed port, the key is a placeholder): returns its result, the replay's report and the wall time."""
    from cmbagent_events import replay

    with environ(OPENAI_API_KEY="sk-placeholder-no-model-is-called", OPENAI_BASE_URL=DEAD_URL):
        started = time.perf_counter()
        with replay(run_id, f"sqlite+aiosqlite:///{db}") as played:
            result = body()
        return result, played.report, time.perf_counter() - started


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """``values`` set in the environment for the block; what was there before (or nothing) after."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def shape(stored: StoredRun) -> list[tuple[Any, ...]]:
    """A run's event tree without ids and times: type, subtype, agent, depth, in order."""
    return [(e["event_type"], e["event_subtype"], e["agent_name"], e["depth"]) for e in stored.events]


def check_llm_calls(db: Path, run_id: str, requests: list[dict[str, Any]], replies: list[dict[str, Any]]) -> None:
    """Each stored model call is the request the server received (messages, tools) and the reply it
    sent, message for message, in order."""
    from cmbagent_events.read import open_store

    with open_store(f"sqlite+aiosqlite:///{db}") as store:
        calls = store.llm_calls(run_id)
    assert len(calls) == len(requests)
    for call, request, reply in zip(calls, requests, replies):
        assert call["request"]["messages"] == request["messages"]
        assert call["request"]["tools"] == request.get("tools")
        message = call["response"]["choices"][0]["message"]
        assert message.get("content") == reply.get("content")
        assert [c["function"] for c in message.get("tool_calls") or []] == \
            [c["function"] for c in reply.get("tool_calls") or []]
        assert call["replayable"], call["note"]
