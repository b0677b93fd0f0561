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


class StoreError(CaptureError):
    """A database operation failed (the driver's exception is the ``__cause__``)."""


class DatabaseUnavailable(StoreError):
    """The database cannot be reached right now (refused, lost, locked, busy, read-only, full)."""


class BatchRejected(StoreError):
    """The database refused this batch for its content (constraint, type, size)."""


class ServeError(CaptureError, ValueError):
    """The server cannot start with these settings; the message says why and what to do."""


class RunNotFound(CaptureError, LookupError):
    """No run with that id in the database."""
