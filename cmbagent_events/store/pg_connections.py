"""PostgreSQL connections kept for the next run on the same event loop and database.

Connecting costs a run 5-9 ms on its loop, and a fresh connection's first batch ~7 ms more
(statement prepares, COPY's column introspection); a reused one has its prepared statements
already. asyncpg connections belong to the loop that made them, so idle ones are kept per loop
(weakly: a loop that is gone takes its pool with it) and per DSN, at most ``MAX_IDLE`` each.

A pool closes its connections when its loop shuts down: it holds an async generator that the loop
finalises in ``shutdown_asyncgens()`` (``asyncio.run`` and pytest-asyncio call it; so does the
loop thread of synchronous runs), so no connection is left for the garbage collector to warn about.
A connection that failed, or is inside a transaction, is never kept.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncIterator
from typing import Any

MAX_IDLE = 4  # idle connections kept per loop and database


class _LoopPool:
    def __init__(self) -> None:
        self.idle: dict[str, list[Any]] = {}
        self.closer: AsyncIterator[None] | None = None  # finalised by the loop's shutdown_asyncgens()

    def terminate_all(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                conn.terminate()
        self.idle.clear()


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPool] = weakref.WeakKeyDictionary()


async def _close_at_shutdown(pool: _LoopPool) -> AsyncIterator[None]:
    try:
        yield
    finally:
        pool.terminate_all()


async def acquire(dsn: str) -> Any:
    """An open connection to ``dsn``: an idle one of this loop's, else a new one."""
    pool = _pools.get(asyncio.get_running_loop())
    if pool is not None:
        conns = pool.idle.get(dsn)
        while conns:
            conn = conns.pop()
            if not conn.is_closed():
                return conn
    import asyncpg

    return await asyncpg.connect(dsn)


async def release(dsn: str, conn: Any, *, healthy: bool) -> None:
    """Keep ``conn`` for the next run on this loop, or drop it (failed, busy, or enough kept)."""
    if not healthy or conn.is_closed() or conn.is_in_transaction():
        conn.terminate()
        return
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        pool = _pools[loop] = _LoopPool()
        pool.closer = _close_at_shutdown(pool)
        await pool.closer.__anext__()  # registers it with the loop's async generator hooks
    conns = pool.idle.setdefault(dsn, [])
    if len(conns) >= MAX_IDLE:
        conn.terminate()
        return
    conns.append(conn)


_inherited: list[Any] = []  # a forked child's copies of its parent's pools: kept, never used or closed


def _forget_after_fork() -> None:
    """A forked child must not talk on (or close) its parent's sockets: it sets them aside."""
    _inherited.append(dict(_pools))
    _pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
