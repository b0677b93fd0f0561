"""Table placement: our tables beside another application's (a table prefix, a PostgreSQL schema),
migrations and Alembic's version table included, and every reader finding them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import async_sessionmaker

from cmbagent_events import (
    CaptureConfig,
    ConfigError,
    DatabaseURLError,
    EventRepository,
    Placement,
    SchemaConflictError,
    WorkflowRepository,
    capture_run,
    make_engine,
    migrate,
)
from cmbagent_events.cli import main
from cmbagent_events.live.server import start_server
from cmbagent_events.store.models import models_for
from cmbagent_events.store.reader import RunReader
from cmbagent_events.store.schema import HEAD_REVISION, migrations_dir

OURS = ("workflow_runs", "execution_events", "messages", "files", "llm_calls", "llm_contents")
FAST = CaptureConfig(buffer_size=10, flush_interval_ms=10)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of its own per test (placement tests create and look for tables by name)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    server = request.getfixturevalue("pg_server")
    return server.create_database(f"app_{uuid.uuid4().hex[:10]}")


@pytest.fixture
def fresh_pg_url(pg_server) -> str:
    return pg_server.create_database(f"app_{uuid.uuid4().hex[:10]}")


async def _sql(url: str, *statements: str) -> list:
    """Run statements in one transaction; returns the rows of the last one (if it returns any)."""
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            result = None
            for statement in statements:
                result = await conn.execute(text(statement))
            return list(result) if result is not None and result.returns_rows else []
    finally:
        await engine.dispose()


async def _tables(url: str, schema: str | None = None) -> set[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda c: set(inspect(c).get_table_names(schema=schema)))
    finally:
        await engine.dispose()


async def _create_foreign_app(url: str) -> None:
    """Another application's tables under our default names: a MARS-like ``workflow_runs`` (its own
    columns and an index named like ours) and its own Alembic history."""
    await _sql(url,
               "CREATE TABLE workflow_runs (id INTEGER PRIMARY KEY, name VARCHAR(50), state VARCHAR(20), "
               "session_id VARCHAR(20))",
               "CREATE INDEX ix_workflow_runs_session_id ON workflow_runs (session_id)",
               "INSERT INTO workflow_runs (id, name, state, session_id) VALUES (7, 'mars run', 'done', 's1')",
               "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
               "INSERT INTO alembic_version (version_num) VALUES ('mars_0042')")


async def _foreign_app_intact(url: str) -> None:
    assert await _sql(url, "SELECT id, name, state, session_id FROM workflow_runs") == [(7, "mars run", "done", "s1")]
    assert await _sql(url, "SELECT version_num FROM alembic_version") == [("mars_0042",)]


async def _small_run(url: str, config: CaptureConfig, task: str = "placed run") -> str:
    async with capture_run(url, config=config, hooks=False, task_description=task, session_id="placed") as run:
        call = run.capture_agent_call("planner", "plan")
        run.capture_message("planner", "engineer", "go ahead")
        run.capture_file_generation("engineer", "out/a.png", "png", 10)
        run.capture_agent_response("planner", "done", event_id=call)
    return run.run_id


# -- capture, migrations and the version table -----------------------------------------------------------
async def test_prefixed_tables_live_beside_another_apps_workflow_runs(fresh_url) -> None:
    await _create_foreign_app(fresh_url)
    config = FAST.replace(table_prefix="cmbagent_")
    run_id = await _small_run(fresh_url, config)

    tables = await _tables(fresh_url)
    assert {f"cmbagent_{t}" for t in OURS} | {"cmbagent_alembic_version", "workflow_runs", "alembic_version"} <= tables
    await _foreign_app_intact(fresh_url)  # their rows, columns and Alembic history untouched
    assert await _sql(fresh_url, "SELECT version_num FROM cmbagent_alembic_version") == [(HEAD_REVISION,)]
    rows = await _sql(fresh_url, f"SELECT status, total_events FROM cmbagent_workflow_runs WHERE id = '{run_id}'")
    assert rows == [("completed", 3)]
    assert await _sql(fresh_url, "SELECT count(*) FROM cmbagent_execution_events") == [(3,)]
    assert await _sql(fresh_url, "SELECT sender, recipient FROM cmbagent_messages") == [("planner", "engineer")]
    assert await _sql(fresh_url, "SELECT file_path FROM cmbagent_files") == [("out/a.png",)]

    engine = make_engine(fresh_url)  # our indexes carry the prefix too (theirs keeps its name)
    async with engine.connect() as conn:
        indexes = await conn.run_sync(
            lambda c: {i["name"] for i in inspect(c).get_indexes("cmbagent_execution_events")})
    await engine.dispose()
    assert indexes == {"ix_cmbagent_execution_events_run_seq"}


async def test_default_names_on_another_apps_database_fail_clearly_and_touch_nothing(fresh_url) -> None:
    await _create_foreign_app(fresh_url)
    with pytest.raises(SchemaConflictError, match="CMBAGENT_EVENTS_TABLE_PREFIX") as info:
        async with capture_run(fresh_url, config=FAST, hooks=False):
            pytest.fail("the body must not run")
    assert "mars_0042" in str(info.value)  # their Alembic history is named, not "can't locate revision"
    await _foreign_app_intact(fresh_url)
    assert await _tables(fresh_url) == {"workflow_runs", "alembic_version"}


async def test_a_foreign_table_under_our_name_without_alembic_is_refused(fresh_url) -> None:
    await _sql(fresh_url, "CREATE TABLE ce_execution_events (id INTEGER PRIMARY KEY)")
    with pytest.raises(SchemaConflictError, match="ce_execution_events already exist"):
        await migrate(fresh_url, Placement(prefix="ce_"))
    assert await _tables(fresh_url) == {"ce_execution_events"}


async def test_two_placements_in_one_database_keep_their_runs_apart(fresh_url) -> None:
    run_a = await _small_run(fresh_url, FAST.replace(table_prefix="a_"), "run a")
    run_b = await _small_run(fresh_url, FAST.replace(table_prefix="b_"), "run b")
    engine = make_engine(fresh_url)
    try:
        for prefix, mine, other in (("a_", run_a, run_b), ("b_", run_b, run_a)):
            reader = RunReader(engine, Placement(prefix))
            assert [r.id for r in await reader.list_runs()] == [mine]
            assert await reader.get_run(other) is None
            assert [e.seq for e in await reader.events_after(mine, -1)] == [0, 1, 2]
    finally:
        await engine.dispose()
    assert await _sql(fresh_url, "SELECT version_num FROM a_alembic_version") == [(HEAD_REVISION,)]
    assert await _sql(fresh_url, "SELECT version_num FROM b_alembic_version") == [(HEAD_REVISION,)]


async def test_postgresql_schema_holds_our_tables_and_version_table(fresh_pg_url) -> None:
    await _create_foreign_app(fresh_pg_url)
    for placement in (Placement(schema="cmbagent"), Placement(prefix="ev_", schema="cmbagent")):
        config = FAST.replace(table_prefix=placement.prefix, db_schema=placement.schema)
        run_id = await _small_run(fresh_pg_url, config)
        assert await _sql(fresh_pg_url, f"SELECT status FROM {placement.qualified('workflow_runs')} "
                                        f"WHERE id = '{run_id}'") == [("completed",)]
        assert await _sql(fresh_pg_url, f"SELECT version_num FROM {placement.qualified('alembic_version')}"
                          ) == [(HEAD_REVISION,)]
    assert await _tables(fresh_pg_url, "cmbagent") == {
        *OURS, "alembic_version", *(f"ev_{t}" for t in OURS), "ev_alembic_version"}
    assert await _tables(fresh_pg_url) == {"workflow_runs", "alembic_version"}  # public: theirs only
    await _foreign_app_intact(fresh_pg_url)


async def test_schema_on_sqlite_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(DatabaseURLError, match="needs PostgreSQL"):
        async with capture_run(url, config=FAST.replace(db_schema="events"), hooks=False):
            pytest.fail("the body must not run")


# -- configuration --------------------------------------------------------------------------------------
def test_placement_from_the_environment() -> None:
    config = CaptureConfig.from_env({"CMBAGENT_EVENTS_TABLE_PREFIX": " cmbagent_ ", "CMBAGENT_EVENTS_DB_SCHEMA": "ev"})
    assert config.placement == Placement("cmbagent_", "ev")
    assert CaptureConfig.from_env({}).placement.is_default
    assert Placement.from_env({"CMBAGENT_EVENTS_TABLE_PREFIX": "x_"}) == Placement("x_", None)


@pytest.mark.parametrize(("variable", "value"), [
    ("CMBAGENT_EVENTS_TABLE_PREFIX", "Cmb"), ("CMBAGENT_EVENTS_TABLE_PREFIX", "a-b"),
    ("CMBAGENT_EVENTS_TABLE_PREFIX", "1x"), ("CMBAGENT_EVENTS_TABLE_PREFIX", "x" * 33),
    ("CMBAGENT_EVENTS_TABLE_PREFIX", 'x"; drop table y; --'), ("CMBAGENT_EVENTS_DB_SCHEMA", "Events"),
    ("CMBAGENT_EVENTS_DB_SCHEMA", "pg_catalog"), ("CMBAGENT_EVENTS_DB_SCHEMA", "a.b"),
])
def test_bad_placement_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        CaptureConfig.from_env({variable: value})


def test_head_revision_is_alembics_head() -> None:
    """A new migration must update HEAD_REVISION (the cheap "already current?" check relies on it)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    assert ScriptDirectory.from_config(cfg).get_heads() == [HEAD_REVISION]


