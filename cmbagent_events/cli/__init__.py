"""The ``cmbagent-events`` command: runs, show, cost, diff, replayable, tail, export, serve, demo, and
migrate, replay (spill files), close-orphans.

Every subcommand takes ``--db URL`` (before or after its name); the default is
``CMBAGENT_EVENTS_DB_URL``, else ``sqlite+aiosqlite:///cmbagent_events.db``. ``--table-prefix`` and
``--db-schema`` (defaults ``CMBAGENT_EVENTS_TABLE_PREFIX`` / ``CMBAGENT_EVENTS_DB_SCHEMA``) find our
tables when they live beside another application's. Read commands never
create a database: a SQLite path that does not exist is an error, not an empty file. Run ids may
be abbreviated to any unique prefix. Long operations report progress on stderr when it is a
terminal. Exit codes: 0 done, 1 failed (message on stderr), 2 bad usage.

Modules: ``main`` (options, parsing, the one-line error handling), ``commands`` (one function per
subcommand), ``reading`` (opening a database for reading, run ids, pages of events, progress).
"""

from .main import build_parser, main
from .reading import EXIT_FAIL, EXIT_OK, CliError, Progress

__all__ = ["EXIT_FAIL", "EXIT_OK", "CliError", "Progress", "build_parser", "main"]
