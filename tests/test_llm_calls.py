"""Model calls stored whole (llm_calls / llm_contents) and read back with Store.llm_call, on both databases.

The manual API is driven as a hook drives it: the request as the client was called with it and the
response it returned; AG2's own flavours are covered in test_ag2.py and tests/ag2_v1.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import pytest

from cmbagent_events import CaptureConfig, capture_run
from cmbagent_events.errors import EventNotFound
from cmbagent_events.read import open_async_store, open_store

FAST = CaptureConfig(buffer_size=50, flush_interval_ms=20)
LMAX = {"type": "object", "properties": {"lmax": {"type": "integer"}}}
TOOLS = [{"type": "function", "function": {"name": "camb", "description": "power spectrum", "parameters": LMAX}}]


def _response(n: int, text: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": 1_700_000_000 + n, "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text, "tool_calls": None}}],
            "usage": {"prompt_tokens": 10 * n, "completion_tokens": 5, "total_tokens": 10 * n + 5,
                      "prompt_tokens_details": {"cached_tokens": n}}}


def _chat(run: Any, rounds: int) -> tuple[list[str], list[list[dict[str, Any]]]]:
    """A group chat as AG2 runs it: every call sends the whole history so far; the history's dicts
    are changed after each call (AG2 adds names, rewrites content) to show what was sent is kept."""
    history: list[dict[str, Any]] = [{"role": "system", "content": "You are a cosmologist."}]
    sent: list[list[dict[str, Any]]] = []
    ids = []
    for n in range(1, rounds + 1):
        history.append({"role": "user", "content": f"turn {n}: fit the TT spectrum", "name": f"agent{n % 3}"})
        request = {"model": "gpt-4o", "messages": history, "tools": TOOLS, "temperature": 0.2, "stream": False}
        sent.append([dict(m) for m in history])
        event = run.capture_llm_call(f"agent{n % 3}", "gpt-4o", 10 * n, 5, cost=0.001 * n, duration_ms=3.0,
                                     request=request, response=_response(n, f"answer {n}"), cached_tokens=n,
                                     cost_source="ag2_price_table")
        ids.append(event)
        history[-1]["content"] += " (edited after the call)"  # AG2 goes on changing its dicts
        history.append({"role": "assistant", "content": f"answer {n}"})
    return ids, sent


async def test_a_call_is_read_back_as_it_was_sent_and_answered(db_url: str) -> None:
    async with capture_run(db_url, config=FAST, hooks=False) as run:
        ids, sent = _chat(run, 4)
    async with open_async_store(db_url) as store:
        calls = [await store.llm_call(event_id) for event_id in ids]
    for n, (call, messages) in enumerate(zip(calls, sent), start=1):
        assert call["request"]["messages"] == messages
        assert call["request"]["model"] == "gpt-4o" and call["request"]["tools"] == TOOLS
        assert call["request"]["params"] == {"temperature": 0.2, "stream": False}
        assert call["response"] == _response(n, f"answer {n}")
        assert call["usage"]["cached_tokens"] == n and call["cost_source"] == "ag2_price_table"
        assert call["cost"] == pytest.approx(0.001 * n) and call["replayable"] and call["note"] is None


async def test_each_distinct_message_is_stored_once(sqlite_url: str) -> None:
    rounds = 30
    async with capture_run(sqlite_url, config=FAST, hooks=False) as run:
        _ids, sent = _chat(run, rounds)
        run_id = run.run_id
    path = sqlite_url.split("///", 1)[1]
    with sqlite3.connect(path) as db:
        kinds = dict(db.execute("SELECT kind, count(*) FROM llm_contents WHERE run_id = ? GROUP BY kind", (run_id,)))
        stored = db.execute("SELECT sum(length(body)) FROM llm_contents WHERE run_id = ?", (run_id,)).fetchone()[0]
    distinct = {repr(m) for messages in sent for m in messages}
    assert kinds == {"message": len(distinct), "tools": 1, "response": rounds}
    naive = sum(len(repr(messages)) for messages in sent)
    assert stored < naive / 3  # linear in the chat's length, where whole requests grow with its square


async def test_a_secret_in_a_prompt_is_redacted_and_a_long_message_marked(sqlite_url: str) -> None:
    key = "sk-proj-" + "A1b2C3d4" * 6
    config = FAST.replace(max_llm_message_size=2048)
    async with capture_run(sqlite_url, config=config, hooks=False) as run:
        secret = run.capture_llm_call("a", "m", 1, 1, request={
            "model": "m", "messages": [{"role": "system", "content": f"use the key {key} for the API"}],
            "api_key": key}, response=_response(1, "ok"))
        long = run.capture_llm_call("a", "m", 1, 1, request={
            "model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}, response=_response(2, "ok"))
    path = sqlite_url.split("///", 1)[1]
    with sqlite3.connect(path) as db:
        bodies = " ".join(row[0] for row in db.execute("SELECT body FROM llm_contents"))
        params = " ".join(str(row[0]) for row in db.execute("SELECT params FROM llm_calls"))
    assert key not in bodies and key not in params
    with open_store(sqlite_url) as store:
        call = store.llm_call(secret)
        assert "for the API" in call["request"]["messages"][0]["content"] and call["replayable"]
        cut = store.llm_call(long)
    assert not cut["replayable"] and "cut at 2048 bytes" in cut["note"]
    assert len(cut["request"]["messages"][0]["content"]) < 5000


async def test_calls_without_messages_say_so(sqlite_url: str) -> None:
    config = FAST.replace(capture_llm_messages=False)
    async with capture_run(sqlite_url, config=config, hooks=False) as run:
        off = run.capture_llm_call("a", "m", 3, 4, cost=0.5, request={"model": "m", "messages": []})
        other = run.capture_tool_call("a", "camb", {})
    with open_store(sqlite_url) as store:
        call = store.llm_call(off)
        assert call["request"]["messages"] is None and call["response"] is None and not call["replayable"]
        assert call["note"] == "request and response not recorded" and call["cost_source"] == "reported"
        with pytest.raises(EventNotFound, match="not an llm_call but 'tool_call'"):
            store.llm_call(other)
        with pytest.raises(EventNotFound, match="not in this database"):
            store.llm_call("no-such-event")


async def test_cost_source_defaults(sqlite_url: str) -> None:
    async with capture_run(sqlite_url, config=FAST, hooks=False) as run:
        priced = run.capture_llm_call("a", "m", 3, 4, cost=0.5)
        unpriced = run.capture_llm_call("a", "m", 3, 4)
        odd = run.capture_llm_call("a", "m", 3, 4, cost=1.0, cost_source="made up")
    with open_store(sqlite_url) as store:
        sources = [store.llm_call(e)["cost_source"] for e in (priced, unpriced, odd)]
        events = store.events(run.run_id, event_type="llm_call")
    assert sources == ["reported", "unknown", "reported"]
    assert all("cached_tokens" not in e["outputs"]["usage"] for e in events)


async def test_a_message_that_is_not_json_is_marked_and_not_replayable(sqlite_url: str) -> None:
    """A value only its own ``__repr__`` describes is not run on the writer's thread: a marker is stored."""
    class Image:
        def __repr__(self) -> str:
            return "<Image 64x64>"

    async with capture_run(sqlite_url, config=FAST, hooks=False) as run:
        event = run.capture_llm_call("a", "m", 1, 1, request={
            "model": "m", "messages": [{"role": "user", "content": [{"type": "image", "image": Image()}]}]},
            response=_response(1, "a galaxy"))
    with open_store(sqlite_url) as store:
        call = store.llm_call(event)
    assert call["request"]["messages"][0] == "<not storable: dict>" and not call["replayable"]
    assert call["note"] == "message 0 not storable as JSON" and call["response"] == _response(1, "a galaxy")