def test_models_for_a_placement_name_tables_and_indexes_like_the_migration() -> None:
    models = models_for(Placement("ce_", "ev"))
    tables = {t.fullname: sorted(i.name for i in t.indexes) for t in models.Base.metadata.sorted_tables}
    assert tables == {
        "ev.ce_workflow_runs": ["ix_ce_workflow_runs_session_id", "ix_ce_workflow_runs_started_at"],
        "ev.ce_execution_events": ["ix_ce_execution_events_run_seq"],
        "ev.ce_messages": ["ix_ce_messages_event_id", "ix_ce_messages_run_id"],
        "ev.ce_files": ["ix_ce_files_event_id", "ix_ce_files_run_id"],
        "ev.ce_llm_calls": ["ix_ce_llm_calls_run_id"],
        "ev.ce_llm_contents": [],
    }
    assert models_for(Placement("ce_", "ev")) is models  # built once


# -- readers: repositories, CLI, viewer, live feed -------------------------------------------------------
async def test_repositories_read_the_placed_tables(fresh_url) -> None:
    placement = Placement("cmbagent_")
    await _create_foreign_app(fresh_url)
    run_id = await _small_run(fresh_url, FAST.replace(table_prefix=placement.prefix))
    engine = make_engine(fresh_url)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            run = await WorkflowRepository(session, "placed", placement).get_run(run_id)
            assert run is not None and run.status == "completed" and run.task_description == "placed run"
            repo = EventRepository(session, "placed", placement)
            assert [e.event_type for e in await repo.list_events(run_id)] == ["agent_call", "agent_call", "file_gen"]
            assert [f.file_path for f in await repo.list_files(run_id)] == ["out/a.png"]
            created = await WorkflowRepository(session, "placed", placement).create_run("made by a tool")
        assert await _sql(fresh_url, f"SELECT task_description FROM cmbagent_workflow_runs WHERE id = '{created.id}'"
                          ) == [("made by a tool",)]
    finally:
        await engine.dispose()


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_reads_and_migrates_the_placed_tables(fresh_url, capsys, monkeypatch) -> None:
    await _create_foreign_app(fresh_url)
    run_id = await _small_run(fresh_url, FAST.replace(table_prefix="cmbagent_"))

    code, out, _ = await asyncio.to_thread(_cli, capsys, "--db", fresh_url, "--table-prefix", "cmbagent_", "runs",
                                           "--json")
    assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == [run_id]
    monkeypatch.setenv("CMBAGENT_EVENTS_TABLE_PREFIX", "cmbagent_")  # the environment works as well
    code, out, _ = await asyncio.to_thread(_cli, capsys, "--db", fresh_url, "show", run_id)
    assert code == 0 and out.startswith(f"run {run_id} [completed]") and "agent_call planner" in out
    code, out, _ = await asyncio.to_thread(_cli, capsys, "--db", fresh_url, "tail", run_id, "--once", "--from-start")
    assert code == 0 and "#2 file_gen" in out
    code, out, _ = await asyncio.to_thread(_cli, capsys, "--db", fresh_url, "migrate", "--table-prefix", "other_")
    assert code == 0 and "table prefix 'other_'" in out
    assert {f"other_{t}" for t in OURS} <= await _tables(fresh_url)

    monkeypatch.delenv("CMBAGENT_EVENTS_TABLE_PREFIX")
    code, _, err = await asyncio.to_thread(_cli, capsys, "--db", fresh_url, "runs")  # default names: theirs
    assert code == 1 and "CMBAGENT_EVENTS_TABLE_PREFIX" in err
    code, _, err = await asyncio.to_thread(_cli, capsys, "--db", fresh_url, "--table-prefix", "Bad-", "runs")
    assert code == 1 and "CMBAGENT_EVENTS_TABLE_PREFIX must be lowercase" in err
    await _foreign_app_intact(fresh_url)


