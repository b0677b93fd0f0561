"""The cmbagent-events command against real databases: runs, show, export, migrate, tail, serve, demo."""

from __future__ import annotations

import asyncio
import json
import sys
import types
from pathlib import Path

import pytest
from sqlalchemy import inspect

from cmbagent_events import CaptureConfig, capture_run, make_engine
from cmbagent_events.cli import main
from cmbagent_events.render import event_json
from cmbagent_events.store.reader import RunReader

FAST = CaptureConfig(buffer_size=10, flush_interval_ms=10)


async def _small_run(db_url: str, task: str = "cli test run") -> str:
    async with capture_run(db_url, config=FAST, hooks=False, task_description=task) as run:
        call = run.capture_agent_call("planner", "plan")
        run.capture_tool_call("planner", "lookup", {"q": "x"}, result="found")
        run.capture_message("planner", "engineer", "go ahead")
        run.capture_handoff("planner", "engineer", reason="ready")
        run.capture_file_generation("engineer", "out/a.png", "png", 10)
        run.capture_error("engineer", "it broke", "RuntimeError")
        run.capture_agent_response("planner", "finished", event_id=call)
    return run.run_id


def _run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_migrate_creates_the_schema(db_url, capsys) -> None:
    code, out, err = await asyncio.to_thread(_run_cli, capsys, "--db", db_url, "migrate")
    assert code == 0 and "schema is up to date" in out and "migrating" in err
    engine = make_engine(db_url)
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    assert {"workflow_runs", "execution_events", "messages", "files"} <= tables


async def test_runs_show_and_export(db_url, capsys, tmp_path: Path) -> None:
    run_id = await _small_run(db_url)
    code, out, _ = await asyncio.to_thread(_run_cli, capsys, "runs", "--db", db_url, "--limit", "500")
    assert code == 0 and run_id in out and "cli test run" in out and "completed" in out
    code, out, _ = await asyncio.to_thread(_run_cli, capsys, "--db", db_url, "runs", "--json", "--limit", "500")
    rows = {r["id"]: r for r in map(json.loads, out.splitlines())}
    assert rows[run_id]["total_events"] == 6

    code, out, _ = await asyncio.to_thread(_run_cli, capsys, "--db", db_url, "show", run_id[:18])  # a prefix
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"run {run_id} [completed]") and "6 events, 0 dropped" in lines[0]
    assert lines[1] == "task: cli test run"
    assert lines[2].startswith("└─ #0 agent_call planner (done") and "finished" in lines[2]
    assert lines[3].startswith("   ├─ #1 tool_call lookup(") and lines[-1].startswith("   └─ #5 error RuntimeError")

    code, out, err = await asyncio.to_thread(_run_cli, capsys, "--db", db_url, "export", run_id)
    assert code == 0 and f"exported 6 events of run {run_id}" in err
    exported = [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in exported] == list(range(6))
    assert exported[0]["outputs"] == {"response": "finished"} and exported[1]["parent_event_id"] == exported[0]["id"]
    engine = make_engine(db_url)
    stored = await RunReader(engine).events_after(run_id, -1)
    await engine.dispose()
    assert out.splitlines() == [event_json(e) for e in stored]  # exactly render.event_json, one per line

    target = tmp_path / "run.jsonl"
    code, out, _ = await asyncio.to_thread(_run_cli, capsys, "--db", db_url, "export", run_id, "-o", str(target))
    assert code == 0 and out == "" and len(target.read_text().splitlines()) == 6


