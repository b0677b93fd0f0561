"""Captured runs: the run handle (start, then finish) and ``capture_run`` / ``capture_run_sync`` on it.

Start validates the URL (a bad one fails here, with a clear message, not later in the writer),
migrates the schema, inserts the ``workflow_runs`` row, starts the writer and makes the run the
current run (and installs the AG2 hooks when asked). Finish closes the run as ``completed``, or
``failed`` with an error event when it ended with an error (cancellation and KeyboardInterrupt
included), drains the queue within ``config.close_timeout_s`` and records ``total_events`` and
``dropped_events``. Problems on the way out are logged, never raised over the run's own outcome.

:func:`start_run` / :func:`start_run_sync` give the handle to code that cannot hold a ``with``
block open around the run (workflow callbacks: one callback starts the run, another finishes it);
the context managers are built on them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypedDict, Unpack

from ..capture import EventCaptureManager
from ..config import CaptureConfig
from ..current_run import set_event_captor
from . import signals
from .handles import RunHandle, SyncRunHandle, track_run
from .hooks import install_run_hooks
from .loop_thread import writer_loop
from .session import RunSession

__all__ = ["RunHandle", "RunOptions", "SyncRunHandle", "capture_run", "capture_run_sync", "start_run",
           "start_run_sync"]


class RunOptions(TypedDict, total=False):
    """The keyword arguments every way of opening a run takes (see :func:`capture_run`)."""

    task_description: str  # stored on the run row ("")
    mode: str  # "one_shot", "planning_and_control", ... ("one_shot")
    agent: str | None  # the run's main agent, if one
    model: str | None  # the run's main model, if one
    session_id: str  # groups runs of one session ("default")
    config: CaptureConfig | None  # None: CaptureConfig.from_env()
    hooks: bool  # install the AG2 hooks while the run is open (True)
    meta: dict[str, Any] | None  # stored on the run row, secrets redacted


async def start_run(
    db_url: str | None = None,
    **options: Unpack[RunOptions],
) -> RunHandle:
    """Open a captured run without a context run; close it with ``await handle.finish(...)``.

    The run becomes the current run (here and process-wide) and the AG2 hooks are installed
    (``hooks=False`` to skip them) until it finishes. Arguments as for :func:`capture_run`.

    Raises:
        DatabaseURLError, ConfigError: for a URL or configuration that cannot work.
    """
    session = RunSession(db_url, **options)
    loop_thread = writer_loop()  # the writer's loop: never this one, which the body may block
    run = await loop_thread.call(session.start())
    restore = set_event_captor(run)
    release = install_run_hooks() if session.hooks and run.enabled else None
    track_run(session, loop_thread)
    if session.config.handle_sigterm:
        signals.watch(id(session), run, asyncio.current_task())  # SIGTERM cancels this task, as Ctrl-C would
    return RunHandle(session, run, restore, release, loop_thread)


def start_run_sync(
    db_url: str | None = None,
    **options: Unpack[RunOptions],
) -> SyncRunHandle:
    """:func:`start_run` for synchronous code; ``handle.finish(...)`` closes the run;
    ``handle.run.flush_sync()`` is the barrier."""
    session = RunSession(db_url, **options)
    loop_thread = writer_loop()
    run = loop_thread.run(session.start())
    restore = set_event_captor(run)
    release = install_run_hooks() if session.hooks and run.enabled else None
    track_run(session, loop_thread)
    if session.config.handle_sigterm:
        signals.watch(id(session), run)
    return SyncRunHandle(session, run, restore, release, loop_thread)


@contextlib.asynccontextmanager
async def capture_run(
    db_url: str | None = None,
    **options: Unpack[RunOptions],
) -> AsyncIterator[EventCaptureManager]:
    """Capture one run: ``async with capture_run(...) as run: ...``.

    The run closes ``completed`` when the block ends, ``failed`` (with an error event) when it raises.

    Args:
        db_url: database URL; defaults to ``CMBAGENT_EVENTS_DB_URL`` or the SQLite file
            ``cmbagent_events.db``. ``postgresql+asyncpg://...`` for PostgreSQL.
        hooks: install the AG2 hooks while the run is open.
        meta: stored on the run row (secrets redacted).

    Raises:
        DatabaseURLError, ConfigError: at entry, for a URL or configuration that cannot work.
    """
    handle = await start_run(db_url, **options)
    error: BaseException | None = None
    try:
        yield handle.run
    except BaseException as exc:
        error = exc
        raise
    finally:
        await handle.finish(error=error)
        if handle.terminated:
            raise signals.Terminated() from error  # drained: now end the process as SIGTERM asked


@contextlib.contextmanager
def capture_run_sync(
    db_url: str | None = None,
    **options: Unpack[RunOptions],
) -> Iterator[EventCaptureManager]:
    """:func:`capture_run` for synchronous code.

    Use ``run.flush_sync()`` inside the block where async code would ``await run.flush()``.
    """
    handle = start_run_sync(db_url, **options)
    error: BaseException | None = None
    try:
        yield handle.run
    except BaseException as exc:
        error = exc
        raise
    finally:
        handle.finish(error=error)
