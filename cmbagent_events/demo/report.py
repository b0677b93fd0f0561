"""Reading a demo run back: its header, event tree, files and capture stats (any AG2 flavour)."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

from ..render import run_header, tree_lines
from ..store import EventRepository, WorkflowRepository, make_engine


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
        lines.append(f"({hidden} manager broadcast messages not shown; --all shows them)")
    if files:
        lines.append("files:")
        lines.extend(f"  {f.file_path} ({f.file_type}, {f.size_bytes} bytes)" for f in files)
    return lines


def stats_lines(stats: dict[str, Any]) -> list[str]:
    width = max((len(k) for k in stats), default=0)
    lines = ["capture stats:"]
    for key, value in stats.items():
        shown = f"{value:.3f}" if isinstance(value, float) else value
        lines.append(f"  {key:<{width}}  {shown}")
    return lines