async def test_errors_are_one_line_and_nothing_is_created(tmp_path: Path, sqlite_url, capsys, monkeypatch) -> None:
    missing = tmp_path / "nope.db"
    code, _, err = await asyncio.to_thread(_run_cli, capsys, "--db", f"sqlite+aiosqlite:///{missing}", "runs")
    assert code == 1 and "no database at" in err and not missing.exists()
    await _small_run(sqlite_url)
    code, _, err = await asyncio.to_thread(_run_cli, capsys, "--db", sqlite_url, "show", "ffffffff")
    assert code == 1 and "no run 'ffffffff'" in err
    a, b = await _small_run(sqlite_url), await _small_run(sqlite_url)
    both = a[:next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)]  # (ids start with their time: shared)
    for command in ("show", "cost"):  # one wording, whichever reader answers
        code, _, err = await asyncio.to_thread(_run_cli, capsys, "--db", sqlite_url, command, both)
        assert code == 1 and f"run {both!r} matches several runs: give more of it" in err, err
    code, _, err = await asyncio.to_thread(_run_cli, capsys, "--db", "mysql://x/y", "runs")
    assert code == 1 and "unsupported database backend" in err
    monkeypatch.setenv("CMBAGENT_EVENTS_DB_URL", "mysql://x/y")  # the same, from the environment: said so
    code, _, err = await asyncio.to_thread(_run_cli, capsys, "runs")
    assert code == 1 and "unsupported database backend" in err and "(from CMBAGENT_EVENTS_DB_URL)" in err
    code, _, err = await asyncio.to_thread(_run_cli, capsys, "--db", sqlite_url, "serve", "--host", "0.0.0.0")
    assert code == 1 and "refusing to serve" in err and "--token" in err


async def test_tail_once_prints_the_latest_run_and_exits(sqlite_url, capsys, monkeypatch) -> None:
    await _small_run(sqlite_url, "older")
    newest = await _small_run(sqlite_url, "newest")
    monkeypatch.setenv("CMBAGENT_EVENTS_DB_URL", sqlite_url)  # the default when --db is not given
    code, out, _ = await asyncio.to_thread(_run_cli, capsys, "tail", "--once", "-n", "3")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith(f"run {newest} [completed]")
    assert [line.split()[0] for line in lines[1:]] == ["#3", "#4", "#5"]  # the last 3, indented by depth
    assert lines[-1].startswith("  #5 error RuntimeError")


async def test_tail_follows_a_live_run_from_another_process(db_url) -> None:
    async with capture_run(db_url, config=FAST, hooks=False, task_description="tailed") as run:
        for i in range(5):
            run.capture_message("a", "b", f"before {i}")
        assert await run.flush()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cmbagent_events.cli", "--db", db_url, "tail", run.run_id[:20], "--from-start",
            "--timeout", "60", "--poll", "0.05",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        first = await asyncio.wait_for(proc.stdout.readline(), 30)  # the header: tail is up
        assert first.decode().startswith(f"run {run.run_id} [running]")
        for i in range(5, 40):
            run.capture_message("a", "b", f"live {i}")
            await asyncio.sleep(0.01)
        call = run.capture_agent_call("c", "late call")
        assert await run.flush()
        await asyncio.sleep(0.3)
        run.capture_agent_response("c", "late answer", event_id=call)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    seqs = [int(line.split()[0][1:]) for line in lines if line.lstrip().startswith("#") and "completed:" not in line]
    assert seqs == list(range(41))  # every event once, in order
    assert any("live 39" in line for line in lines)
    assert any(line.startswith("#40 completed: agent_call c (done") for line in lines)
    assert lines[-1] == "-- run ended: completed --"


def test_demo_is_imported_lazily_and_gets_its_arguments(monkeypatch) -> None:
    calls: list = []
    fake = types.ModuleType("cmbagent_events.demo")
    fake.main = lambda argv: calls.append((argv, __import__("os").environ.get("CMBAGENT_EVENTS_DB_URL"))) or 0
    monkeypatch.setitem(sys.modules, "cmbagent_events.demo", fake)
    monkeypatch.delenv("CMBAGENT_EVENTS_DB_URL", raising=False)
    assert main(["demo", "--turns", "3", "--db", "sqlite+aiosqlite:///x.db"]) == 0
    assert calls[-1] == (["--turns", "3", "--db", "sqlite+aiosqlite:///x.db"], None)
    assert main(["--db", "sqlite+aiosqlite:///y.db", "demo"]) == 0
    assert calls[-1] == ([], "sqlite+aiosqlite:///y.db")


