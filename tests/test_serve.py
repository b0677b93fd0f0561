"""The viewer server: WebSocket replay + live stream, resume, API, and who may connect."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from cmbagent_events import CaptureConfig, WorkflowRun, capture_run
from cmbagent_events.live.security import ServeError, check_bind, is_loopback
from cmbagent_events.live.server import STATE, start_server

FAST = CaptureConfig(buffer_size=20, flush_interval_ms=10)


@pytest.fixture
async def server(db_url):
    srv = await start_server(db_url, port=0, poll_interval=0.05)
    yield srv
    await srv.close()


async def _stream(session: aiohttp.ClientSession, url: str, out: list[dict], stop_after: int | None = None) -> None:
    """Collect messages from a run's WebSocket until the server ends it (or ``stop_after`` events)."""
    async with session.ws_connect(url) as ws:
        async for msg in ws:
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            data = json.loads(msg.data)
            out.append(data)
            if stop_after is not None and sum(len(m["events"]) for m in out if m["type"] == "events") >= stop_after:
                return


def _seqs(messages: list[dict]) -> list[int]:
    return [e["seq"] for m in messages if m["type"] == "events" for e in m["events"]]


async def _produce(run, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        run.capture_tool_call("worker", "step", {"i": i}, result=i)
        if i % 25 == 0:
            await asyncio.sleep(0.01)


async def test_ws_replays_then_streams_every_event_once_in_seq_order(server, db_url) -> None:
    async with aiohttp.ClientSession() as session:
        async with capture_run(db_url, config=FAST, hooks=False, task_description="stream me") as run:
            call = run.capture_agent_call("boss", "go")
            await _produce(run, 300)
            assert await run.flush()
            messages: list[dict] = []
            client = asyncio.create_task(_stream(session, f"{server.url}/ws/runs/{run.run_id}", messages))
            await _produce(run, 700, start=300)  # while the client replays and then follows
            run.capture_agent_response("boss", "all done", event_id=call)
        await asyncio.wait_for(client, 20)

    assert _seqs(messages) == list(range(1001))  # exactly once, in order, replay + live
    types = [m["type"] for m in messages]
    assert types[0] == "run" and messages[0]["run"]["task_description"] == "stream me"
    assert types[-1] == "end" and messages[-1]["run"]["status"] == "completed"
    assert messages[-1]["run"]["total_events"] == 1001
    boundary = types.index("replayed")
    replayed_seqs = _seqs(messages[:boundary])
    assert len(replayed_seqs) >= 301 and replayed_seqs[-1] == messages[boundary]["last_seq"]
    assert len(_seqs(messages[boundary:])) > 0  # some really came live
    first = next(m for m in messages if m["type"] == "events")["events"][0]
    assert first["id"] == call and first["status"] == "running"
    updates = [e for m in messages if m["type"] == "updates" for e in m["events"]]
    assert [(u["id"], u["status"], u["outputs"]) for u in updates] == [(call, "completed", {"response": "all done"})]
    if "postgresql" in db_url:  # woken by LISTEN/NOTIFY, not only by the fallback timer
        assert server._runner.app[STATE].notifier.notifications > 0


async def test_reconnect_with_after_seq_resumes_without_loss_or_duplicates(server, db_url) -> None:
    async with aiohttp.ClientSession() as session:
        async with capture_run(db_url, config=FAST, hooks=False) as run:
            producer = asyncio.create_task(_produce(run, 1200))
            first: list[dict] = []
            await _stream(session, f"{server.url}/ws/runs/{run.run_id}", first, stop_after=150)
            last = _seqs(first)[-1]
            assert not producer.done()  # we really dropped mid-run
            second: list[dict] = []
            client = asyncio.create_task(_stream(session, f"{server.url}/ws/runs/{run.run_id}?after_seq={last}",
                                                 second))
            await producer
        await asyncio.wait_for(client, 20)
    assert _seqs(first) + _seqs(second) == list(range(1200))
    assert second[-1]["type"] == "end"


async def test_api_lists_runs_with_tokens_and_pages_events(server, db_url, db_session) -> None:
    async with capture_run(db_url, config=FAST, hooks=False, mode="planning") as run:
        for i in range(30):
            run.capture_message("a", "b", f"m{i}")
    row = await db_session.get(WorkflowRun, run.run_id)
    row.meta = {**(row.meta or {}), "usage": {"total_tokens": 1234}}  # as an LLM-using run stores it
    await db_session.commit()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/api/runs?limit=500") as resp:
            assert resp.status == 200
            runs = {r["id"]: r for r in (await resp.json())["runs"]}
        row = runs[run.run_id]
        assert (row["status"], row["mode"], row["total_events"], row["dropped_events"]) == (
            "completed", "planning", 30, 0)
        assert row["total_tokens"] == 1234 and row["duration_s"] is not None and row["duration_s"] >= 0
        async with session.get(f"{server.url}/api/runs/{run.run_id}/events?after_seq=9&limit=5") as resp:
            page = await resp.json()
        assert [e["seq"] for e in page["events"]] == [10, 11, 12, 13, 14] and page["last_seq"] == 14
        assert page["events"][0]["inputs"]["content"] == "m10"
        async with session.get(f"{server.url}/api/runs/nope") as resp:
            assert resp.status == 404
        async with session.get(f"{server.url}/api/runs/{run.run_id}/events?after_seq=x") as resp:
            assert resp.status == 400
        async with session.get(f"{server.url}/") as resp:
            assert resp.status == 200 and "<html" in (await resp.text()).lower()
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await session.ws_connect(f"{server.url}/ws/runs/nope")
        assert err.value.status == 404


def test_non_loopback_bind_without_token_is_refused() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.com")
    for host in ("0.0.0.0", "::", "192.168.1.5"):
        with pytest.raises(ServeError, match="--token"):
            check_bind(host, None)
    check_bind("0.0.0.0", "a-long-enough-secret")  # allowed with a token
    check_bind("127.0.0.1", None)
    with pytest.raises(ServeError):
        check_bind("127.0.0.1", "  ")


async def test_start_server_refuses_before_binding(sqlite_url) -> None:
    with pytest.raises(ServeError):
        await start_server(sqlite_url, host="0.0.0.0", port=0)


async def test_token_is_required_and_checked(sqlite_url) -> None:
    async with capture_run(sqlite_url, hooks=False) as run:
        run.capture_message("a", "b", "secret stuff")
    srv = await start_server(sqlite_url, port=0, token="s3cret-token-0123456789", poll_interval=0.05)
    try:  # unsafe: keep cookies of IP hosts, as browsers do
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            for headers, url in [({}, "/api/runs"), ({"Authorization": "Bearer wrong"}, "/api/runs"),
                                 ({}, "/api/runs?token=wrong"), ({}, "/")]:
                async with session.get(srv.url + url, headers=headers) as resp:
                    assert resp.status == 401, url
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await session.ws_connect(f"{srv.url}/ws/runs/{run.run_id}?token=wrong")
            assert err.value.status == 401
            async with session.get(f"{srv.url}/static/app.js") as resp:
                assert resp.status == 200  # assets hold no data
            auth = {"Authorization": "Bearer s3cret-token-0123456789"}
            async with session.get(f"{srv.url}/api/runs", headers=auth) as resp:
                assert resp.status == 200
            async with session.get(f"{srv.url}/?token=s3cret-token-0123456789") as resp:  # the page sets a cookie ...
                assert resp.status == 200
            got: list[dict] = []
            await _stream(session, f"{srv.url}/ws/runs/{run.run_id}", got)  # ... that later requests carry
            assert _seqs(got) == [0] and got[-1]["type"] == "end"
    finally:
        await srv.close()


async def test_cross_site_and_rebound_hosts_are_refused_without_token(sqlite_url) -> None:
    async with capture_run(sqlite_url, hooks=False) as run:
        run.capture_message("a", "b", "x")
    srv = await start_server(sqlite_url, port=0, poll_interval=0.05)
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await session.ws_connect(f"{srv.url}/ws/runs/{run.run_id}", headers={"Origin": "http://evil.example"})
            assert err.value.status == 403
            async with session.get(f"{srv.url}/api/runs", headers={"Host": "evil.example"}) as resp:
                assert resp.status == 403
            async with session.get(f"{srv.url}/api/runs", headers={"Origin": srv.url}) as resp:
                assert resp.status == 200
    finally:
        await srv.close()


def test_short_tokens_are_refused() -> None:
    for short in ("x", "s3cret", "15-characters!!"):
        with pytest.raises(ServeError, match="16 characters"):
            check_bind("0.0.0.0", short)
    check_bind("0.0.0.0", "16-characters!!!")


async def test_token_is_not_echoed_on_start(sqlite_url) -> None:
    from cmbagent_events.live.server import serve_forever

    token = "do-not-print-me-0123456789"
    said: list[str] = []
    task = asyncio.create_task(serve_forever(sqlite_url, port=0, token=token, announce=said.append))
    while not said:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert said and all(token not in line for line in said)


async def test_every_response_carries_csp_and_nosniff(server) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/static/app.js", "/api/runs", "/api/runs/nope"):
            async with session.get(server.url + path) as resp:
                assert resp.headers["X-Content-Type-Options"] == "nosniff", path
                csp = resp.headers["Content-Security-Policy"]
                assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path


async def test_websockets_are_capped_per_client(db_url) -> None:
    from cmbagent_events.live import server as server_module

    srv = await start_server(db_url, port=0, poll_interval=0.05)
    try:
        async with aiohttp.ClientSession() as session, capture_run(db_url, config=FAST, hooks=False) as run:
            run.capture_message("a", "b", "x")
            assert await run.flush()
            url = f"{srv.url}/ws/runs/{run.run_id}"
            sockets = [await session.ws_connect(url) for _ in range(server_module.MAX_SOCKETS_PER_CLIENT)]
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await session.ws_connect(url)
            assert err.value.status == 429
            await sockets.pop().close()
            while srv._runner.app[STATE].per_client.get("127.0.0.1", 0) >= server_module.MAX_SOCKETS_PER_CLIENT:
                await asyncio.sleep(0.01)
            sockets.append(await session.ws_connect(url))  # a freed slot can be used again
            for ws in sockets:
                await ws.close()
    finally:
        await srv.close()


async def test_unknown_run_ids_hold_no_resources(server) -> None:
    """Clients asking for runs that do not exist: a few wait for the run to appear, the rest get a 404
    at once, and the API keeps answering meanwhile."""
    import uuid

    from cmbagent_events.live import server as server_module

    state = server._runner.app[STATE]
    async with aiohttp.ClientSession() as session:
        async def ask() -> int:
            try:
                async with session.ws_connect(f"{server.url}/ws/runs/{uuid.uuid4()}"):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

        askers = [asyncio.create_task(ask()) for _ in range(server_module.MAX_WAITERS + 40)]
        while sum(t.done() for t in askers) < 40:
            await asyncio.wait(askers, return_when=asyncio.FIRST_COMPLETED)
        assert state.waiters <= server_module.MAX_WAITERS
        async with session.get(f"{server.url}/api/runs") as resp:
            assert resp.status == 200
        for t in askers:
            t.cancel()
        results = [t.result() for t in askers if t.done() and not t.cancelled()]
        assert len(results) >= 40 and set(results) <= {404, 429}  # refused at once: not found, or over the cap
