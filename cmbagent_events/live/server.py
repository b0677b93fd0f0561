"""The viewer server (``cmbagent-events serve``): the trace page, a JSON API and a WebSocket stream.

It reads the database, so it works beside any number of capturing processes: PostgreSQL wakes it
with LISTEN/NOTIFY at each batch commit, SQLite is polled on ``seq``. Routes:

- ``GET /``: the viewer page (``static/``); ``GET /api/runs?q=&status=&mode=&since=&offset=&limit=``: runs,
  newest first (``q``: a piece of the task text; ``since``: an ISO date or time), with ``has_more``;
  ``GET /api/runs/{id}``: one run; ``GET /api/runs/{id}/events?after_seq=N&limit=M``: stored events;
  ``GET /api/runs/{id}/cost?by=agent|model|step|node``: ``{rows, total}`` (tokens, cost, time per group);
  ``GET /api/diff?a=RUN&b=RUN``: how run B differs from run A (:meth:`AsyncStore.diff`);
  ``GET /api/events/{id}/llm``: a model call whole, its request and response (:meth:`AsyncStore.llm_call`).
- ``GET /ws/runs/{id}?after_seq=N``: a WebSocket that replays the run's stored events after ``N``
  (all when omitted), then streams new ones until the run ends. JSON messages, each with a
  ``type``: ``run`` (the run row, first and on every change), ``events`` (new events in seq
  order, each exactly once), ``updates`` (agent calls that completed after they were sent),
  ``gap`` (``from_seq``..``to_seq`` never stored: dropped at capture), ``replayed`` (the stored
  history up to ``last_seq`` was sent; live from here), ``end`` (run over, all sent; the server
  closes). To resume after a disconnect, reconnect with ``after_seq`` = the last seq received.

Each client has its own feed reading at its own pace, so a slow client slows nobody else, and
capture never waits for any of them. Binding and tokens: :mod:`.security`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from ..errors import EventNotFound, RunNotFound
from ..read import rollup
from ..read.store import AsyncStore
from ..store.database import make_engine, parse_db_url, resolve_db
from ..store.placement import Placement
from ..store.reader import RunReader
from ..store.schema import migrate
from .feed import FeedItem, RunFeed
from .notify import Notifier, PgNotifier, PollNotifier
from .ordering import DEFAULT_GAP_TIMEOUT_S
from .security import add_security_headers, check_bind, make_middleware
from .wire import dumps, event_dict, run_dict

log = logging.getLogger("cmbagent_events.live")
STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_PORT = 8765
MAX_PAGE = 5000
MAX_SOCKETS = 256  # WebSockets open at once, all clients together
MAX_SOCKETS_PER_CLIENT = 16  # ... and from one remote address
MAX_WAITERS = 16  # requests waiting for a run row to appear (each polls the database)
MAX_REPLAYS = 8  # WebSockets sending a run's stored history at once (the rest wait their turn, then follow live)


@dataclass
class _State:
    db_url: str
    poll_interval: float
    gap_timeout: float
    placement: Placement
    reader: RunReader | None = None
    store: AsyncStore | None = None  # the read API (cost, diff, filtered run lists); read-only
    notifier: Notifier | None = None
    sockets: weakref.WeakSet | None = None
    per_client: dict[str, int] = field(default_factory=dict)  # open WebSockets by remote address
    waiters: int = 0  # requests waiting for a run to appear
    orphans_checked: float = float("-inf")  # loop time of the last close-orphans pass
    replays: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_REPLAYS))


STATE = web.AppKey("cmbagent_events_state", _State)


def create_app(db_url: str, *, token: str | None = None, poll_interval: float = 0.25,
               gap_timeout: float = DEFAULT_GAP_TIMEOUT_S, placement: Placement | None = None) -> web.Application:
    """The aiohttp application for ``db_url`` (the schema is migrated when it starts); our tables
    are found by ``placement`` (default: from the environment)."""
    app = web.Application(middlewares=[make_middleware(token)])
    app.on_response_prepare.append(add_security_headers)
    app[STATE] = _State(db_url, poll_interval, gap_timeout, Placement.from_env() if placement is None else placement)
    app.cleanup_ctx.append(_resources)
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/", _index)
    app.router.add_get("/api/runs", _api_runs)
    app.router.add_get("/api/runs/{run_id}", _api_run)
    app.router.add_get("/api/runs/{run_id}/events", _api_events)
    app.router.add_get("/api/runs/{run_id}/cost", _api_cost)
    app.router.add_get("/api/diff", _api_diff)
    app.router.add_get("/api/events/{event_id}/llm", _api_llm_call)
    app.router.add_get("/ws/runs/{run_id}", _ws_run)
    app.router.add_static("/static/", STATIC_DIR, show_index=False)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    db = resolve_db(state.db_url)
    await migrate(db, state.placement)
    engine = make_engine(db, state.placement)
    notifier: Notifier = PollNotifier(state.poll_interval) if db.is_sqlite else PgNotifier(db.dsn or "")
    await notifier.start()
    state.reader, state.notifier = RunReader(engine, state.placement), notifier
    state.store = await AsyncStore(state.db_url, table_prefix=state.placement.prefix,
                                   db_schema=state.placement.schema or "").open()
    state.sockets = weakref.WeakSet()
    try:
        yield
    finally:
        await notifier.stop()
        await state.store.aclose()
        await engine.dispose()


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[STATE].sockets or ()):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")


# -- HTTP ------------------------------------------------------------------------------------------
async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer, got {raw!r}\n") from None
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f"{name} must be in [{low}, {high}], got {value}\n")
    return value


RUN_STATUSES = ("running", "completed", "failed", "abandoned")


def _since_query(request: web.Request) -> datetime | None:
    raw = request.query.get("since", "").strip()
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"since must be an ISO date or time (2026-12-01), got {raw!r}\n") from None


def _choice_query(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.query.get(name, "")
    if raw == "":
        return None
    if raw not in choices:
        raise web.HTTPBadRequest(text=f"{name} must be one of {', '.join(choices)}, got {raw!r}\n")
    return raw


async def _api_runs(request: web.Request) -> web.Response:
    """Runs, newest first, filtered and paged; ``has_more`` says whether a next page exists."""
    state = request.app[STATE]
    limit = _int_query(request, "limit", 200, 1, MAX_PAGE)
    offset = _int_query(request, "offset", 0, 0, 1 << 31)
    status = _choice_query(request, "status", RUN_STATUSES)
    since = _since_query(request)
    await _close_orphans(state)
    runs = await state.store.runs(limit + 1, offset=offset, status=status,  # type: ignore[union-attr]
                                  mode=request.query.get("mode") or None, since=since,
                                  task_contains=request.query.get("q", "").strip() or None)
    return web.json_response({"runs": [run_dict(r) for r in runs[:limit]],
                              "offset": offset, "limit": limit, "has_more": len(runs) > limit}, dumps=dumps)


async def _api_cost(request: web.Request) -> web.Response:
    """Tokens, cost and time of one run per agent (``by``: agent, model, step or node), and its total."""
    by = _choice_query(request, "by", rollup.GROUPINGS) or "agent"
    try:
        rows = await request.app[STATE].store.cost(request.match_info["run_id"], by)  # type: ignore[union-attr]
    except RunNotFound as exc:  # (an ambiguous prefix said so, as on every run path)
        raise web.HTTPNotFound(text=f"{exc}\n") from None
    return web.json_response({"by": by, "rows": rows, "total": rollup.total(rows)}, dumps=dumps)


async def _api_diff(request: web.Request) -> web.Response:
    """How run ``b`` differs from run ``a`` (first divergence, per agent and model deltas, files)."""
    ids = [request.query.get(name, "").strip() for name in ("a", "b")]
    if not all(ids):
        raise web.HTTPBadRequest(text="give two runs: /api/diff?a=RUN_ID&b=RUN_ID\n")
    try:
        diff = await request.app[STATE].store.diff(*ids)  # type: ignore[union-attr]
    except RunNotFound as exc:
        raise web.HTTPNotFound(text=f"{str(exc).splitlines()[0]}\n") from None
    return web.json_response(diff, dumps=dumps)


async def _api_llm_call(request: web.Request) -> web.Response:
    """A model call whole: the conversation sent, the completion, usage, cost and its source."""
    try:
        call = await request.app[STATE].store.llm_call(request.match_info["event_id"])  # type: ignore[union-attr]
    except EventNotFound as exc:
        raise web.HTTPNotFound(text=f"{str(exc).splitlines()[0]}\n") from None
    return web.json_response(call, dumps=dumps)


ORPHAN_CHECK_EVERY_S = 10.0


async def _close_orphans(state: _State) -> None:
    """Runs whose process died show as abandoned, not running forever (checked at most every 10 s)."""
    from ..store.orphans import close_orphans

    now = asyncio.get_running_loop().time()
    if now - state.orphans_checked < ORPHAN_CHECK_EVERY_S:
        return
    state.orphans_checked = now
    reader = state.reader
    try:
        await close_orphans(reader.engine, placement=reader.placement)  # type: ignore[union-attr]
    except Exception as exc:  # a read-only database: list what is there
        log.warning("cmbagent-events: could not close orphaned runs: %r", exc)


async def _get_run_or_404(request: web.Request):
    """The run named in the path: its id or a unique prefix of it (as /cost and /api/diff take)."""
    reader = request.app[STATE].reader
    wanted = request.match_info["run_id"]
    run = await reader.get_run(wanted)  # type: ignore[union-attr]
    if run is None:
        found = await reader.matching_run_ids(wanted)  # type: ignore[union-attr]
        run = await reader.get_run(found[0]) if len(found) == 1 else None  # type: ignore[union-attr]
        if run is None:
            raise web.HTTPNotFound(text=f"{RunNotFound.named(wanted, several=len(found) > 1)}\n")
    return run


RUN_APPEAR_WAIT_S = 10.0  # a run's row is written with its first batch: a follower may be early


def _looks_like_run_id(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


async def _get_run_waiting(request: web.Request):
    """The run, waiting briefly for it to appear: a capture in another process writes its run row
    with its first batch (within its flush interval), and a follower may ask for it sooner."""
    state = request.app[STATE]
    reader = state.reader
    run = await reader.get_run(request.match_info["run_id"])  # type: ignore[union-attr]
    # Unknown ids must not hold resources: only a few requests wait (and poll) at a time, the rest
    # get their 404 at once.
    if run is None and _looks_like_run_id(request.match_info["run_id"]) and state.waiters < MAX_WAITERS:
        state.waiters += 1
        try:
            deadline = asyncio.get_running_loop().time() + RUN_APPEAR_WAIT_S
            while run is None and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.25)
                run = await reader.get_run(request.match_info["run_id"])  # type: ignore[union-attr]
        finally:
            state.waiters -= 1
    if run is None:
        raise web.HTTPNotFound(text=f"no run {request.match_info['run_id']!r}\n")
    return run


async def _api_run(request: web.Request) -> web.Response:
    return web.json_response({"run": run_dict(await _get_run_or_404(request))}, dumps=dumps)


async def _api_events(request: web.Request) -> web.Response:
    run = await _get_run_or_404(request)
    after = _int_query(request, "after_seq", -1, -1, 1 << 62)
    limit = _int_query(request, "limit", 1000, 1, MAX_PAGE)
    events = await request.app[STATE].reader.events_after(run.id, after, limit)  # type: ignore[union-attr]
    return web.json_response({"events": [event_dict(e) for e in events],
                              "last_seq": events[-1].seq if events else after}, dumps=dumps)


# -- WebSocket ---------------------------------------------------------------------------------------
def _message(item: FeedItem) -> dict[str, Any]:
    if item.kind in ("events", "updates"):
        return {"type": item.kind, "events": [event_dict(e) for e in item.events]}
    if item.kind in ("run", "end"):
        return {"type": item.kind, "run": run_dict(item.run)}  # type: ignore[arg-type]
    if item.kind == "gap":
        return {"type": "gap", "from_seq": item.first, "to_seq": item.last}
    return {"type": "replayed", "last_seq": item.last_seq}


async def _ws_run(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    client = request.remote or "?"
    if len(state.sockets or ()) >= MAX_SOCKETS or state.per_client.get(client, 0) >= MAX_SOCKETS_PER_CLIENT:
        raise web.HTTPTooManyRequests(text="too many live connections; close some viewer tabs\n")
    state.per_client[client] = state.per_client.get(client, 0) + 1  # counted while it waits, too
    try:
        return await _ws_run_counted(request, state)
    finally:
        left = state.per_client.get(client, 1) - 1
        if left > 0:
            state.per_client[client] = left
        else:
            state.per_client.pop(client, None)


async def _ws_run_counted(request: web.Request, state: _State) -> web.StreamResponse:
    run = await _get_run_waiting(request)
    after = _int_query(request, "after_seq", -1, -1, 1 << 62)
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1 << 16)
    await ws.prepare(request)
    state.sockets.add(ws)  # type: ignore[union-attr]
    feed = RunFeed(state.reader, run.id, after, state.notifier, gap_timeout=state.gap_timeout)  # type: ignore[arg-type]

    async def pump() -> None:
        replaying = True  # the stored history is sent under one of MAX_REPLAYS slots: memory stays bounded
        await state.replays.acquire()
        try:
            async for item in feed:
                await ws.send_str(dumps(_message(item)))
                if replaying and item.kind == "replayed":
                    replaying = False
                    state.replays.release()
        except Exception as exc:  # database trouble: tell the client, it can resume from its last seq
            log.warning("cmbagent-events: feed of run %s failed: %r", run.id, exc)
            with contextlib.suppress(Exception):
                await ws.send_str(dumps({"type": "error", "message": f"{type(exc).__name__}: {exc}"}))
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"feed failed")
            return
        finally:
            if replaying:
                state.replays.release()
        await ws.close(code=WSCloseCode.OK, message=b"run ended")

    sender = asyncio.create_task(pump(), name=f"cmbagent-events-ws-{run.id}")
    try:
        async for msg in ws:  # reading is how closes and pings are processed; clients send nothing
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
    return ws


# -- running it ----------------------------------------------------------------------------------------
class ViewerServer:
    """A running viewer (in this process): ``url``, ``port``, ``await close()``."""

    def __init__(self, runner: web.AppRunner, site: web.TCPSite, host: str, port: int) -> None:
        self._runner, self._site = runner, site
        self.host, self.port = host, port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        await self._runner.cleanup()


async def start_server(db_url: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None,
                       **options: Any) -> ViewerServer:
    """Start the viewer on ``host:port`` (0: any free port). Raises ServeError before binding when
    the host is not loopback and there is no token."""
    check_bind(host, token)
    runner = web.AppRunner(create_app(db_url, token=token, **options), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    server: Any = site._server  # an asyncio.Server (AbstractServer in the stubs, without .sockets)
    bound = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port
    return ViewerServer(runner, site, host, bound)


async def serve_forever(db_url: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None,
                        announce=print, **options: Any) -> None:
    """Run the viewer until SIGINT/SIGTERM (or cancellation), then close every client cleanly."""
    server = await start_server(db_url, host, port, token, **options)
    suffix = "/?token=YOUR_TOKEN (the --token given; not echoed)" if token else "/"
    announce(f"cmbagent-events viewer on {server.url}{suffix}  (database {_safe_url(db_url)}; Ctrl-C to stop)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not on this platform/thread
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        announce("cmbagent-events viewer stopping")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        await server.close()


def _safe_url(db_url: str) -> str:
    try:
        return parse_db_url(db_url).render_as_string(hide_password=True)
    except Exception:
        return "?"
