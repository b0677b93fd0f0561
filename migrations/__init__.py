"""Alembic migrations of the cmbagent-events schema (shipped in the wheel as cmbagent_events.migrations)."""
