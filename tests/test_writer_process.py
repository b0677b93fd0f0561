"""The writer in a process of its own (``CMBAGENT_EVENT_WRITER=process``), on both databases: rows
stored exactly as the writer thread stores them, flushes, live subscribers, the child's death (the
run goes on with a writer thread, what was lost counted), SIGKILL of the capturing process (what was
handed over is stored)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pydantic
import pytest

from cmbagent_events import CaptureConfig, ConfigError, capture_run
from cmbagent_events.cli import main as cli_main
from cmbagent_events.live.subscribers import EVENT
from cmbagent_events.read import open_async_store
from cmbagent_events.run.writer_process import WRITER_DIED, writer_process

THREAD = CaptureConfig(buffer_size=50, flush_interval_ms=20)
PROCESS = THREAD.replace(writer="process")


class Reply(pydantic.BaseModel):
    text: str
    api_key: str


class Opaque:
    def __repr__(self) -> str:
        return "Opaque(token=Bearer abcdefghijklmnopqrstuvwxyz0123)"


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def _deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


class Broken(Exception):
    def __str__(self) -> str:
        return "the fit diverged"


def _chat(run: Any) -> None:
    """One of each: plain values, values only their own code describes, secrets, an exception with
    its traceback, a model call stored whole."""
    call = run.capture_agent_call("planner", "plan the fit", {"lmax": 2500})
    run.capture_tool_call("planner", "camb", {"lmax": 2500, "object": Opaque()}, result=Reply(text="ok", api_key="k1"))
    run.capture_message("planner", "coder", "use sk-abcdefghijklmnopqrstuvwxyz123456 to call", tokens=7)
    # hostile: nested deeper than pickle goes (the batch is then handed over record by record), a repr
    # that raises, a message whose content is an object
    run.capture_tool_call("coder", "deep", {"tree": _deep(5_000)}, result=Unprintable())
    run.capture_message("coder", "planner", Reply(text="hi", api_key="k3"))
    history = [{"role": "system", "content": "You are a cosmologist."}, {"role": "user", "content": "fit TT"}]
    for n in range(3):
        run.capture_llm_call("planner", "gpt-4o", 10, 5, cost=0.01, request={"model": "gpt-4o", "messages": history,
                             "temperature": 0.1}, response=Reply(text=f"answer {n}", api_key="k2"))
        history.append({"role": "assistant", "content": f"answer {n}"})
    try:
        raise Broken("x")
    except Broken as exc:
        run.capture_exception("coder", exc, "fit")
    for i in range(200):
        run.capture_event("step", "tick", "coder", inputs={"i": i}, outputs=[i, {"password": "hunter2"}])
    run.capture_agent_response("planner", "done", event_id=call)


def _comparable(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    drop = {"id", "run_id", "parent_event_id", "timestamp", "completed_at", "duration_ms", "session_id"}
    seq_of = {event["id"]: event["seq"] for event in events}
    out = []
    for event in events:
        kept = {k: v for k, v in event.items() if k not in drop}
        kept["parent_seq"] = seq_of.get(event["parent_event_id"])
        meta = dict(kept.get("meta") or {})
        if "traceback" in meta:  # the same frames; only the line of this file's call differs
            meta["traceback"] = "Broken: the fit diverged" in meta["traceback"]
        kept["meta"] = meta
        out.append(kept)
    return out


async def _stored(db_url: str, config: CaptureConfig) -> tuple[dict[str, Any], list[dict[str, Any]], list[Any]]:
    async with capture_run(db_url, config=config, hooks=False) as run:
        _chat(run)
        run_id = run.run_id
    async with open_async_store(db_url) as store:
        row = await store.run(run_id)
        events = await store.events(run_id)
        calls = [await store.llm_call(e["id"]) for e in events if e["event_type"] == "llm_call"]
    return row, events, calls


async def test_rows_are_stored_as_the_writer_thread_stores_them(db_url: str) -> None:
    _, thread_events, thread_calls = await _stored(db_url, THREAD)
    row, events, calls = await _stored(db_url, PROCESS)
    assert row["status"] == "completed" and row["total_events"] == len(events) == len(thread_events)
    assert row["dropped_events"] == 0 and row["meta"]["capture"]["writer"] == "process"
    assert _comparable(events) == _comparable(thread_events)
    assert [c["request"] for c in calls] == [c["request"] for c in thread_calls]
    assert [c["response"] for c in calls] == [c["response"] for c in thread_calls]
    assert calls[0]["response"] == {"text": "answer 0", "api_key": "***"}
    tool = next(e for e in events if e["event_type"] == "tool_call")
    assert "Bearer abc" not in str(tool["inputs"]) and "Opaque(" in str(tool["inputs"])


async def test_a_flush_returns_once_the_child_committed(db_url: str) -> None:
    async with capture_run(db_url, config=PROCESS.replace(flush_interval_ms=3_600_000), hooks=False) as run:
        for i in range(10):
            run.capture_event("step", "tick", "coder", inputs={"i": i})
        assert await run.flush(30)
        async with open_async_store(db_url) as store:
            assert len(await store.events(run.run_id)) == 10
        assert run.get_performance_stats()["records_written"] == 10


async def test_live_subscribers_get_the_childs_commits(db_url: str) -> None:
    async with capture_run(db_url, config=PROCESS, hooks=False) as run:
        sub = run.subscribe()
        items: list[Any] = []

        async def collect() -> None:
            async for item in sub:
                items.append(item)

        reader = asyncio.create_task(collect())
        for i in range(120):
            run.capture_event("step", "tick", "coder", inputs={"i": i})
        assert await run.flush(30)
    await asyncio.wait_for(reader, 30)  # the iteration ends when the run closes
    assert [i.seq for i in items if i.type == EVENT] == list(range(120))


async def test_the_childs_death_is_counted_and_the_run_goes_on_with_a_writer_thread(db_url: str) -> None:
    async with capture_run(db_url, config=PROCESS, hooks=False) as run:
        for i in range(100):
            run.capture_event("step", "before", "coder", inputs={"i": i})
        assert await run.flush(30)
        child = writer_process()
        os.kill(child.pid, signal.SIGKILL)
        for i in range(100):
            run.capture_event("step", "after", "coder", inputs={"i": i})
        await run.flush(30)  # False when its barrier was in the child's hands: the run goes on
        for i in range(50):
            run.capture_event("step", "later", "coder", inputs={"i": i})
        run_id = run.run_id
    async with open_async_store(db_url) as store:
        row = await store.run(run_id)
        events = await store.events(run_id)
    assert row["status"] == "completed" and row["total_events"] == 250
    assert len(events) + row["dropped_events"] == 250  # stored or counted, never lost silently
    assert set(row["meta"]["drops"]) <= {WRITER_DIED}
    assert sum(1 for e in events if e["event_subtype"] in ("before", "later")) == 150
    assert writer_process().pid != child.pid  # the next run in process mode starts a new one


KILLED = """
import os, signal, sys, time
from cmbagent_events import CaptureConfig, capture_run_sync

