"""Wake-ups for readers in another process: "run X has new commits".

- PostgreSQL: the sink sends ``pg_notify('cmbagent_events', '{"run_id": ..., "max_seq": ...}')``
  inside each batch's transaction (delivered at commit). :class:`PgNotifier` keeps one LISTEN
  connection per process and wakes the watches of that run; it reconnects if the connection drops,
  and watches still wake on a fallback timer meanwhile, so a lost notification only delays.
- SQLite has no notifications: :class:`PollNotifier` watches simply wake every ``poll_interval``
  and the reader polls on ``seq`` (an indexed range query, cheap at that rate).

A watch is set up before the reader's first query and cleared before each read, so a commit that
lands between a read and the next wait is never slept through.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Protocol

CHANNEL = "cmbagent_events"
log = logging.getLogger("cmbagent_events.live")


class Watch(Protocol):
    def clear(self) -> None: ...
    async def wait(self) -> None: ...
    def close(self) -> None: ...


class Notifier(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def watch(self, run_id: str) -> Watch: ...


class _SleepWatch:
    def __init__(self, interval: float) -> None:
        self._interval = interval

    def clear(self) -> None:
        pass

    async def wait(self) -> None:
        await asyncio.sleep(self._interval)

    def close(self) -> None:
        pass


class PollNotifier:
    """No notifications: every watch wakes each ``poll_interval`` seconds."""

    def __init__(self, poll_interval: float = 0.25) -> None:
        self.poll_interval = poll_interval

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def watch(self, run_id: str) -> Watch:
        return _SleepWatch(self.poll_interval)


class _PgWatch:
    def __init__(self, owner: PgNotifier, run_id: str) -> None:
        self._owner = owner
        self.run_id = run_id
        self.event = asyncio.Event()

    def clear(self) -> None:
        self.event.clear()

    async def wait(self) -> None:
        try:
            await asyncio.wait_for(self.event.wait(), self._owner.fallback_interval)
        except TimeoutError:
            pass

    def close(self) -> None:
        self._owner._unwatch(self)


class PgNotifier:
    """One LISTEN connection; wakes the watches of the run named in each notification."""

    def __init__(self, dsn: str, fallback_interval: float = 1.0, reconnect_delay: float = 1.0) -> None:
        self.dsn = dsn
        self.fallback_interval = fallback_interval
        self.reconnect_delay = reconnect_delay
        self.notifications = 0
        self._watches: dict[str, set[_PgWatch]] = {}
        self._conn = None
        self._task: asyncio.Task[None] | None = None
        self._lost: asyncio.Event | None = None

    async def start(self) -> None:
        self._lost = asyncio.Event()
        await self._connect()  # fail loudly at startup if the database is unreachable
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name="cmbagent-events-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close()

    def watch(self, run_id: str) -> Watch:
        w = _PgWatch(self, run_id)
        self._watches.setdefault(run_id, set()).add(w)
        return w

    def _unwatch(self, w: _PgWatch) -> None:
        group = self._watches.get(w.run_id)
        if group is not None:
            group.discard(w)
            if not group:
                del self._watches[w.run_id]

    async def _connect(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        conn.add_termination_listener(lambda _c: self._lost.set())  # type: ignore[union-attr]
        await conn.add_listener(CHANNEL, self._on_notify)
        self._conn = conn

    async def _supervise(self) -> None:
        assert self._lost is not None
        while True:
            await self._lost.wait()
            self._lost.clear()
            log.warning("cmbagent-events: LISTEN connection lost; reconnecting")
            while True:
                self._wake_all()  # readers catch up by polling while we are away
                await asyncio.sleep(self.reconnect_delay)
                try:
                    await self._connect()
                    break
                except Exception as exc:
                    log.warning("cmbagent-events: LISTEN reconnect failed: %r", exc)
            self._wake_all()

    def _wake_all(self) -> None:
        for group in self._watches.values():
            for w in group:
                w.event.set()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.notifications += 1
        try:
            run_id = json.loads(payload)["run_id"]
        except (ValueError, KeyError, TypeError):
            self._wake_all()
            return
        for w in self._watches.get(run_id, ()):
            w.event.set()
