"""What a run stored, read back: its row and the seqs of its events (for checks that nothing was lost or doubled)."""

from __future__ import annotations

from typing import Any


async def stored_run(db_url: str, run_id: str) -> tuple[Any, list[int]]:
    """The ``workflow_runs`` row of ``run_id`` (a ``WorkflowRun``, None when absent) and the sorted seqs of
    its stored events, read through an engine of its own (disposed after)."""
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from ..store.database import make_engine
    from ..store.models import ExecutionEvent, WorkflowRun

    engine = make_engine(db_url)
    try:
        async with async_sessionmaker(engine)() as session:
            row = await session.get(WorkflowRun, run_id)
            seqs = (await session.scalars(select(ExecutionEvent.seq).where(ExecutionEvent.run_id == run_id))).all()
            return row, sorted(seqs)
    finally:
        await engine.dispose()
