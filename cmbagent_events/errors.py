"""The package's errors: one base, :class:`CaptureError`, and a small typed hierarchy.

Callers catch ``CaptureError`` for anything this package raises on purpose. Database drivers'
own exceptions never leave a sink: each sink maps them (``raise Mapped(...) from exc``) to
:class:`DatabaseUnavailable` (not reachable now: worth reconnecting and retrying for as long as the
run lasts) or :class:`BatchRejected` (this batch cannot be stored: retried a few times, then
counted as dropped). The writer decides on the type alone, never on message text.
"""

from __future__ import annotations


class CaptureError(Exception):
    """Base of every error cmbagent-events raises on purpose."""


class ConfigError(CaptureError, ValueError):
    """A configuration value is invalid; the message names the variable and the value."""


class DatabaseURLError(CaptureError, ValueError):
    """The database URL cannot be used; the message says why and what is accepted."""


class NotACaptureDatabase(DatabaseURLError):
    """The database exists but holds no cmbagent-events tables (a reader never creates them)."""


class SchemaConflictError(DatabaseURLError):
    """The database holds tables (or an Alembic history) of another application under our names."""


class StoreError(CaptureError):
    """A database operation failed (the driver's exception is the ``__cause__``)."""


class DatabaseUnavailable(StoreError):
    """The database cannot be reached right now (refused, lost, locked, busy, read-only, full)."""


class BatchRejected(StoreError):
    """The database refused this batch for its content (constraint, type, size)."""


class DatabaseFileReplaced(StoreError):
    """The SQLite file was deleted or replaced while the run wrote to it: what the old file took
    (this batch included) is gone with it. The writer counts that and starts a new file."""


class ServeError(CaptureError, ValueError):
    """The server cannot start with these settings; the message says why and what to do."""


class RunNotFound(CaptureError, LookupError):
    """No run with that id in the database."""

    @classmethod
    def named(cls, run_id: str, several: bool) -> RunNotFound:
        """Said one way by every reader: ``run_id`` (an id or its prefix) matched no run, or ``several``."""
        if several:
            return cls(f"run {run_id!r} matches several runs: give more of it (list them with cmbagent-events runs)")
        return cls(f"no run {run_id!r} in this database (list them with cmbagent-events runs)")


class ReplayDivergence(CaptureError):
    """A replayed run asked a model for something the recorded run never asked (see replay.py):
    the message names the agent, the call and the first differing message."""

    def __init__(self, message: str, *, agent: str | None, call: int, seq: int | None, diff: str) -> None:
        super().__init__(message)
        self.agent = agent
        self.call = call  # the agent's call number, from 1
        self.seq = seq  # the recorded call's seq it was compared with, if any
        self.diff = diff


class ReplayError(CaptureError):
    """A run cannot be replayed here (nothing recorded to serve, another replay open)."""


class EventNotFound(CaptureError, LookupError):
    """No event with that id in the database (or not of the kind asked for)."""


def one_line(exc: BaseException) -> str:
    """What went wrong, in one line with a hint, for a command-line user (never a traceback).

    Covers the errors a database URL can lead to: this package's own (their message already says
    what to do), unreachable or unknown hosts, refused connections, SQLite files that cannot be
    opened, permissions; anything else is named by its type.
    """
    import socket

    cause = exc.__cause__ if isinstance(exc, StoreError) and exc.__cause__ is not None else exc
    orig = getattr(cause, "orig", None)  # SQLAlchemy wraps the driver's exception
    if isinstance(exc, CaptureError) and not isinstance(exc, StoreError):
        return str(exc)
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve the database host ({cause.strerror or cause}): check the host name in --db"
    if isinstance(cause, ConnectionRefusedError):
        return ("cannot connect to the database: connection refused (is PostgreSQL running and listening "
                "on that host and port?)")
    if isinstance(cause, TimeoutError):
        return "the database did not answer in time: check the host and port in --db"
    if isinstance(cause, PermissionError):
        return f"permission denied: {cause.filename or cause}: use a place you can write to, or another --db"
    if isinstance(cause, OSError):
        return f"cannot reach the database: {cause.strerror or cause}"
    text = str(orig if orig is not None else cause).splitlines()[0] if str(orig or cause) else ""
    name = type(orig if orig is not None else cause).__name__
    if "file is not a database" in text:
        return "that file is not an SQLite database: check the path in --db"
    if "unable to open database file" in text:
        return "cannot open the SQLite database file: check that the path and its directory exist and are readable"
    if "readonly database" in text:
        return "the SQLite database is read-only here: capture needs write access (use another --db)"
    if "password authentication failed" in text or name == "InvalidPasswordError":
        return "the database refused the user name or password in --db"
    if "does not exist" in text and name in ("InvalidCatalogNameError", "OperationalError"):
        return f"{text} (create it first, or fix the database name in --db)"
    return f"{name}: {text} (set CMBAGENT_EVENTS_DEBUG=1 for the traceback)"
