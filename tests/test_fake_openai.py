"""The fake OpenAI-compatible server the client tests run real clients against (stdlib HTTP here)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from cmbagent_events.testing.fake_openai import FakeOpenAI, Reply, ToolCallReply, instance_from_schema


def _post(fake: FakeOpenAI, body: Any, path: str = "/chat/completions") -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(fake.base_url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read().decode()
            return response.status, raw if response.headers["Content-Type"] == "text/event-stream" else json.loads(raw)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def fake() -> Any:
    with FakeOpenAI(text_suffix=" TERMINATE") as server:
        yield server


TOOL = {"type": "function", "function": {"name": "get_params", "parameters": {
    "type": "object", "properties": {"release": {"type": "string", "enum": ["2018", "2015"]},
                                     "lmax": {"type": "integer", "minimum": 2}}, "required": ["release"]}}}


def test_binds_loopback_only_and_answers_text_with_word_counts(fake: FakeOpenAI) -> None:
    assert fake.base_url.startswith("http://127.0.0.1:")
    status, body = _post(fake, {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                                           {"role": "user", "content": "three words here"}]})
    assert status == 200 and body["model"] == "m"
    assert body["choices"][0]["message"]["content"] == "fake reply to 2 messages TERMINATE"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    assert fake.usage == {"calls": 1, "prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}


def test_tool_calls_from_the_schema_until_a_tool_result_comes_back(fake: FakeOpenAI) -> None:
    fake.set_fields("get_params", lmax=2500)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    _, first = _post(fake, {"model": "m", "messages": messages, "tools": [TOOL]})
    call = first["choices"][0]["message"]["tool_calls"][0]
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == (
        "get_params", {"release": "2018", "lmax": 2500})
    messages += [first["choices"][0]["message"], {"role": "tool", "tool_call_id": call["id"], "content": "ok"}]
    _, second = _post(fake, {"model": "m", "messages": messages, "tools": [TOOL]})
    assert "tool_calls" not in second["choices"][0]["message"]
    _, forced = _post(fake, {"model": "m", "messages": messages, "tools": [TOOL],
                             "tool_choice": {"type": "function", "function": {"name": "get_params"}}})
    assert forced["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_params"


def test_structured_output_follows_the_schema_refs_and_chosen_fields(fake: FakeOpenAI) -> None:
    schema = {"type": "object", "$defs": {"Step": {"type": "object", "properties": {
        "agent": {"enum": ["engineer", "researcher"]}, "n": {"type": "integer"}}}},
        "properties": {"steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}, "minItems": 2},
                       "note": {"anyOf": [{"type": "string"}, {"type": "null"}]}, "title": {"type": "string"}}}
    fake.set_fields("Plan", title=lambda request: f"for {request['model']}")
    _, body = _post(fake, {"model": "m", "messages": [{"role": "user", "content": "plan"}],
                           "response_format": {"type": "json_schema",
                                               "json_schema": {"name": "Plan", "schema": schema}}})
    assert json.loads(body["choices"][0]["message"]["content"]) == {
        "steps": [{"agent": "engineer", "n": 1}] * 2, "note": None, "title": "for m"}
    assert instance_from_schema({"type": "number", "minimum": 0.5}) == 0.5


def test_rules_come_first_and_streaming_carries_the_same_answer(fake: FakeOpenAI) -> None:
    fake.rules.append(lambda r: Reply(content="ruled", tool_calls=(ToolCallReply("t", {"a": 1}),))
                      if r["messages"][-1]["content"] == "rule me" else None)
    status, text = _post(fake, {"model": "m", "messages": [{"role": "user", "content": "rule me"}], "stream": True,
                                "stream_options": {"include_usage": True}})
    chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert status == 200 and text.rstrip().endswith("data: [DONE]")
    delta = chunks[0]["choices"][0]["delta"]
    assert delta["content"] == "ruled" and delta["tool_calls"][0]["function"]["name"] == "t"
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}


def test_bad_requests_get_errors_and_the_server_keeps_serving(fake: FakeOpenAI) -> None:
    assert _post(fake, b"{not json")[0] == 400
    assert _post(fake, {"messages": []}, path="/embeddings")[0] == 404
    fake.rules.append(lambda r: 1 / 0)
    status, body = _post(fake, {"model": "m", "messages": []})
    assert status == 500 and "ZeroDivisionError" in body["error"]["message"]
    fake.rules.clear()
    assert _post(fake, {"model": "m", "messages": []})[0] == 200