def test_cli_module_does_not_import_the_server_or_the_demo_up_front() -> None:
    import subprocess

    code = ("import sys, cmbagent_events.cli; "
            "print(any(m.startswith(('aiohttp', 'cmbagent_events.demo', 'cmbagent_events.live'))"
            " for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("argv", [["--help"], ["tail", "--help"], ["serve", "--help"]])
def test_help(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0 and "usage: cmbagent-events" in capsys.readouterr().out


async def test_serve_runs_as_its_own_process_and_stops_on_sigterm(sqlite_url) -> None:
    import re
    import signal

    import aiohttp

    run_id = await _small_run(sqlite_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cmbagent_events.cli", "--db", sqlite_url, "serve", "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        banner = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        url = re.search(r"http://127\.0\.0\.1:\d+", banner).group(0)
        async with aiohttp.ClientSession() as session, session.get(f"{url}/api/runs") as resp:
            assert resp.status == 200 and run_id in {r["id"] for r in (await resp.json())["runs"]}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert "stopping" in out.decode()


async def test_cli_output_escapes_terminal_control_characters(sqlite_url, capsys) -> None:
    evil = "\x1b[2J\x1b]0;pwned\x07\rfake line\u202e"
    async with capture_run(sqlite_url, config=FAST, hooks=False, task_description=f"task {evil}", mode=evil) as run:
        run.capture_message(f"agent{evil}", "b", f"hello {evil}")
        run.capture_error("x", f"boom {evil}", "Err")
    for argv in (["show", run.run_id], ["runs"], ["tail", run.run_id, "--once"]):
        code, out, _ = await asyncio.to_thread(_run_cli, capsys, "--db", sqlite_url, *argv)
        assert code == 0, argv
        assert not any(c in out for c in "\x1b\x07\r\u202e"), (argv, out)
        assert "\\x1b[2J" in out, argv


@pytest.mark.parametrize("db", [
    "sqlite+aiosqlite:///{tmp}",                                       # a directory given as the database
    "postgresql+asyncpg://u:p@127.0.0.1:{free_port}/db",               # nothing listens there
    "postgresql+asyncpg://u:p@no-such-host.invalid:5432/db",           # a host that does not resolve
])
@pytest.mark.parametrize("command", [["runs"], ["show", "abc"], ["export", "abc"], ["tail", "abc", "--once"]])
def test_database_problems_are_one_line_with_a_hint(db: str, command: list[str], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    url = db.format(tmp=tmp_path, free_port=free_port)
    assert main(["--db", url, *command]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cmbagent-events: ") and "Traceback" not in err
    assert any(hint in err for hint in ("is a directory", "connection refused", "cannot resolve")), err
    assert not list(tmp_path.glob("*.migrate.lock")) and not list(tmp_path.parent.glob(f"{tmp_path.name}.migrate.lock"))


async def test_show_of_a_big_run_reads_it_in_pages_and_prints_every_event(sqlite_url, capsys, monkeypatch) -> None:
    """A run over the tree bound is streamed: every read asks for one page at most (memory bounded, it
    loaded the whole run before), and every event is printed in seq order, indented by depth."""
    from cmbagent_events import CaptureConfig, capture_run
    from cmbagent_events.cli import commands
    from cmbagent_events.store.reader import RunReader

    monkeypatch.setattr(commands, "SHOW_TREE_MAX", 1_000)
    async with capture_run(sqlite_url, config=CaptureConfig(buffer_size=500), hooks=False) as run:
        for i in range(2_500):
            call = run.capture_agent_call("worker", f"step {i}")
            run.capture_tool_call("worker", "tool", {"i": i}, result=i)
            run.capture_agent_response("worker", "ok", event_id=call)
    reads: list[int] = []
    original = RunReader.events_after

    async def counted(self, run_id, after_seq, limit=500, upto_seq=None):
        reads.append(limit)
        return await original(self, run_id, after_seq, limit, upto_seq)

    monkeypatch.setattr(RunReader, "events_after", counted)
    code, out, _ = await asyncio.to_thread(_run_cli, capsys, "--db", sqlite_url, "show", run.run_id)
    assert code == 0
    lines = [line for line in out.splitlines() if line.lstrip().startswith("#")]
    assert [int(line.split()[0][1:]) for line in lines] == list(range(5_000))
    assert all(line.startswith("  #") for line in lines if "tool_call" in line)  # nested under its call
    assert max(reads) <= 2_000 and len(reads) == -(-5_000 // 2_000)  # pages of 2,000: never the whole run


async def test_show_full_prints_an_errors_traceback(sqlite_url, capsys) -> None:
    from cmbagent_events import CaptureConfig, capture_run

    def integrate_spectrum() -> None:
        raise ZeroDivisionError("empty multipole range")

    async with capture_run(sqlite_url, config=CaptureConfig(), hooks=False) as run:
        try:
            integrate_spectrum()
        except ZeroDivisionError as exc:
            assert run.capture_exception("analyst", exc, "step 2") is not None
            assert run.capture_exception("analyst", exc, "step 2 again") is None  # one event per exception
    code, out, _ = await asyncio.to_thread(_run_cli, capsys, "--db", sqlite_url, "show", run.run_id, "--full")
    assert code == 0
    assert "error ZeroDivisionError in analyst: empty multipole range" in out
    assert "Traceback (most recent call last):" in out and "in integrate_spectrum" in out
    code, out, _ = await asyncio.to_thread(_run_cli, capsys, "--db", sqlite_url, "show", run.run_id)
    assert code == 0 and "Traceback" not in out


@pytest.mark.parametrize("argv, message", [
    (["runs", "--bogus"], "cmbagent-events: unrecognized arguments: --bogus (see cmbagent-events --help)"),
    (["show"], "cmbagent-events: the following arguments are required: RUN_ID (see cmbagent-events show --help)"),
    (["cost", "abc", "--by", "planet"], "cmbagent-events: argument --by: invalid choice: 'planet'"),
    (["nosuchcommand"], "cmbagent-events: argument COMMAND: invalid choice: 'nosuchcommand'"),
    (["runs", "--limit", "-2"], "cmbagent-events: argument --limit: must be 1 or more, got -2"),
    (["show", "abc", "--limit", "0"], "cmbagent-events: argument --limit: must be 1 or more, got 0"),
    (["runs", "--offset", "x"], "cmbagent-events: argument --offset: not a whole number: 'x'"),
    (["runs", "--since", "yesterday"], "cmbagent-events: argument --since: not an ISO date or time: 'yesterday'"),
])
def test_usage_errors_are_one_line_with_a_hint_and_exit_1(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    assert exc.value.code == 1 and captured.out == ""
    assert len(captured.err.splitlines()) == 1 and captured.err.startswith(message)
    assert "usage:" not in captured.err and "--help)" in captured.err


def test_usage_errors_of_the_installed_command(tmp_path: Path) -> None:
    import subprocess

    script = Path(sys.executable).with_name("cmbagent-events")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cmbagent_events.cli"]
    for argv in (["tail", "--nope"], ["diff", "onlyone"], ["demo", "--mode", "nosuchmode"]):
        done = subprocess.run(command + argv, check=False, capture_output=True, text=True, cwd=tmp_path,
                              timeout=120)
        assert done.returncode == 1 and done.stdout == "", (argv, done)
        assert len(done.stderr.splitlines()) == 1 and "usage:" not in done.stderr, (argv, done.stderr)
        assert done.stderr.startswith("cmbagent-events") and "--help)" in done.stderr, (argv, done.stderr)


async def test_a_file_the_command_reads_or_writes_is_named_not_the_database(sqlite_url, capsys,
                                                                           tmp_path: Path) -> None:
    async with capture_run(sqlite_url, hooks=False) as run:
        run.capture_message("a", "b", "hello")
    missing = tmp_path / "no" / "such" / "dir" / "events.jsonl"
    for argv, told in ((["export", run.run_id, "-o", str(missing)], f"cannot use {missing}: No such file"),
                       (["export", run.run_id, "-o", str(tmp_path)], f"cannot use {tmp_path}: Is a directory"),
                       (["replay", run.run_id], f"no spill file {run.run_id!r}")):
        code, out, err = await asyncio.to_thread(_run_cli, capsys, "--db", sqlite_url, *argv)
        assert code == 1 and out == "" and len(err.splitlines()) == 1, err
        assert err.startswith(f"cmbagent-events: {told}"), err
        assert "database" not in err.replace("replay", "")
