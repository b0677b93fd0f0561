"""Initial schema: workflow_runs, execution_events, messages, files.

Table and index names follow the run's placement (prefix, schema): see
cmbagent_events/store/placement.py. Every later migration names its tables the same way.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25
"""

from alembic import op
import sqlalchemy as sa

from cmbagent_events.store.placement import migration_placement

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    p = migration_placement(op)
    schema = p.schema
    op.create_table(
        p.table("workflow_runs"),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("task_description", sa.Text()),
        sa.Column("mode", sa.String(64)),
        sa.Column("agent", sa.String(256)),
        sa.Column("model", sa.String(256)),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("started_at", TS),
        sa.Column("completed_at", TS),
        sa.Column("total_events", sa.Integer(), nullable=False),
        sa.Column("dropped_events", sa.Integer(), nullable=False),
        sa.Column("meta", sa.JSON()),
        schema=schema,
    )
    op.create_index(p.index("workflow_runs", "session_id"), p.table("workflow_runs"), ["session_id"], schema=schema)
    op.create_table(
        p.table("execution_events"),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("node_id", sa.String(256)),
        sa.Column("step_id", sa.String(256)),
        sa.Column("parent_event_id", sa.String(64)),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("event_subtype", sa.String(64)),
        sa.Column("agent_name", sa.String(256)),
        sa.Column("execution_order", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("inputs", sa.JSON()),
        sa.Column("outputs", sa.JSON()),
        sa.Column("error_message", sa.Text()),
        sa.Column("status", sa.String(32)),
        sa.Column("timestamp", TS, nullable=False),
        sa.Column("completed_at", TS),
        sa.Column("duration_ms", sa.Float()),
        sa.Column("meta", sa.JSON()),
        schema=schema,
    )
    op.create_index(p.index("execution_events", "run_seq"), p.table("execution_events"), ["run_id", "seq"], schema=schema)
    op.create_index(p.index("execution_events", "parent"), p.table("execution_events"), ["parent_event_id"], schema=schema)
    op.create_index(p.index("execution_events", "type"), p.table("execution_events"), ["event_type"], schema=schema)
    op.create_table(
        p.table("messages"),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(64)),
        sa.Column("node_id", sa.String(256)),
        sa.Column("step_id", sa.String(256)),
        sa.Column("sender", sa.String(256)),
        sa.Column("recipient", sa.String(256)),
        sa.Column("content", sa.Text()),
        sa.Column("tokens", sa.Integer()),
        sa.Column("timestamp", TS, nullable=False),
        schema=schema,
    )
    op.create_index(p.index("messages", "run_id"), p.table("messages"), ["run_id"], schema=schema)
    op.create_index(p.index("messages", "event_id"), p.table("messages"), ["event_id"], schema=schema)
    op.create_table(
        p.table("files"),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(64)),
        sa.Column("node_id", sa.String(256)),
        sa.Column("step_id", sa.String(256)),
        sa.Column("file_path", sa.Text(), nullable=False),
        sa.Column("file_type", sa.String(64)),
        sa.Column("size_bytes", sa.BigInteger()),
        sa.Column("created_at", TS, nullable=False),
        schema=schema,
    )
    op.create_index(p.index("files", "run_id"), p.table("files"), ["run_id"], schema=schema)
    op.create_index(p.index("files", "event_id"), p.table("files"), ["event_id"], schema=schema)


def downgrade() -> None:
    p = migration_placement(op)
    for table in ("files", "messages", "execution_events", "workflow_runs"):
        op.drop_table(p.table(table), schema=p.schema)
