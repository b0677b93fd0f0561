"""Indexes for the read API: runs by start time; a run's events by type.

``ix_..._execution_events_type`` (event_type alone) served no query: every read is per run. It is
replaced by (run_id, event_type), which the cost rollups (a run's llm_call rows) and
``events(run_id, event_type=...)`` use, so the writer still maintains the same number of B-trees
per event. ``workflow_runs.started_at`` orders the run list.

Revision ID: 0002_read_indexes
Revises: 0001_initial
Create Date: 2026-12-06
"""

from alembic import op

from cmbagent_events.store.placement import migration_placement

revision = "0002_read_indexes"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    p = migration_placement(op)
    events = p.table("execution_events")
    op.drop_index(p.index("execution_events", "type"), table_name=events, schema=p.schema)
    op.create_index(p.index("execution_events", "run_type"), events, ["run_id", "event_type"], schema=p.schema)
    op.create_index(p.index("workflow_runs", "started_at"), p.table("workflow_runs"), ["started_at"],
                    schema=p.schema)


def downgrade() -> None:
    p = migration_placement(op)
    events = p.table("execution_events")
    op.drop_index(p.index("workflow_runs", "started_at"), table_name=p.table("workflow_runs"), schema=p.schema)
    op.drop_index(p.index("execution_events", "run_type"), table_name=events, schema=p.schema)
    op.create_index(p.index("execution_events", "type"), events, ["event_type"], schema=p.schema)
