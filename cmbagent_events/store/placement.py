"""Where our tables live: a table-name prefix and (PostgreSQL) a schema.

Our tables can share a database with another application (MARS has its own ``workflow_runs``):
``CMBAGENT_EVENTS_TABLE_PREFIX=cmbagent_`` names them ``cmbagent_workflow_runs``,
``cmbagent_execution_events``, ..., their indexes ``ix_cmbagent_...`` and Alembic's version table
``cmbagent_alembic_version``; ``CMBAGENT_EVENTS_DB_SCHEMA=events`` puts all of them (version table
included) in the PostgreSQL schema ``events``, created when missing. Both may be combined. The
default (no prefix, no schema) is the plain names of docs/architecture.md ("Tables").

This module imports nothing heavy: ``capture_run``'s entry builds a placement before it knows
whether it will need SQLAlchemy at all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError

PREFIX_VAR = "CMBAGENT_EVENTS_TABLE_PREFIX"
SCHEMA_VAR = "CMBAGENT_EVENTS_DB_SCHEMA"
MAX_PREFIX = 32  # keeps our longest name (an index, 28 characters) within PostgreSQL's 63
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*\Z")  # lowercase: the same name quoted or not, on both databases
TABLES = ("workflow_runs", "execution_events", "messages", "files", "llm_calls", "llm_contents")


@dataclass(frozen=True, slots=True)
class Placement:
    """A table-name ``prefix`` and an optional PostgreSQL ``schema`` for our tables."""

    prefix: str = ""
    schema: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or (self.prefix and not _IDENTIFIER.match(self.prefix)):
            raise ConfigError(f"{PREFIX_VAR} must be lowercase letters, digits and underscores, starting with a "
                              f"letter or underscore (e.g. 'cmbagent_'), got {self.prefix!r}")
        if len(self.prefix) > MAX_PREFIX:
            raise ConfigError(f"{PREFIX_VAR} must be at most {MAX_PREFIX} characters, got {self.prefix!r}")
        if self.schema is not None and (not isinstance(self.schema, str) or not _IDENTIFIER.match(self.schema)
                                        or len(self.schema) > 63 or self.schema.startswith("pg_")):
            raise ConfigError(f"{SCHEMA_VAR} must be a lowercase PostgreSQL schema name (letters, digits, "
                              f"underscores; not pg_*), got {self.schema!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Placement:
        """The placement named by ``CMBAGENT_EVENTS_TABLE_PREFIX`` / ``CMBAGENT_EVENTS_DB_SCHEMA``."""
        return cls(prefix=environ.get(PREFIX_VAR, "").strip(), schema=environ.get(SCHEMA_VAR, "").strip() or None)

    @property
    def is_default(self) -> bool:
        return not self.prefix and self.schema is None

    def table(self, name: str) -> str:
        """Our table ``name`` (e.g. ``"workflow_runs"``) as created here, without the schema."""
        return self.prefix + name

    def index(self, table: str, suffix: str) -> str:
        """The name of an index on our ``table``: ``ix_<prefixed table>_<suffix>`` (SQLAlchemy's own
        naming for ``index=True`` columns, so models and migrations agree)."""
        return f"ix_{self.prefix}{table}_{suffix}"

    @property
    def version_table(self) -> str:
        """Alembic's version table for our migrations (another app's ``alembic_version`` stays apart)."""
        return self.prefix + "alembic_version"

    def qualified(self, name: str) -> str:
        """Our table ``name`` (unprefixed, e.g. ``"alembic_version"``) as ``schema.prefix+name`` for raw
        SQL (names are validated identifiers: no quoting needed)."""
        return f"{self.schema}.{self.prefix}{name}" if self.schema else self.prefix + name

    def describe(self) -> str:
        """For messages: how our tables are placed."""
        parts = [f"table prefix {self.prefix!r}"] if self.prefix else []
        if self.schema:
            parts.append(f"schema {self.schema!r}")
        return ", ".join(parts) or "default table names"


DEFAULT_PLACEMENT = Placement()


def migration_placement(op: object) -> Placement:
    """The placement a migration script runs for (``op`` is ``alembic.op``): the one
    ``store.schema.migrate`` hands over, else (the ``alembic`` command line) the environment's."""
    config = op.get_context().config  # type: ignore[attr-defined]
    placement = config.attributes.get("placement") if config is not None else None
    return placement if isinstance(placement, Placement) else Placement.from_env()
