"""Alembic environment: runs on a connection handed over by cmbagent_events.store.schema,
or, from the alembic CLI, on CMBAGENT_EVENTS_DB_URL (async drivers supported).

The placement (table prefix, PostgreSQL schema) comes with the connection from
``store.schema.migrate``, or from CMBAGENT_EVENTS_TABLE_PREFIX / CMBAGENT_EVENTS_DB_SCHEMA on the
command line. It names Alembic's version table too (``<prefix>alembic_version`` in the schema), so
another application's Alembic history in the same database is never read or touched.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from cmbagent_events.config import DEFAULT_DB_URL
from cmbagent_events.store.models import models_for
from cmbagent_events.store.placement import Placement

placement = context.config.attributes.get("placement")
if not isinstance(placement, Placement):
    placement = Placement.from_env()
    context.config.attributes["placement"] = placement
target_metadata = models_for(placement).Base.metadata
_options = {"target_metadata": target_metadata, "version_table": placement.version_table,
            "version_table_schema": placement.schema}


def _run(connection) -> None:
    if placement.schema:  # before Alembic creates its version table there
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {placement.schema}"))
    context.configure(connection=connection, render_as_batch=True, **_options)
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
    context.configure(url=os.environ.get("CMBAGENT_EVENTS_DB_URL", DEFAULT_DB_URL), literal_binds=True, **_options)
    with context.begin_transaction():
        context.run_migrations()
else:
    _run_from_url(os.environ.get("CMBAGENT_EVENTS_DB_URL", DEFAULT_DB_URL))
