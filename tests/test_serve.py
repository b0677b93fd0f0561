"""The viewer server: WebSocket replay + live stream, resume, API, and who may connect."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from cmbagent_events import CaptureConfig, WorkflowRun, capture_run
from cmbagent_events.errors import ServeError
from cmbagent_events.live.security import check_bind, is_loopback
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


async def _capture_story(db_url: str, task: str, reply: str, mode: str = "one_shot") -> str:
    """A small run with model calls (tokens, cost) and a file; two stories differ only in ``reply``."""
    async with capture_run(db_url, config=FAST, hooks=False, task_description=task, mode=mode) as run:
        call = run.capture_agent_call("planner", "plan it")
        run.capture_llm_call("planner", "gpt-4o-mini", 100, 20, cost=0.00010665, duration_ms=12.0)
        run.capture_agent_response("planner", "the plan", event_id=call)
        call = run.capture_agent_call("engineer", "write it")
        run.capture_llm_call("engineer", "gpt-4o", 300, 50, cost=0.0042, duration_ms=30.0)
        run.capture_file_generation("engineer", f"out/{reply}.png", "png", 10)
        run.capture_agent_response("engineer", reply, event_id=call)
    return run.run_id


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, object]:
    async with session.get(url) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def test_api_runs_filters_pages_and_shows_cost(server, db_url) -> None:
    import uuid

    tag = uuid.uuid4().hex[:10]  # the PostgreSQL database is shared: look only at this test's runs
    first = await _capture_story(db_url, f"Plot the CMB spectrum {tag}", "plot done", mode="planning")
    ids = [first] + [await _capture_story(db_url, f"Fit model {i} {tag}", "fit done") for i in range(3)]
    base = f"{server.url}/api/runs?q={tag}"
    async with aiohttp.ClientSession() as session:
        status, body = await _get(session, f"{base}&limit=2")
        assert status == 200 and [r["id"] for r in body["runs"]] == ids[::-1][:2] and body["has_more"] is True
        status, body = await _get(session, f"{base}&limit=2&offset=2")
        assert [r["id"] for r in body["runs"]] == ids[::-1][2:] and body["has_more"] is False
        status, body = await _get(session, f"{server.url}/api/runs?q=cmb+SPECTRUM+{tag}")  # any case
        assert [r["id"] for r in body["runs"]] == [first]
        assert body["runs"][0]["cost"] == pytest.approx(0.00430665)
        assert body["runs"][0]["total_tokens"] == 470
        status, body = await _get(session, f"{base}&mode=planning&status=completed")
        assert [r["id"] for r in body["runs"]] == [first]
        status, body = await _get(session, f"{base}&status=running")
        assert body["runs"] == []
        status, body = await _get(session, f"{base}&since=2999-01-01")
        assert body["runs"] == [] and body["has_more"] is False
        status, body = await _get(session, f"{base}&since=2000-01-01T00:00:00")
        assert len(body["runs"]) == 4
        for bad in ("status=done", "since=yesterday", "limit=0", "offset=-1", "limit=x"):
            status, body = await _get(session, f"{server.url}/api/runs?{bad}")
            assert status == 400 and bad.split("=")[0] in body and "\n" not in body.strip(), bad
        for path in ("/api/runs?q=%00", "/api/runs?mode=a%00b", "/api/runs/%00", "/api/events/%00/llm"):
            status, body = await _get(session, f"{server.url}{path}")  # (PostgreSQL refuses a NUL: was a 500)
            assert status == 400 and "NUL" in body, (path, status, body)


async def test_api_cost_per_agent_and_model(server, db_url) -> None:
    run_id = await _capture_story(db_url, "cost me", "done")
    async with aiohttp.ClientSession() as session:
        status, body = await _get(session, f"{server.url}/api/runs/{run_id}/cost")
        assert status == 200 and body["by"] == "agent"
        rows = {r["name"]: r for r in body["rows"]}
        assert set(rows) == {"planner", "engineer"}
        assert rows["planner"]["cost"] == pytest.approx(0.00010665) and rows["planner"]["total_tokens"] == 120
        assert rows["engineer"]["calls"] == 1 and rows["engineer"]["llm_ms"] == pytest.approx(30.0)
        assert body["total"]["cost"] == pytest.approx(0.00430665) and body["total"]["events"] == 5
        status, body = await _get(session, f"{server.url}/api/runs/{run_id}/cost?by=model")
        assert {r["name"] for r in body["rows"]} >= {"gpt-4o", "gpt-4o-mini"}
        status, body = await _get(session, f"{server.url}/api/runs/{run_id}/cost?by=colour")
        assert status == 400 and "by must be one of agent, model, step, node" in body
        status, body = await _get(session, f"{server.url}/api/runs/00000000-0000-0000-0000-000000000000/cost")
        assert status == 404 and "no run" in body
        for path in ("", "/cost", "/events"):  # a unique prefix names the run everywhere
            status, body = await _get(session, f"{server.url}/api/runs/{run_id[:20]}{path}")
            assert status == 200, (path, body)
        status, body = await _get(session, f"{server.url}/api/runs/{run_id[:20]}")
        assert body["run"]["id"] == run_id


async def test_api_diff_names_the_first_divergence(server, db_url) -> None:
    a = await _capture_story(db_url, "same task", "plot done")
    b = await _capture_story(db_url, "same task", "plot failed")
    same = await _capture_story(db_url, "same task", "plot done")
    async with aiohttp.ClientSession() as session:
        status, diff = await _get(session, f"{server.url}/api/diff?a={a}&b={b}")
        assert status == 200 and diff["run_a"] == a and diff["run_b"] == b and diff["same"] is False
        first = diff["first_divergence"]
        assert first["agent"] == "engineer"
        assert "plot done" in first["a"]["text"] and "plot failed" in first["b"]["text"]
        assert diff["files"] == {"only_a": ["out/plot done.png"], "only_b": ["out/plot failed.png"]}
        assert {r["name"] for r in diff["by_agent"]} == {"planner", "engineer"}
        status, diff = await _get(session, f"{server.url}/api/diff?a={a}&b={same}")
        assert status == 200 and diff["same"] is True and diff["first_divergence"] is None
        status, body = await _get(session, f"{server.url}/api/diff?a={a}")
        assert status == 400 and "a=RUN_ID&b=RUN_ID" in body
        status, body = await _get(session, f"{server.url}/api/diff?a={a}&b=ffffffff-nope")
        assert status == 404 and "ffffffff-nope" in body


async def test_new_routes_are_behind_the_token_and_host_checks(sqlite_url) -> None:
    run_id = await _capture_story(sqlite_url, "guarded", "x")
    paths = (f"/api/runs/{run_id}/cost", f"/api/diff?a={run_id}&b={run_id}", "/api/runs?q=guarded")
    srv = await start_server(sqlite_url, port=0, token="s3cret-token-0123456789", poll_interval=0.05)
    try:
        async with aiohttp.ClientSession() as session:
            for path in paths:
                async with session.get(srv.url + path) as resp:
                    assert resp.status == 401, path
                async with session.get(srv.url + path,
                                       headers={"Authorization": "Bearer s3cret-token-0123456789"}) as resp:
                    assert resp.status == 200, path
    finally:
        await srv.close()
    srv = await start_server(sqlite_url, port=0, poll_interval=0.05)  # no token: loopback Host and Origin only
    try:
        async with aiohttp.ClientSession() as session:
            for path in paths:
                async with session.get(srv.url + path, headers={"Host": "evil.example"}) as resp:
                    assert resp.status == 403, path
                async with session.get(srv.url + path, headers={"Origin": "http://evil.example"}) as resp:
                    assert resp.status == 403, path
    finally:
        await srv.close()


async def test_stored_histories_are_sent_a_few_at_a_time_and_every_client_gets_all(sqlite_url, monkeypatch) -> None:
    """Replays of stored events hold one of MAX_REPLAYS slots (memory bounded however many clients come):
    with one slot, three clients of a finished run each get the whole run, and the slot is released."""
    from cmbagent_events.live import server as server_module

    monkeypatch.setattr(server_module, "MAX_REPLAYS", 1)
    async with capture_run(sqlite_url, config=FAST, hooks=False) as run:
        await _produce(run, 300)
    srv = await start_server(sqlite_url, port=0, poll_interval=0.05)
    try:
        async with aiohttp.ClientSession() as session:
            outs: list[list[dict]] = [[], [], []]
            await asyncio.wait_for(asyncio.gather(*(_stream(session, f"{srv.url}/ws/runs/{run.run_id}", out)
                                                    for out in outs)), 120)
        assert [_seqs(out) for out in outs] == [list(range(300))] * 3
        slots = srv._runner.app[STATE].replays
        assert not slots.locked()  # every slot given back
    finally:
        await srv.close()