async def test_viewer_and_live_feed_follow_the_placed_tables(fresh_url) -> None:
    placement = Placement("cmbagent_")
    await _create_foreign_app(fresh_url)
    server = await start_server(fresh_url, port=0, poll_interval=0.05, placement=placement)
    try:
        async with aiohttp.ClientSession() as session:
            config = FAST.replace(table_prefix=placement.prefix)
            async with capture_run(fresh_url, config=config, hooks=False, task_description="live") as run:
                call = run.capture_agent_call("boss", "go")
                assert await run.flush()
                received: list[dict] = []

                async def follow() -> None:
                    async with session.ws_connect(f"{server.url}/ws/runs/{run.run_id}") as ws:
                        async for msg in ws:
                            received.append(json.loads(msg.data))

                client = asyncio.create_task(follow())
                for i in range(20):
                    run.capture_tool_call("boss", "step", {"i": i}, result=i)
                run.capture_agent_response("boss", "done", event_id=call)
            await asyncio.wait_for(client, 20)
            async with session.get(f"{server.url}/api/runs") as response:
                runs = await response.json()
    finally:
        await server.close()
    seqs = [e["seq"] for m in received if m["type"] == "events" for e in m["events"]]
    assert seqs == list(range(21))
    assert received[-1]["type"] == "end" and received[-1]["run"]["status"] == "completed"
    assert [r["id"] for r in runs["runs"]] == [run.run_id]


