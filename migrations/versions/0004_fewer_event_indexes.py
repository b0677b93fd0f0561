"""Fewer B-trees per event: ``execution_events`` keeps its primary key and (run_id, seq) only.

Every read is per run and in ``seq`` order (the run's events, a page of them, its rollups, its
comparison with another run): (run_id, seq) serves them all. The (run_id, event_type) and
(parent_event_id) indexes each cost every insert a B-tree update for queries that read a run's
events anyway: a run's model calls and an event's children are now found within its run. On the
writer's own rows (``benchmarks.micro``'s schema ceiling, SQLite, batches of 500) inserts went from
~79k to ~105k events/s.

Revision ID: 0004_fewer_event_indexes
Revises: 0003_llm_calls
Create Date: 2026-12-06
"""

from alembic import op

from cmbagent_events.store.placement import migration_placement

revision = "0004_fewer_event_indexes"
down_revision = "0003_llm_calls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    p = migration_placement(op)
    events = p.table("execution_events")
    op.drop_index(p.index("execution_events", "run_type"), table_name=events, schema=p.schema)
    op.drop_index(p.index("execution_events", "parent"), table_name=events, schema=p.schema)


def downgrade() -> None:
    p = migration_placement(op)
    events = p.table("execution_events")
    op.create_index(p.index("execution_events", "parent"), events, ["parent_event_id"], schema=p.schema)
    op.create_index(p.index("execution_events", "run_type"), events, ["run_id", "event_type"], schema=p.schema)