async def test_messages_changed_between_calls_are_stored_as_each_call_sent_them(db_url: str) -> None:
    """A conversation's re-sent messages share the copies made for its last request only while they
    are unchanged: a message edited in the middle of the history, or removed, is stored as each call
    sent it, across batches (a batch of two events) and within one."""
    history: list[dict[str, Any]] = [{"role": "system", "content": "You are a cosmologist."}]
    sent: list[list[dict[str, Any]]] = []
    ids = []
    async with capture_run(db_url, config=FAST.replace(buffer_size=2), hooks=False) as run:
        for n in range(1, 9):
            history.append({"role": "user", "content": f"turn {n}", "name": "planner"})
            if n == 4:
                history[2]["content"] = "turn 2, rewritten"  # an earlier message, changed in place
            if n == 6:
                del history[3]  # and one taken out
            sent.append([dict(m) for m in history])
            ids.append(run.capture_llm_call("planner", "gpt-4o", 1, 1, request={"model": "gpt-4o", "messages": history},
                                            response=_response(n, "ok")))
    with open_store(db_url) as store:
        stored = [store.llm_call(event_id)["request"]["messages"] for event_id in ids]
    assert stored == sent


def test_a_conversation_copies_only_what_it_added() -> None:
    from cmbagent_events.capture_values import LlmExchange

    conversations: dict[int, list[Any]] = {}
    history: list[dict[str, Any]] = [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}]
    first = LlmExchange({"messages": history}, None, conversations)
    history.append({"role": "assistant", "content": "b"})
    second = LlmExchange({"messages": history}, None, conversations)
    assert second.messages[:2] == first.messages and all(map(lambda a, b: a is b, second.messages, first.messages))
    assert second.messages[2] == history[2] and second.messages[2] is not history[2]
    history[1]["content"] = "a, edited"
    third = LlmExchange({"messages": history}, None, conversations)
    assert third.messages == history and third.messages[1] is not second.messages[1]
    assert second.messages[1] == {"role": "user", "content": "a"}  # what the second call sent, kept


