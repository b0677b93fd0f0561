"""Alembic environment: runs on a connection handed over by cmbagent_events.store.schema,
or, from the alembic CLI, on CMBAGENT_EVENTS_DB_URL (async drivers supported)."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from cmbagent_events.config import DEFAULT_DB_URL
from cmbagent_events.store.models import Base

target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_from_url(url: str) -> None:
    async def go() -> None:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(_run)
        await engine.dispose()

    asyncio.run(go())


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
elif context.is_offline_mode():
    context.configure(url=os.environ.get("CMBAGENT_EVENTS_DB_URL", DEFAULT_DB_URL), target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    _run_from_url(os.environ.get("CMBAGENT_EVENTS_DB_URL", DEFAULT_DB_URL))
