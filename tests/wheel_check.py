"""The installed wheel, as a user gets it: run by ``make test-wheel`` with the wheel's own venv
(non-editable install, no AG2) from an empty directory outside the repository.

Checks that the package comes from site-packages, carries its migrations and ``py.typed``, pulled
in no AG2, and captures a run (hooks on) into the default SQLite file of the working directory and
into a throwaway PostgreSQL; the stored rows are then read back with plain SQL. With ``--ag2``
(after installing the wheel's ``[ag2]`` extra): a real AG2 chat captured by the hooks.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sqlite3
import sys
from pathlib import Path

CHECKS: list[str] = []


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"wheel check FAILED: {what}")
    CHECKS.append(what)


async def capture(db_url: str | None) -> str:
    """One run with hooks on (no AG2 here): a few manual events, nested, then closed."""
    from cmbagent_events import capture_run

    async with capture_run(db_url, task_description="wheel check", agent="planner", hooks=True) as run:
        call = run.capture_agent_call("planner", "plan the analysis")
        run.capture_tool_call("planner", "search", {"q": "cmb"}, result="3 hits")
        run.capture_message("planner", "engineer", "run it")
        run.capture_agent_response("planner", "done", event_id=call)
        await run.flush()
        return run.run_id


def verify(rows: dict[str, object], where: str) -> None:
    check(rows["status"] == "completed", f"{where}: run row completed (got {rows['status']!r})")
    check(rows["events"] == 3, f"{where}: 3 event rows (got {rows['events']})")
    check(rows["seqs"] == [0, 1, 2], f"{where}: seq 0..2 gapless (got {rows['seqs']})")
    check(rows["messages"] == 1, f"{where}: 1 messages row (got {rows['messages']})")


def read_sqlite(path: Path, run_id: str) -> dict[str, object]:
    with sqlite3.connect(path) as db:
        return {
            "status": db.execute("SELECT status FROM workflow_runs WHERE id = ?", (run_id,)).fetchone()[0],
            "events": db.execute("SELECT count(*) FROM execution_events WHERE run_id = ?", (run_id,)).fetchone()[0],
            "seqs": [r[0] for r in db.execute("SELECT seq FROM execution_events WHERE run_id = ? ORDER BY seq",
                                              (run_id,))],
            "messages": db.execute("SELECT count(*) FROM messages WHERE run_id = ?", (run_id,)).fetchone()[0],
        }


async def read_postgres(url: str, run_id: str) -> dict[str, object]:
    import asyncpg

    db = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return {
            "status": await db.fetchval("SELECT status FROM workflow_runs WHERE id = $1", run_id),
            "events": await db.fetchval("SELECT count(*) FROM execution_events WHERE run_id = $1", run_id),
            "seqs": [r[0] for r in await db.fetch("SELECT seq FROM execution_events WHERE run_id = $1 ORDER BY seq",
                                                   run_id)],
            "messages": await db.fetchval("SELECT count(*) FROM messages WHERE run_id = $1", run_id),
        }
    finally:
        await db.close()


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def capture_ag2_chat() -> str:
    """A real two-agent AG2 chat with a tool call, driven by the scripted client shipped in the wheel."""
    from cmbagent_events import capture_run
    from cmbagent_events.testing.tool_chat import adding_pair

    user, assistant = adding_pair(2, 3)
    async with capture_run(None, task_description="wheel check with [ag2]") as run:
        user.initiate_chat(assistant, message="What is 2+3?", max_turns=3)
        return run.run_id


def main_with_ag2() -> None:
    """After ``pip install 'cmbagent_events-*.whl[ag2]'``: the extra brought classic AG2 and its hooks capture."""
    from importlib.metadata import version

    from cmbagent_events import hooks_report

    ag2 = version("ag2")
    check(ag2.startswith("0."), f"the [ag2] extra installed classic ag2 ({ag2})")
    run_id = asyncio.run(capture_ag2_chat())
    report = hooks_report()
    check(report.distribution == "ag2" and report.version == ag2 and report.transitions == "events",
          f"hooks_report names ag2 {ag2} ({report.distribution} {report.version}, {report.transitions})")
    with sqlite3.connect(Path.cwd() / "cmbagent_events.db") as db:
        kinds = dict(db.execute("SELECT event_type, count(*) FROM execution_events WHERE run_id = ? "
                                "GROUP BY event_type", (run_id,)).fetchall())
        tool = db.execute("SELECT inputs FROM execution_events WHERE run_id = ? AND event_type = 'tool_call'",
                          (run_id,)).fetchone()
    check(kinds.get("agent_call", 0) >= 4 and kinds.get("llm_call") == 2 and kinds.get("tool_call") == 1,
          f"the AG2 chat captured by the hooks (events by type: {kinds})")
    check(tool is not None and '"add"' in tool[0], f"the tool call recorded ({tool})")
    for what in CHECKS:
        print(f"ok  {what}")
    print(f"{len(CHECKS)} passed, 0 failed")


def main() -> None:
    if sys.argv[1:] == ["--ag2"]:
        return main_with_ag2()
    cwd = Path.cwd().resolve()
    import cmbagent_events

    package = Path(cmbagent_events.__file__).resolve().parent
    check("site-packages" in package.parts and not (package.parent / "pyproject.toml").exists(),
          f"cmbagent_events imported from the installed wheel ({package})")
    check((package / "py.typed").is_file(), "py.typed shipped")
    check((package / "migrations" / "versions").is_dir(), "migrations shipped inside the package")
    check(importlib.util.find_spec("autogen") is None, "installing the wheel brought no classic AG2 (`autogen`)")
    check(importlib.util.find_spec("ag2") is None, "installing the wheel brought no AG2 1.x (`ag2`)")

    logs = Collect()
    logging.getLogger("cmbagent_events").addHandler(logs)
    logging.getLogger("cmbagent_events").setLevel(logging.INFO)

    run_id = asyncio.run(capture(None))  # default URL: cmbagent_events.db in the working directory
    db_file = cwd / "cmbagent_events.db"
    check(db_file.is_file(), f"default SQLite file created in the working directory {cwd}")
    verify(read_sqlite(db_file, run_id), "SQLite")
    asyncio.run(capture(None))  # a second run: the 'no AG2' notice is not repeated

    from cmbagent_events import hooks_report

    report = hooks_report()
    check(report.distribution is None and not report.installed, f"hooks_report says no classic AG2 ({report})")
    notices = [r for r in logs.records if "no classic AG2" in r.getMessage()]
    check(len(notices) == 1 and notices[0].levelno == logging.INFO,
          f"'no classic AG2' said once at INFO (got {[(r.levelname, r.getMessage()) for r in notices]})")
    check(not [r for r in logs.records if r.levelno >= logging.WARNING],
          f"no warnings or errors logged ({[r.getMessage() for r in logs.records if r.levelno >= logging.WARNING]})")

    from cmbagent_events.testing import postgres_url

    with postgres_url(dbname="wheel_check") as url:
        check(url is not None, "PostgreSQL server binaries found for the throwaway server")
        assert url is not None
        pg_run = asyncio.run(capture(url))
        verify(asyncio.run(read_postgres(url, pg_run)), "PostgreSQL")

    for what in CHECKS:
        print(f"ok  {what}")
    print(f"{len(CHECKS)} passed, 0 failed")


if __name__ == "__main__":
    sys.exit(main())