DUMPED_ON: list[str] = []  # the threads ClientsOwnResponse.model_dump ran on


class ClientsOwnResponse:
    """A custom model client's response (AG2's ModelClient protocol allows any type): its model_dump
    is the client's own code, like a __repr__."""

    def __init__(self, text: str, release: Any = None) -> None:
        self.text = text
        self.release = release  # a threading.Event to wait for (None: returns at once)

    def model_dump(self, **_: Any) -> dict[str, Any]:
        DUMPED_ON.append(threading.current_thread().name)
        if self.release is not None:
            self.release.wait()  # never set while the run is open: a model_dump that does not return
        return {"choices": [{"message": {"role": "assistant", "content": self.text}}], "api_key": "sk-live-0123"}


@pytest.mark.parametrize("writer", ["thread", "process"])
async def test_a_custom_clients_response_is_dumped_by_its_own_code_within_the_budget(
        db_url: str, writer: str) -> None:
    """Its own model_dump runs on the user-code thread, never on the writer's loop, and within
    user_code_timeout_s: one that never returns leaves its call's response out, said so in the
    call's note, and the run closes completed with every event stored."""
    DUMPED_ON.clear()
    release = threading.Event()
    config = FAST.replace(writer=writer, user_code_timeout_s=1.0, close_timeout_s=5.0)
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "fit TT"}]}
    try:
        async with capture_run(db_url, config=config, hooks=False) as run:
            answered = run.capture_llm_call("a", "gpt-4o", 1, 1, request=request,
                                            response=ClientsOwnResponse("lmax 2500"))
            assert await run.flush(30)
            stuck = run.capture_llm_call("a", "gpt-4o", 1, 1, request=request,
                                         response=ClientsOwnResponse("never", release))
            for i in range(5):
                run.capture_tool_call("a", "camb", {"i": i}, result=i)
            run_id = run.run_id
    finally:
        release.set()
    async with open_async_store(db_url) as store:
        row = await store.run(run_id)
        events = await store.events(run_id)
        good, bad = await store.llm_call(answered), await store.llm_call(stuck)
    assert row["status"] == "completed" and row["dropped_events"] == 0 and len(events) == 7
    assert good["response"] == {"choices": [{"message": {"role": "assistant", "content": "lmax 2500"}}],
                                "api_key": "***"}
    assert good["replayable"] and good["note"] is None
    assert bad["response"] is None and not bad["replayable"]
    assert "response not described: UserCodeTimeout" in bad["note"]
    assert bad["request"]["messages"] == request["messages"]
    assert DUMPED_ON == ["cmbagent-events-user-code"] * 2


def test_whose_response_needs_its_own_code() -> None:
    """Plain data, our own types and the model client libraries' are dumped on the writer's loop;
    any other type (and OpenAI's Parsed* holding a structured output's own model) is not."""
    from cmbagent_events.testing.scripted_response import ScriptedResponse
    from cmbagent_events.writer.llm_rows import needs_user_code

    class Own(dict):  # type: ignore[type-arg]
        pass

    assert not any(map(needs_user_code, (None, {}, [], ScriptedResponse.__new__(ScriptedResponse))))
    assert needs_user_code(ClientsOwnResponse("x")) and needs_user_code(Own())
    parsed = type("ParsedChatCompletion", (), {"__module__": "openai.types.chat.parsed_chat_completion"})
    plain = type("ChatCompletion", (), {"__module__": "openai.types.chat.chat_completion"})
    assert needs_user_code(parsed()) and not needs_user_code(plain())
