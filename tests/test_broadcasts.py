"""Broadcast folding: a group chat manager's relay of one message to N members is one event with
``meta.recipients`` (default), or one event per recipient with CMBAGENT_CAPTURE_BROADCASTS=each."""

from __future__ import annotations

import asyncio
import threading

import pytest

from cmbagent_events import CaptureConfig, ConfigError, EventRepository, capture_run
from cmbagent_events.cli import main

FAST = CaptureConfig(buffer_size=10, flush_interval_ms=10)
MEMBERS = ["bob", "carol", "dave", "erin"]


def relay(run, message: dict, members: list[str] = MEMBERS, sender: str = "chat_manager") -> None:
    for member in members:  # what AG2's GroupChatManager does: the same message object to each member
        run.capture_relay(sender, member, message["content"], message=message)


async def _events(db_session, run_id: str):
    return list(await EventRepository(db_session, "default").list_events(run_id))


async def test_a_relay_to_n_members_is_one_event_naming_them_in_order(db_url, db_session) -> None:
    async with capture_run(db_url, config=FAST, hooks=False) as run:
        call = run.capture_agent_call("chat_manager", "run the chat")
        first, second = {"content": "A1", "name": "alice"}, {"content": "B1", "name": "bob"}
        relay(run, first)
        run.capture_handoff("alice", "bob", reason="speaker_selection")  # closes the fold: it comes first
        relay(run, second, ["alice", "carol"])
        relay(run, {"content": "B1", "name": "bob"}, ["dave"])  # an equal but new message: a new event
        run.capture_agent_response("chat_manager", "done", event_id=call)
    events = await _events(db_session, run.run_id)
    assert [(e.seq, e.event_type, e.agent_name) for e in events] == [
        (0, "agent_call", "chat_manager"), (1, "agent_call", "chat_manager"), (2, "handoff", "alice"),
        (3, "agent_call", "chat_manager"), (4, "agent_call", "chat_manager")]
    relays = [e for e in events if e.event_subtype == "message"]
    assert [e.meta["recipients"] for e in relays] == [MEMBERS, ["alice", "carol"], ["dave"]]
    assert all(e.meta["broadcast"] and e.inputs["sender"] == "chat_manager" for e in relays)
    assert [e.inputs["content"] for e in relays] == ["A1", "B1", "B1"]
    assert all(e.parent_event_id == events[0].id and e.depth == 1 for e in relays)  # nested where relayed
    assert events[0].status == "completed"  # the manager's call closed after its relays


async def test_each_keeps_one_event_per_recipient(db_url, db_session) -> None:
    async with capture_run(db_url, config=FAST.replace(broadcasts="each"), hooks=False) as run:
        relay(run, {"content": "A1"})
    events = await _events(db_session, run.run_id)
    assert [e.agent_name for e in events] == MEMBERS  # each delivery, to its recipient
    assert all(e.inputs["recipient"] == e.agent_name and "recipients" not in e.meta for e in events)


async def test_a_pending_fold_is_written_by_flush_and_by_the_close(sqlite_url, db_session_sqlite) -> None:
    async with capture_run(sqlite_url, config=FAST, hooks=False) as run:
        relay(run, {"content": "at flush"})
        assert await run.flush()
        assert [e.meta["recipients"] for e in await _events(db_session_sqlite, run.run_id)] == [MEMBERS]
        relay(run, {"content": "at close"}, ["zed"])
    events = await _events(db_session_sqlite, run.run_id)
    assert [e.meta["recipients"] for e in events] == [MEMBERS, ["zed"]]
    assert run.get_performance_stats()["total_events"] == 2


async def test_folds_are_per_thread(sqlite_url, db_session_sqlite) -> None:
    """Two managers relaying at the same time on two threads: each thread's relays fold on their own."""
    barrier = threading.Barrier(2)

    def manager(run, name: str) -> None:
        for turn in range(20):
            message = {"content": f"{name} turn {turn}"}
            barrier.wait()  # interleave the two threads' relays as much as possible
            relay(run, message, sender=name)
            run.capture_handoff(name, name, reason="next")

    async with capture_run(sqlite_url, config=FAST, hooks=False) as run:
        threads = [threading.Thread(target=manager, args=(run, n)) for n in ("m1", "m2")]
        for t in threads:
            t.start()
        for t in threads:
            await asyncio.to_thread(t.join)
    events = await _events(db_session_sqlite, run.run_id)
    relays = [e for e in events if e.event_subtype == "message"]
    assert len(relays) == 40 and all(e.meta["recipients"] == MEMBERS for e in relays)
    assert all(e.inputs["content"].startswith(e.agent_name) for e in relays)
    assert [e.seq for e in events] == list(range(80))


def test_bad_broadcasts_value_is_a_config_error() -> None:
    assert CaptureConfig.from_env({}).broadcasts == "fold"
    assert CaptureConfig.from_env({"CMBAGENT_CAPTURE_BROADCASTS": " Each "}).broadcasts == "each"
    with pytest.raises(ConfigError, match="CMBAGENT_CAPTURE_BROADCASTS"):
        CaptureConfig.from_env({"CMBAGENT_CAPTURE_BROADCASTS": "folded"})


async def test_show_prints_the_fold(sqlite_url, capsys) -> None:
    async with capture_run(sqlite_url, config=FAST, hooks=False) as run:
        relay(run, {"content": "the plan"})
        relay(run, {"content": "short"}, ["bob"])
    code = await asyncio.to_thread(main, ["--db", sqlite_url, "show", run.run_id])
    out = capsys.readouterr().out
    assert code == 0
    assert "message chat_manager -> bob, carol, dave +1 [broadcast to 4]: the plan" in out
    assert "message chat_manager -> bob [broadcast to 1]: short" in out
