"""Model calls in full: ``llm_calls`` (one row per llm_call event) and ``llm_contents`` (each distinct
message, tool list and response of a run, stored once, numbered in the run by ``ordinal``).

A group chat re-sends its whole history with every model call; storing each request whole would grow
with the square of the run's length. A request is stored as the list of its messages' ordinals (a few
bytes each); a content's ``hash`` tells the writer, and replay, a content seen before.

Revision ID: 0003_llm_calls
Revises: 0002_read_indexes
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from cmbagent_events.store.placement import migration_placement

revision = "0003_llm_calls"
down_revision = "0002_read_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    p = migration_placement(op)
    op.create_table(
        p.table("llm_calls"),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(256)),
        sa.Column("messages", sa.JSON()),
        sa.Column("tools", sa.Integer()),
        sa.Column("params", sa.JSON()),
        sa.Column("response", sa.Integer()),
        sa.Column("replayable", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text()),
        schema=p.schema,
    )
    op.create_index(p.index("llm_calls", "run_id"), p.table("llm_calls"), ["run_id"], schema=p.schema)
    op.create_table(
        p.table("llm_contents"),
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("ordinal", sa.Integer(), primary_key=True),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("cut", sa.Integer(), nullable=False),
        schema=p.schema,
    )


def downgrade() -> None:
    p = migration_placement(op)
    op.drop_table(p.table("llm_contents"), schema=p.schema)
    op.drop_index(p.index("llm_calls", "run_id"), table_name=p.table("llm_calls"), schema=p.schema)
    op.drop_table(p.table("llm_calls"), schema=p.schema)
