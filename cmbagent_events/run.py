"""Captured runs: the run handle (start, then finish) and ``capture_run`` / ``capture_run_sync`` on it.

Start validates the URL (a bad one fails here, with a clear message, not later in the writer),
migrates the schema, inserts the ``workflow_runs`` row, starts the writer and makes the run the
current captor (and installs the AG2 hooks when asked). Finish closes the run as ``completed``, or
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
from typing import Any

from . import signals
from .captor import set_event_captor
from .capture import EventCaptureManager
from .config import CaptureConfig
from .run_handles import RunHandle, SyncRunHandle, track_run, writer_loop
from .run_session import RunSession, install_run_hooks

__all__ = ["RunHandle", "SyncRunHandle", "capture_run", "capture_run_sync", "start_run", "start_run_sync"]


async def start_run(
    db_url: str | None = None,
    *,
    task_description: str = "",
    mode: str = "one_shot",
    agent: str | None = None,
    model: str | None = None,
    session_id: str = "default",
    config: CaptureConfig | None = None,
    hooks: bool = True,
    meta: dict[str, Any] | None = None,
) -> RunHandle:
    """Open a captured run without a context manager; close it with ``await handle.finish(...)``.

    The run becomes the current captor (here and process-wide) and the AG2 hooks are installed
    (``hooks=False`` to skip them) until it finishes. Arguments as for :func:`capture_run`.

    Raises:
        DatabaseURLError, ConfigError: for a URL or configuration that cannot work.
    """
    session = RunSession(db_url, task_description=task_description, mode=mode, agent=agent, model=model,
                          session_id=session_id, config=config, meta=meta)
    loop_thread = writer_loop()  # the writer's loop: never this one, which the body may block
    manager = await loop_thread.call(session.start())
    restore = set_event_captor(manager)
    release = install_run_hooks() if hooks and manager.enabled else None
    track_run(session, loop_thread)
    if session.config.handle_sigterm:
        signals.watch(id(session), manager, asyncio.current_task())  # SIGTERM cancels this task, as Ctrl-C would
    return RunHandle(session, manager, restore, release, loop_thread)


def start_run_sync(
    db_url: str | None = None,
    *,
    task_description: str = "",
    mode: str = "one_shot",
    agent: str | None = None,
    model: str | None = None,
    session_id: str = "default",
    config: CaptureConfig | None = None,
    hooks: bool = True,
    meta: dict[str, Any] | None = None,
) -> SyncRunHandle:
    """:func:`start_run` for synchronous code; ``handle.finish(...)`` closes the run;
    ``handle.run.flush_sync()`` is the barrier."""
    session = RunSession(db_url, task_description=task_description, mode=mode, agent=agent, model=model,
                          session_id=session_id, config=config, meta=meta)
    loop_thread = writer_loop()
    manager = loop_thread.run(session.start())
    restore = set_event_captor(manager)
    release = install_run_hooks() if hooks and manager.enabled else None
    track_run(session, loop_thread)
    if session.config.handle_sigterm:
        signals.watch(id(session), manager)
    return SyncRunHandle(session, manager, restore, release, loop_thread)


@contextlib.asynccontextmanager
async def capture_run(
    db_url: str | None = None,
    *,
    task_description: str = "",
    mode: str = "one_shot",
    agent: str | None = None,
    model: str | None = None,
    session_id: str = "default",
    config: CaptureConfig | None = None,
    hooks: bool = True,
    meta: dict[str, Any] | None = None,
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
    handle = await start_run(db_url, task_description=task_description, mode=mode, agent=agent, model=model,
                             session_id=session_id, config=config, hooks=hooks, meta=meta)
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
    *,
    task_description: str = "",
    mode: str = "one_shot",
    agent: str | None = None,
    model: str | None = None,
    session_id: str = "default",
    config: CaptureConfig | None = None,
    hooks: bool = True,
    meta: dict[str, Any] | None = None,
) -> Iterator[EventCaptureManager]:
    """:func:`capture_run` for synchronous code.

    Use ``run.flush_sync()`` inside the block where async code would ``await run.flush()``.
    """
    handle = start_run_sync(db_url, task_description=task_description, mode=mode, agent=agent, model=model,
                            session_id=session_id, config=config, hooks=hooks, meta=meta)
    error: BaseException | None = None
    try:
        yield handle.run
    except BaseException as exc:
        error = exc
        raise
    finally:
        handle.finish(error=error)
