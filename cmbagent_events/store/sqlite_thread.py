"""One writer thread and one plain ``sqlite3`` connection per SQLite file, for the whole process.

Every run writing to the same file shares them: a run costs no connect, no PRAGMAs and no close,
and a batch costs one thread hop (the whole transaction runs as one call on the thread) instead
of aiosqlite's one hop per statement. The thread is a daemon, so it never holds up interpreter
exit (every batch is committed or rolled back within its call; nothing is left to finish). Batches
of several runs on one file are serialised by the thread's queue, so they never contend for the
file's write lock.

The connection is opened on the thread at its first call and dropped (and reopened at the next)
when a call fails with an error that may have broken it. When the file was deleted or replaced
since it was opened, the call fails with :class:`DatabaseFileReplaced` (what went into the old file
is gone with it: the writer counts that and starts a new file) and the next call opens the new one.
At interpreter exit the connections are closed on their threads (waited for a moment each):
closing the last connection to a file checkpoints its write-ahead log into it, so the ``.db`` file
alone holds every run (copied or shared without its ``-wal`` file, it would lack the latest ones).
A forked child starts with no threads: it opens its own. A fork waits for a call in progress to end
(``register_at_fork``): forked in the middle of a transaction, a child would inherit SQLite's
internal locks held by a thread it does not have, and hang in its first ``sqlite3.connect``.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import DatabaseFileReplaced

T = TypeVar("T")


PRAGMAS = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;"

_NONE_KEY = (type(None), sqlite3.PrepareProtocol)
_NO_ADAPTATION: dict[None, None] = {}
_as_null: Callable[[None], None] = _NO_ADAPTATION.get  # a C callable returning None: no Python frame per value


def bind_none_directly() -> None:
    """Register ``None -> None`` as the stdlib's adapter for None (unless one is registered).

    ``sqlite3`` binds str, int, float and bytearray as they are, but sends every other value, None
    included, through its adapter protocol: with no adapter registered for it, two attribute
    lookups that fail (``__adapt__``, ``__conform__``), each building an AttributeError message,
    before it binds NULL. A row holds about ten NULLs, so that was ~10% of the writer's instructions
    (callgrind). With an adapter, None costs one dict lookup and one C call (``{}.get``, which
    returns None) and is bound as NULL exactly as before, for every connection in the process.
    """
    if _NONE_KEY not in sqlite3.adapters:
        sqlite3.register_adapter(type(None), _as_null)


class SqliteThread:
    """Runs calls ``fn(connection, *args)`` one at a time on its own daemon thread."""

    def __init__(self, path: str) -> None:
        bind_none_directly()
        self.path = path
        self._calls: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file the connection opened
        self._thread = threading.Thread(target=self._serve, name=f"cmbagent-events-sqlite:{os.path.basename(path)}",
                                        daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on the thread; its result or exception comes back here."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((fn, args, loop, future))
        return await future

    def check_same_file(self) -> None:
        """On the thread, after a commit: raise :class:`DatabaseFileReplaced` when the path no longer
        names the file the connection has open (the connection is then dropped)."""
        if self._conn is not None and self._identity != _identity(self.path):
            raise DatabaseFileReplaced(f"{self.path} was deleted or replaced while the run wrote to it")

    def reset(self) -> None:
        """Drop the connection at the next call (after an error that may have broken it)."""
        self._calls.put(None)

    def close(self, timeout: float) -> bool:
        """Close the connection once the calls queued before are done (waiting up to ``timeout``
        seconds); True once closed. The next call opens it again."""
        closed = threading.Event()
        self._calls.put((_close, (closed,), None, None))
        return closed.wait(timeout)

    # -- on the thread -------------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                self._drop()
                continue
            fn, args, loop, future = item
            if fn is _close:
                self._drop()
                args[0].set()
                continue
            try:
                with _calling:
                    result = fn(self._connection(), *args)
            except BaseException as exc:  # the caller decides (retry, reconnect, drop)
                if not isinstance(exc, sqlite3.IntegrityError):  # a row problem leaves the connection sound
                    self._drop()
                _reply(loop, future, None, exc)
            else:
                _reply(loop, future, result, None)

    def _connection(self) -> sqlite3.Connection:
        self.check_same_file()  # between batches too: writing on would go nowhere visible
        if self._conn is None:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            try:
                conn.executescript(PRAGMAS)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            self._identity = _identity(self.path)
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._identity = None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass


def _close(closed: threading.Event) -> None:
    """The item that asks a thread to close its connection (:meth:`SqliteThread.close`)."""


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _reply(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any,
           error: BaseException | None) -> None:
    def settle() -> None:
        if future.done():  # the caller was cancelled (e.g. a close timeout): nobody is waiting
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the caller's loop is closed: nobody is waiting
        pass


_threads: dict[str, SqliteThread] = {}
_threads_lock = threading.Lock()
_calling = threading.Lock()  # held by a writer thread while SQLite runs its call; a fork waits for it


def sqlite_thread(path: str) -> SqliteThread:
    """The process's writer thread for the SQLite file at ``path`` (started on first use)."""
    key = os.path.realpath(path)
    thread = _threads.get(key)
    if thread is None:
        with _threads_lock:
            thread = _threads.get(key)
            if thread is None:
                thread = _threads[key] = SqliteThread(key)
    return thread


CLOSE_AT_EXIT_S = 2.0  # how long interpreter exit waits for each file's connection to close


def close_all() -> None:
    """Close every file's connection (at interpreter exit: each checkpoints its write-ahead log)."""
    for thread in list(_threads.values()):
        thread.close(CLOSE_AT_EXIT_S)


atexit.register(close_all)


def _forget_after_fork() -> None:
    """A forked child has the parent's objects but not its threads: it starts its own."""
    global _threads_lock, _calling
    _threads.clear()
    _threads_lock, _calling = threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_calling.acquire, after_in_parent=_calling.release,
                        after_in_child=_forget_after_fork)