cfg = CaptureConfig(writer="process", flush_interval_ms=3_600_000, buffer_size=5000, queue_size=10000)
with capture_run_sync(sys.argv[1], config=cfg, hooks=False, task_description="killed") as run:
    for i in range(800):
        run.capture_tool_call("worker", "step", {"i": i}, result=i)
    deadline = time.monotonic() + 60
    while run.writer.handed_over < 800 and time.monotonic() < deadline:  # handed over, not yet written
        time.sleep(0.001)
    from cmbagent_events.run.writer_process import writer_process
    print(run.run_id, writer_process().pid, run.writer.handed_over, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")


async def test_events_handed_over_survive_a_sigkill_of_the_capturing_process(db_url: str, tmp_path: Path) -> None:
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED))
    proc = subprocess.run([sys.executable, str(script), db_url], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_id, writer_pid, handed = proc.stdout.split()
    assert int(handed) == 800
    deadline = time.monotonic() + 120
    while not _gone(int(writer_pid)):  # the writer process writes what it holds, then exits
        assert time.monotonic() < deadline, "the writer process did not finish after its parent's SIGKILL"
        await asyncio.sleep(0.05)
    async with open_async_store(db_url) as store:
        assert len(await store.events(run_id)) == 800
        assert (await store.run(run_id))["status"] == "running"  # its process is gone: close-orphans' to close
    assert await asyncio.to_thread(cli_main, ["close-orphans", "--db", db_url]) == 0
    async with open_async_store(db_url) as store:
        row = await store.run(run_id)
    assert row["status"] == "abandoned" and row["total_events"] == 800 and row["dropped_events"] == 0


def test_an_unknown_writer_is_named() -> None:
    with pytest.raises(ConfigError, match="CMBAGENT_EVENT_WRITER"):
        CaptureConfig.from_env({"CMBAGENT_EVENT_WRITER": "fiber"})
    assert CaptureConfig.from_env({"CMBAGENT_EVENT_WRITER": "Process"}).writer == "process"


async def test_a_writer_process_that_cannot_start_leaves_the_run_to_a_writer_thread(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from cmbagent_events.run import writer_process as module

    stop = module.stop_writer_process
    await asyncio.to_thread(stop)  # this test's run must start its own

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError("fork refused")

    monkeypatch.setattr(module.subprocess, "Popen", refuse)
    async with capture_run(db_url, config=PROCESS, hooks=False) as run:
        for i in range(100):
            run.capture_event("step", "tick", "coder", inputs={"i": i})
        assert await run.flush(30)
        run_id = run.run_id
    async with open_async_store(db_url) as store:
        row = await store.run(run_id)
        assert len(await store.events(run_id)) == 100
    assert row["status"] == "completed" and row["dropped_events"] == 0 and "writer" not in row["meta"]["capture"]
