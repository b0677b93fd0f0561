"""The read API (cmbagent_events.read) and the CLI answers built on it: cost, diff, runs, on both databases.

Runs are captured with the manual API into a real SQLite file and the tests' real PostgreSQL; what the
store answers is checked against the events themselves (sums, counts), never against numbers written here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import uuid
from pathlib import Path

import pytest

from cmbagent_events import CaptureConfig, capture_run
from cmbagent_events.cli.main import main
from cmbagent_events.errors import DatabaseURLError, EventNotFound, NotACaptureDatabase, RunNotFound
from cmbagent_events.read import open_async_store, open_store

FAST = CaptureConfig(buffer_size=50, flush_interval_ms=20)
AGENTS = ("planner", "engineer", "executor")


def _turns(run, changed_reply: int | None = None) -> None:
    """Twelve turns of three agents: agent calls with model calls (tokens, cost), tool calls, code runs,
    then an error; reply number ``changed_reply`` says something else."""
    for turn in range(12):
        agent = AGENTS[turn % 3]
        run.set_context(node_id=f"node_{turn // 4}", step_id=f"step_{turn // 4}")
        call = run.capture_agent_call(agent, f"turn {turn}")
        run.capture_llm_call(agent, "gpt-4o" if turn % 2 else "gpt-4o-mini", 100 + turn, 10 + turn, None,
                             0.001 * (turn + 1), 12.5 + turn)
        if agent == "engineer":
            run.capture_tool_call(agent, "camb", {"lmax": 2000 + turn}, "ok", {"duration_ms": 3.0 + turn})
        if agent == "executor":
            run.capture_code_execution(agent, "print(1)", result="1", exit_code=0, duration_ms=40.0 + turn)
        reply = f"reply {turn}" + (" but different" if turn == changed_reply else "")
        run.capture_message(agent, "chat_manager", reply)
        run.capture_agent_response(agent, reply, event_id=call)
    run.capture_error("executor", "camb failed: ell out of range", "ValueError")


async def _run(url: str, *, changed_reply: int | None = None, task: str = "fit the TT spectrum") -> str:
    async with capture_run(url, task_description=task, mode="read_test", config=FAST, hooks=False) as run:
        _turns(run, changed_reply)
        return run.run_id


@pytest.mark.parametrize("by", ["agent", "model", "step", "node"])
async def test_cost_rollup_totals_equal_the_events_sums(db_url: str, by: str) -> None:
    run_id = await _run(db_url)
    async with open_async_store(db_url) as store:
        rows = await store.cost(run_id, by)
        events = await store.events(run_id)
    llm = [e for e in events if e["event_type"] == "llm_call"]
    assert sum(r["cost"] for r in rows) == pytest.approx(sum(e["outputs"]["usage"]["cost"] for e in llm))
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert sum(r[key] for r in rows) == sum(e["outputs"]["usage"][key] for e in llm)
    assert sum(r["calls"] for r in rows) == len(llm)
    assert sum(r["events"] for r in rows) == len(events)
    for event_type, column in (("tool_call", "tool_ms"), ("code_exec", "code_ms"), ("llm_call", "llm_ms")):
        expected = sum(e["duration_ms"] or 0 for e in events if e["event_type"] == event_type)
        assert sum(r[column] for r in rows) == pytest.approx(expected, abs=0.01)
    assert sum(r["errors"] for r in rows) == sum(e["event_type"] == "error" for e in events) == 1
    # each group's figures are its own events' (the grouping column read back from the events)
    column = {"agent": "agent_name", "step": "step_id", "node": "node_id"}.get(by)
    for row in rows:
        if column is not None:
            mine = [e for e in llm if e[column] == row["name"]]
        else:
            mine = [e for e in llm if e["inputs"]["model"] == row["name"]]
        assert row["cost"] == pytest.approx(sum(e["outputs"]["usage"]["cost"] for e in mine))
    assert [r["cost"] for r in rows] == sorted((r["cost"] for r in rows), reverse=True)


async def test_diff_against_itself_and_against_a_changed_reply(db_url: str) -> None:
    first = await _run(db_url)
    again = await _run(db_url)
    changed = await _run(db_url, changed_reply=7)
    async with open_async_store(db_url) as store:
        same = await store.diff(first, first)
        twins = await store.diff(first, again)
        diff = await store.diff(first, changed)
    assert same["first_divergence"] is None and same["same"] and same["diverged_agents"] == []
    assert twins["first_divergence"] is None, twins["first_divergence"]  # two runs that did the same thing
    assert twins["events"]["matched"] == twins["events"]["a"]
    divergence = diff["first_divergence"]
    assert divergence is not None and not diff["same"]
    assert divergence["agent"] == AGENTS[7 % 3]
    assert "reply 7" in divergence["a"]["text"] and "but different" not in divergence["a"]["text"]
    assert "but different" in divergence["b"]["text"]
    assert divergence["a"]["event_type"] == divergence["b"]["event_type"]
    # nothing else differs in shape: same events per agent, same tokens
    assert all(r["delta"]["events"] == 0 and r["delta"]["total_tokens"] == 0 for r in diff["by_agent"])


async def test_diff_names_an_agent_that_did_more_and_files_of_one_run(sqlite_url: str) -> None:
    base = await _run(sqlite_url)
    async with capture_run(sqlite_url, task_description="fit the TT spectrum", config=FAST, hooks=False) as run:
        extra = run.run_id
        _turns(run)
        run.capture_file_generation("plotter", "spectrum.png", "image", 1234)
    with open_store(sqlite_url) as store:
        diff = store.diff(base, extra)
    assert diff["first_divergence"]["agent"] == "plotter"
    assert diff["first_divergence"]["a"] is None and diff["first_divergence"]["b"]["event_type"] == "file_gen"
    assert diff["files"] == {"only_a": [], "only_b": ["spectrum.png"]}


async def test_runs_filters_prefix_and_tree(db_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    one = await _run(db_url, task=f"MCMC chain {tag}")
    two = await _run(db_url, task=f"toy spectrum {tag}")
    async with open_async_store(db_url) as store:
        found = await store.runs(limit=None, task_contains=f"mcmc CHAIN {tag}")
        assert [r["id"] for r in found] == [one]
        both = await store.runs(limit=None, task_contains=tag, mode="read_test", status="completed")
        assert [r["id"] for r in both] == [two, one]  # newest first
        assert await store.runs(limit=None, task_contains=tag, status="failed") == []
        assert [r["id"] for r in await store.runs(limit=1, offset=1, task_contains=tag)] == [one]
        run = await store.run(one[:13])
        assert run["id"] == one and run["cost"] == pytest.approx(sum(0.001 * (t + 1) for t in range(12)))
        assert run["duration_s"] is not None and run["total_tokens"] > 0
        with pytest.raises(RunNotFound):
            await store.run("no-such-run")
        roots = await store.tree(one)
        events = await store.events(one)
    flat: list[dict] = []

    def walk(nodes: list[dict]) -> None:
        for node in nodes:
            flat.append(node)
            assert all(child["parent_event_id"] == node["id"] for child in node["children"])
            walk(node["children"])

    walk(roots)
    assert sorted(e["seq"] for e in flat) == [e["seq"] for e in events]
    assert any(node["children"] for node in roots)


async def test_a_nul_in_an_id_or_a_filter_matches_nothing(db_url: str) -> None:
    """PostgreSQL refuses a NUL in a text parameter; nothing stored holds one, so it matches nothing
    (an empty list, or not found), on both databases alike, never the driver's error."""
    one = await _run(db_url, task="nul filter")
    async with open_async_store(db_url) as store:
        assert await store.runs(limit=None, task_contains="nul\x00") == []
        assert await store.runs(limit=None, mode="read_test\x00") == []
        assert await store.events(one, agent="planner\x00") == []
        with pytest.raises(RunNotFound):
            await store.run(one[:8] + "\x00")
        with pytest.raises(EventNotFound):
            await store.llm_call("\x00")
        assert [r["id"] for r in await store.runs(limit=None, task_contains="nul filter")] == [one]


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Tokyo"])
async def test_a_start_time_read_back_selects_its_run_in_any_time_zone(db_url: str, zone: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``since`` without a zone means UTC, as the times the store returns (naive UTC on SQLite): a
    run's own started_at selects it and a second later does not, whatever the local zone."""
    import time
    from datetime import timedelta

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        tag = uuid.uuid4().hex[:8]
        one = await _run(db_url, task=f"zone {tag}")
        async with open_async_store(db_url) as store:
            started = (await store.run(one))["started_at"]
            at = await store.runs(limit=None, task_contains=tag, since=started)
            after = await store.runs(limit=None, task_contains=tag, since=started + timedelta(seconds=1))
            as_text = await store.runs(limit=None, task_contains=tag,
                                       since=started.replace(tzinfo=None).isoformat(timespec="seconds"))
        assert [r["id"] for r in at] == [one] and after == [] and [r["id"] for r in as_text] == [one]
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_sync_store_works_inside_a_running_loop(sqlite_url: str) -> None:
    """A notebook has a loop running in the main thread: the sync store must still answer there."""
    run_id = asyncio.run(_run(sqlite_url))

    async def notebook_cell() -> list[dict]:
        with open_store(sqlite_url) as store:
            return store.cost(run_id)

    rows = asyncio.run(notebook_cell())
    assert {r["name"] for r in rows} >= set(AGENTS)


def test_frames_are_pandas_dataframes(sqlite_url: str) -> None:
    import pandas as pd  # the dev extra holds it (the [pandas] extra for users)

    run_id = asyncio.run(_run(sqlite_url))
    with open_store(sqlite_url) as store:
        frame = store.frame("events", run_id, event_type="llm_call")
        cost = store.frame("cost", run_id, by="model")
        events = store.events(run_id, event_type="llm_call")
    assert isinstance(frame, pd.DataFrame) and list(frame["id"]) == [e["id"] for e in events]
    assert set(cost["name"].dropna()) == {"gpt-4o", "gpt-4o-mini"}
    assert cost["calls"].sum() == len(events)


def _listing(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_a_foreign_sqlite_file_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE measurements (x REAL)")
    con.execute("INSERT INTO measurements VALUES (1.5)")
    con.commit()
    con.close()
    before = _listing(tmp_path)
    with pytest.raises(NotACaptureDatabase, match="holds no cmbagent-events tables"):
        open_store(f"sqlite:///{other}")
    assert main(["--db", f"sqlite:///{other}", "runs"]) == 1
    assert _listing(tmp_path) == before  # no tables added, no lock or journal files left
    missing = tmp_path / "missing.db"
    with pytest.raises(DatabaseURLError, match="no database at"):
        open_store(f"sqlite:///{missing}")
    assert not missing.exists()
    notes = tmp_path / "notes.db"  # not SQLite at all
    notes.write_bytes(b"observing log, night 3: seeing 0.8 arcsec\n" * 200)
    with pytest.raises(NotACaptureDatabase, match="is not an SQLite database file"):
        open_store(f"sqlite:///{notes}")
    assert notes.read_bytes().startswith(b"observing log")


async def test_a_postgresql_database_without_our_tables_is_refused_untouched(pg_server) -> None:
    url = pg_server.create_database(f"foreign_{uuid.uuid4().hex[:10]}")
    with pytest.raises(NotACaptureDatabase):
        async with open_async_store(url):
            pass
    import asyncpg

    from cmbagent_events.store.database import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    assert tables == []


async def test_cli_cost_and_diff(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    a = await _run(db_url)
    b = await _run(db_url, changed_reply=4)
    assert await asyncio.to_thread(main, ["--db", db_url, "cost", a, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    async with open_async_store(db_url) as store:
        llm = await store.events(a, event_type="llm_call")
    assert out["total"]["cost"] == pytest.approx(sum(e["outputs"]["usage"]["cost"] for e in llm))
    assert {r["name"] for r in out["rows"]} >= set(AGENTS)
    assert await asyncio.to_thread(main, ["--db", db_url, "cost", a, "--by", "model"]) == 0
    text = capsys.readouterr().out
    assert "gpt-4o-mini" in text and "total" in text and "$0.0" in text
    assert await asyncio.to_thread(main, ["--db", db_url, "diff", a, b, "--json"]) == 0
    diff = json.loads(capsys.readouterr().out)
    assert diff["first_divergence"]["agent"] == AGENTS[4 % 3]
    assert await asyncio.to_thread(main, ["--db", db_url, "diff", a, a]) == 0
    assert "no divergence" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["--db", db_url, "runs", "--task", "fit the TT", "--limit", "3"]) == 0
    listed = capsys.readouterr().out
    assert b in listed and "$0.0" in listed
    assert await asyncio.to_thread(main, ["--db", db_url, "cost", "no-such-run"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no-such-run" in err


async def test_a_database_at_the_first_schema_reads_and_upgrades(tmp_path: Path) -> None:
    """A database made by an earlier version (revision 0001) is read as it is, and upgraded by a capture."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, inspect

    from cmbagent_events.store.placement import Placement
    from cmbagent_events.store.schema import HEAD_REVISION, forget_migrated, migrations_dir

    path = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{path}"
    run_id = await _run(url)
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(migrations_dir()))
        cfg.attributes["connection"] = conn
        cfg.attributes["placement"] = Placement()
        command.downgrade(cfg, "0001_initial")
    with engine.connect() as conn:
        assert "ix_execution_events_type" in {i["name"] for i in inspect(conn).get_indexes("execution_events")}
    engine.dispose()
    with open_store(url) as store:
        assert store.run(run_id)["total_events"] > 0 and store.cost(run_id)
        llm = store.events(run_id, event_type="llm_call")[0]
        assert store.llm_call(llm["id"])["note"] == "request and response not recorded"  # no llm tables yet
    forget_migrated(url)
    await _run(url)  # a capture migrates the file to the head
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        indexes = {i["name"] for i in inspect(conn).get_indexes("execution_events")}
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        tables = set(inspect(conn).get_table_names())
    engine.dispose()
    assert version == HEAD_REVISION and indexes == {"ix_execution_events_run_seq"}
    assert {"llm_calls", "llm_contents"} <= tables
    with open_store(url) as store:
        assert len(store.runs(limit=None)) == 2
