"""Reading a demo run back: its header, event tree, files and capture stats (any AG2 flavour)."""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

from ..config import env_db_url
from ..render import run_header, tree_lines
from ..store.database import make_engine
from ..store.repositories import EventRepository, WorkflowRepository


@dataclasses.dataclass
class Outcome:
    run_id: str | None
    stats: dict[str, Any]
    progress: list[str]
    error: BaseException | None = None


async def report_lines(db_url: str, run_id: str, session_id: str = "default", *,
                       broadcasts: bool = False) -> list[str]:
    """The stored run: header, event tree and files, read back from the database.

    A GroupChatManager re-sends every message to each other member; those broadcast rows (meta
    ``broadcast``) are left out of the tree unless ``broadcasts`` (the header still counts them).
    """
    engine = make_engine(db_url)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            row = await WorkflowRepository(session, session_id).get_run(run_id)
            repo = EventRepository(session, session_id)
            events = list(await repo.list_events(run_id))
            files = await repo.list_files(run_id)
    finally:
        await engine.dispose()
    hidden = 0
    if not broadcasts:
        shown = [e for e in events if not (isinstance(e.meta, dict) and e.meta.get("broadcast"))]
        hidden, events = len(events) - len(shown), shown
    lines = [run_header(row) if row is not None else f"run {run_id} (not found)", *tree_lines(events)]
    if hidden:
        where = "" if db_url == env_db_url() else f" --db {shlex.quote(db_url)}"  # (the CLI's default)
        lines.append(f"({hidden} manager broadcast messages not shown: run the demo with --all, or "
                     f"`cmbagent-events{where} show {run_id}` to see every event)")
    if files:
        lines.append("files:")
        lines.extend(f"  {f.file_path} ({f.file_type}, {f.size_bytes} bytes)" for f in files)
    return lines


# What the demo reports of ``get_performance_stats()``, read once the run has closed (so the final
# drain is counted), each with what it means.
STATS_SHOWN = (
    ("total_events", "events captured"),
    ("dropped_events", "events lost (queue full or database gone), 0 when nothing was lost"),
    ("records_written", "rows written: events plus agent-call completions applied as updates"),
    ("batches_written", "transactions the writer committed"),
    ("queue_high_water", "most events ever waiting in the queue"),
    ("avg_capture_time_us", "mean cost of one capture call, us (timed on 1 call in 64)"),
    ("reconnects", "times the writer reconnected to the database"),
    ("spilled_events", "events kept in a spill file because the database never came back"),
    ("last_error", "the writer's last error, if any"),
)


def stats_lines(stats: dict[str, Any]) -> list[str]:
    width = max(len(key) for key, _ in STATS_SHOWN)
    lines = ["capture stats (after the run closed):"]
    for key, meaning in STATS_SHOWN:
        value = stats.get(key)
        if key in ("spilled_events", "reconnects", "last_error") and not value:
            continue  # only worth a line when something happened
        shown = f"{value:.3f}" if isinstance(value, float) else value
        lines.append(f"  {key:<{width}}  {shown!s:<10} {meaning}")
    return lines