# -- the cheap path ----------------------------------------------------------------------------------------
def test_an_already_migrated_database_is_entered_without_alembic_or_sqlalchemy(fresh_url) -> None:
    """A fresh process on a current database checks one revision row with the raw driver: neither
    Alembic nor SQLAlchemy is imported by capture_run's entry, exit or the run's writes."""
    asyncio.run(migrate(fresh_url, Placement("cmbagent_")))
    probe = (
        "import asyncio, sys\n"
        "from cmbagent_events import CaptureConfig, capture_run\n"
        "async def main():\n"
        "    cfg = CaptureConfig(table_prefix='cmbagent_', buffer_size=10, flush_interval_ms=10)\n"
        "    async with capture_run(sys.argv[1], config=cfg, hooks=False) as run:\n"
        "        run.capture_message('a', 'b', 'hello')\n"
        "    return run.get_performance_stats()['total_events']\n"
        "print(asyncio.run(main()), sorted(m for m in ('alembic', 'sqlalchemy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, fresh_url], capture_output=True, text=True, timeout=120,
                            check=True)
    assert result.stdout.split() == ["1", "[]"], result.stderr
    assert asyncio.run(_sql(fresh_url, "SELECT count(*) FROM cmbagent_messages")) == [(1,)]

    fresh = fresh_url.replace("app", "new") if "sqlite" in fresh_url else None  # a new database does need Alembic
    if fresh is not None:
        result = subprocess.run([sys.executable, "-c", probe, fresh], capture_output=True, text=True, timeout=120,
                                check=True)
        assert result.stdout.split()[0] == "1" and "'alembic'" in result.stdout
