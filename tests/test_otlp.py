"""OpenTelemetry export against a real OTLP/HTTP receiver (``cmbagent_events.testing.otlp_receiver``):
stored runs through ``cmbagent-events export --otlp`` and live runs through
``CMBAGENT_EVENTS_OTLP_ENDPOINT``, on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections import Counter
from typing import Any

import pytest

from cmbagent_events import CaptureConfig, capture_run, make_engine
from cmbagent_events.cli import main
from cmbagent_events.errors import ConfigError
from cmbagent_events.export.otlp import (
    OtlpForwarder,
    export_stored_run,
    make_exporter,
    traces_url,
)
from cmbagent_events.export.span_mapping import RunInfo
from cmbagent_events.export.spans import TraceBuilder
from cmbagent_events.store.reader import RunReader
from cmbagent_events.testing.otlp_receiver import (
    OtlpReceiver,
    ReceivedSpan,
    otlp_receiver,
)

FAST = CaptureConfig(buffer_size=10, flush_interval_ms=10)
ERROR, OK = 2, 1  # OTLP status codes
CLIENT = 3  # OTLP span kind


REQUEST = {"model": "gpt-x", "messages": [{"role": "system", "content": "You plan."},
                                          {"role": "user", "content": "plan the work"}]}
RESPONSE = {"id": "r1", "model": "gpt-x", "choices": [{"index": 0, "finish_reason": "stop",
                                                       "message": {"role": "assistant", "content": "1. code it"}}]}


async def _scenario(db_url: str, config: CaptureConfig = FAST) -> str:
    """A run with every kind of event: two nested agent calls (the inner one fails), a model call,
    a tool call holding a secret, failing code, a file, a handoff, messages and an error event."""
    async with capture_run(db_url, config=config, hooks=False, task_description="export me", mode="test",
                           agent="planner", model="gpt-x") as run:
        outer = run.capture_agent_call("planner", "plan the work")
        run.capture_llm_call("planner", "gpt-x", 10, 5, cost=0.25, duration_ms=2.0, request=REQUEST, response=RESPONSE)
        run.capture_message("planner", "engineer", "please code it")
        run.capture_handoff("planner", "engineer", reason="next step")
        await run.flush()  # the outer call's start is committed (and forwarded) long before its end
        inner = run.capture_agent_call("engineer", "code it")
        run.capture_tool_call("engineer", "lookup", {"q": 1, "api_key": "sk-live-0123456789abcdef"}, result="found")
        run.capture_code_execution("engineer", "raise SystemExit(1)", result="boom", exit_code=1, duration_ms=3.0)
        run.capture_file_generation("engineer", "out/spectrum.csv", "data", 42)
        run.capture_error("engineer", "ValueError: bad value", "ValueError")
        run.finish_agent_call(inner, error=RuntimeError("engineer gave up"))
        run.capture_agent_response("planner", "all done", event_id=outer)
        run.capture_message("planner", "user", "final answer")
    return run.run_id


def _by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    names = Counter(s.name for s in spans)
    assert all(n == 1 for n in names.values()), names
    return {s.name: s for s in spans}


def _check_scenario(spans: list[ReceivedSpan], run_id: str) -> None:
    """The exact trace the scenario must give, whichever way it was exported."""
    s = _by_name(spans)
    assert set(s) == {"invoke_workflow test", "invoke_agent planner", "invoke_agent engineer", "chat gpt-x",
                      "execute_tool lookup", "execute_code python"}
    assert {x.trace_id for x in spans} == {uuid.UUID(run_id).hex}
    root, planner, engineer = s["invoke_workflow test"], s["invoke_agent planner"], s["invoke_agent engineer"]
    chat, tool, code = s["chat gpt-x"], s["execute_tool lookup"], s["execute_code python"]
    # parents from parent_event_id
    assert root.parent_span_id == ""
    assert planner.parent_span_id == root.span_id and chat.parent_span_id == planner.span_id
    assert engineer.parent_span_id == planner.span_id
    assert tool.parent_span_id == engineer.span_id and code.parent_span_id == engineer.span_id
    # OpenInference kinds and GenAI operations
    kinds = {name: x.attributes["openinference.span.kind"] for name, x in s.items()}
    assert kinds == {"invoke_workflow test": "CHAIN", "invoke_agent planner": "AGENT", "invoke_agent engineer": "AGENT",
                     "chat gpt-x": "LLM", "execute_tool lookup": "TOOL", "execute_code python": "TOOL"}
    assert chat.kind == CLIENT
    assert chat.attributes["gen_ai.operation.name"] == "chat" and chat.attributes["gen_ai.request.model"] == "gpt-x"
    assert chat.attributes["gen_ai.usage.input_tokens"] == 10 and chat.attributes["gen_ai.usage.output_tokens"] == 5
    assert chat.attributes["gen_ai.usage.cost"] == 0.25 and chat.attributes["llm.token_count.total"] == 15
    assert json.loads(chat.attributes["gen_ai.input.messages"]) == REQUEST["messages"]  # the conversation sent
    assert chat.attributes["llm.input_messages.1.message.content"] == "plan the work"
    assert chat.attributes["llm.output_messages.0.message.content"] == "1. code it"
    assert json.loads(chat.attributes["gen_ai.output.messages"])[0]["finish_reason"] == "stop"
    assert chat.end_ns - chat.start_ns == 2_000_000  # captured at its end, with its duration
    # the tool call: arguments as stored (secret redacted at capture), result
    args = tool.attributes["gen_ai.tool.call.arguments"]
    assert '"q": 1' in args and "sk-live" not in args and "***" in args
    assert tool.attributes["gen_ai.tool.call.result"] == "found" and tool.attributes["gen_ai.tool.name"] == "lookup"
    # failing code: exit code and error status
    assert code.attributes["process.exit.code"] == 1 and code.status_code == ERROR
    assert code.attributes["input.value"] == "raise SystemExit(1)" and code.attributes["output.value"] == "boom"
    # agent calls: input, output, start to completion
    assert planner.attributes["input.value"] == "plan the work" and planner.attributes["output.value"] == "all done"
    assert planner.attributes["gen_ai.agent.name"] == "planner" and planner.status_code != ERROR
    assert planner.start_ns <= engineer.start_ns <= engineer.end_ns <= planner.end_ns
    # messages, handoffs, files and errors are span events on the enclosing span
    assert [(n, a.get("message.sender"), a.get("message.recipient"), a.get("handoff.reason"))
            for n, _, a in planner.events] == [("message", "planner", "engineer", None),
                                              ("handoff", None, None, "next step")]
    handoff = planner.events[1][2]
    assert handoff["handoff.from_agent"] == "planner" and handoff["handoff.to_agent"] == "engineer"
    assert [n for n, _, _ in engineer.events] == ["file", "exception", "exception"]
    assert engineer.events[0][2]["file.path"] == "out/spectrum.csv" and engineer.events[0][2]["file.size"] == 42
    assert engineer.events[1][2] == {"cmbagent.event_id": engineer.events[1][2]["cmbagent.event_id"],
                                     "cmbagent.seq": 8, "exception.message": "ValueError: bad value",
                                     "exception.type": "ValueError"}
    assert engineer.events[2][2]["exception.type"] == "RuntimeError"
    assert engineer.status_code == ERROR and engineer.status_message == "RuntimeError: engineer gave up"
    # the root: the run, its final top-level message, completed
    assert [(n, a.get("message.content")) for n, _, a in root.events] == [("message", "final answer")]
    assert root.status_code == OK and root.attributes["input.value"] == "export me"
    assert root.attributes["gen_ai.conversation.id"] == run_id and root.attributes["cmbagent.run.total_events"] == 10
    assert root.start_ns <= planner.start_ns and planner.end_ns <= root.end_ns
    assert root.resource["service.name"] == "cmbagent-events"
    assert all(x.end_ns >= x.start_ns > 0 for x in spans)


def _export(db_url: str, run_id: str, url: str, *extra: str) -> int:
    return main(["--db", db_url, "export", run_id, "--otlp", url, *extra])


async def test_stored_run_exports_as_genai_spans_and_repeats_identically(db_url, capsys) -> None:
    run_id = await _scenario(db_url)
    with otlp_receiver() as rx:
        assert await asyncio.to_thread(_export, db_url, run_id, rx.url) == 0
        _check_scenario(rx.spans, run_id)
        first = rx.spans[:]
        assert await asyncio.to_thread(_export, db_url, run_id, rx.url) == 0
        second = rx.spans[len(first):]
    err = capsys.readouterr().err
    assert f"exported run {run_id} as 6 spans (2 agent_call, 1 code_exec, 1 llm_call, 1 tool_call, 1 workflow)" in err
    # a repeated export sends the very same spans: same ids, parents, times, attributes, events
    assert sorted(first, key=_span_id) == sorted(second, key=_span_id)


async def test_live_forwarding_sends_each_span_once_and_complete(db_url) -> None:
    with otlp_receiver() as rx:
        run_id = await _scenario(db_url, FAST.replace(otlp_endpoint=rx.url))
        live = rx.spans[:]
    _check_scenario(live, run_id)  # every span exactly once, agent calls with their completion
    with otlp_receiver() as rx:  # and the same trace as a stored export of the run
        assert await asyncio.to_thread(_export, db_url, run_id, rx.url) == 0
    assert _shape(live) == _shape(rx.spans)


async def test_live_forwarding_counts_what_a_blocked_endpoint_cannot_take(sqlite_url) -> None:
    with otlp_receiver() as rx:
        rx.gate = threading.Event()  # the endpoint holds every request until released
        async with capture_run(sqlite_url, config=FAST, hooks=False) as run:
            forwarder = OtlpForwarder(make_exporter(rx.url, timeout=60), run.run_id, max_queued_events=4,
                                      batch_size=1)
            assert run.writer is not None and run.writer.add_commit_listener(forwarder.on_commit)
            run.capture_llm_call("a", "m", 1, 1)
            await run.flush()
            assert await asyncio.to_thread(rx.arrived.wait, 30)  # the forwarder is stuck sending it
            for _ in range(3):  # 3 batches of 3 events: the first fits the queue (4), the others do not
                for i in range(3):
                    run.capture_message("a", "b", f"m{i}")
                await run.flush()
            assert forwarder.dropped["queue_full"] == 6
            stats_during = run.get_performance_stats()
        rx.gate.set()
        assert await asyncio.to_thread(forwarder.close, 30)
        # attached after the start, this forwarder may have missed the run row (the writer, on its own
        # thread, commits it at once): the root span is then named after no mode ("invoke_workflow run")
        (root,) = [span for span in rx.spans if span.name.startswith("invoke_workflow ")]
    assert stats_during["dropped_events"] == 0  # capture itself lost nothing
    assert forwarder.stats() == {"exported_spans": 2, "dropped": {"queue_full": 6}, "finished": True}
    assert root.attributes["cmbagent.otlp.dropped.queue_full"] == 6
    assert [a["message.content"] for n, _, a in root.events] == ["m0", "m1", "m2"]  # the batch that fitted


async def test_live_forwarding_counts_spans_the_endpoint_refuses(sqlite_url) -> None:
    with otlp_receiver() as rx:
        rx.fail_with = 400  # not retryable: each request fails at once
        async with capture_run(sqlite_url, config=FAST.replace(otlp_endpoint=rx.url), hooks=False) as run:
            call = run.capture_agent_call("a", "hi")
            run.capture_llm_call("a", "m", 1, 1)
            run.capture_agent_response("a", "bye", event_id=call)
        stats = run.get_performance_stats()["otlp"]
    assert stats == {"exported_spans": 0, "dropped": {"export_failed": 3}, "finished": True}
    assert rx.requests >= 1 and rx.spans == []


async def test_export_pages_through_a_large_run_and_keeps_every_child_on_its_parent(sqlite_url) -> None:
    async with capture_run(sqlite_url, config=CaptureConfig(buffer_size=200), hooks=False) as run:
        for i in range(40):
            call = run.capture_agent_call(f"agent{i % 3}", f"task {i}")
            for j in range(5):
                run.capture_message(f"agent{i % 3}", "peer", f"{i}.{j}")
                inner = run.capture_agent_call("helper", "sub")
                run.capture_llm_call("helper", "m", 3, 4)
                run.capture_agent_response("helper", "ok", event_id=inner)
            run.capture_agent_response(f"agent{i % 3}", "done", event_id=call)
    engine = make_engine(sqlite_url)
    pages: list[int] = []
    with otlp_receiver() as rx:
        summary = await export_stored_run(RunReader(engine), run.run_id, make_exporter(rx.url), on_page=pages.append,
                                          page_size=7, batch_size=50)
    await engine.dispose()
    assert sum(pages) == 40 * (1 + 5 * 3) and len(pages) == -(-sum(pages) // 7)
    assert dict(summary.span_counts) == {"agent_call": 240, "llm_call": 200, "workflow": 1}
    assert summary.spans == len(rx.spans) == 441 and rx.requests == 9
    by_id = {x.span_id: x for x in rx.spans}
    assert len(by_id) == 441
    tops = [x for x in rx.spans if x.name.startswith("invoke_agent agent")]
    assert all(by_id[x.parent_span_id].name == "invoke_workflow one_shot" for x in tops)
    for top in tops:  # every message on its own agent call, in order, whatever page it was read in
        i = int(top.attributes["input.value"].split()[1])
        assert [a["message.content"] for _, _, a in top.events] == [f"{i}.{j}" for j in range(5)]
    assert all(by_id[x.parent_span_id].name.startswith("invoke_agent helper") for x in rx.spans if x.name == "chat m")


async def test_export_cli_errors_and_headers(sqlite_url, capsys, monkeypatch) -> None:
    run_id = await _scenario(sqlite_url)
    with otlp_receiver() as rx:
        code = await asyncio.to_thread(_export, sqlite_url, run_id[:13], rx.url, "--header", "authorization=Bearer t0k",
                                       "--header", "x-tenant=a")
        assert code == 0 and len(rx.spans) == 6
        assert rx.headers[0]["authorization"] == "Bearer t0k" and rx.headers[0]["x-tenant"] == "a"
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-from-env=1")  # the exporter's own variable
        assert await asyncio.to_thread(_export, sqlite_url, run_id, rx.url) == 0
        assert rx.headers[-1]["x-from-env"] == "1"
        rx.fail_with = 400
        capsys.readouterr()
        assert await asyncio.to_thread(_export, sqlite_url, run_id, rx.url) == 1
        assert "the OTLP endpoint did not accept 6 spans" in capsys.readouterr().err
    for argv, message in ((["--otlp", "localhost:4318"], "must be an http:// or https:// URL"),
                          (["--otlp", "http://127.0.0.1:1", "--header", "novalue"], "NAME=VALUE")):
        assert await asyncio.to_thread(main, ["--db", sqlite_url, "export", run_id, *argv]) == 1
        assert message in capsys.readouterr().err
    assert await asyncio.to_thread(_export, sqlite_url, "nosuchrun", "http://127.0.0.1:1") == 1
    assert "no run 'nosuchrun'" in capsys.readouterr().err


def test_endpoint_configuration() -> None:
    assert traces_url("http://127.0.0.1:6006") == "http://127.0.0.1:6006/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("https://x.example/api/public/otel/v1/traces") == "https://x.example/api/public/otel/v1/traces"
    env = {"CMBAGENT_EVENTS_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert CaptureConfig.from_env(env).otlp_endpoint == "http://127.0.0.1:4318"
    assert CaptureConfig.from_env({}).otlp_endpoint is None
    with pytest.raises(ConfigError, match="CMBAGENT_EVENTS_OTLP_ENDPOINT"):
        CaptureConfig.from_env({"CMBAGENT_EVENTS_OTLP_ENDPOINT": "127.0.0.1:4318"})


def test_receiver_rejects_other_paths() -> None:
    receiver = OtlpReceiver().start()
    try:
        exporter = make_exporter(receiver.url + "/v1/metrics")
        spans = TraceBuilder("r").finish(RunInfo("r", status="completed"))
        assert exporter.export(spans).name == "FAILURE" and receiver.spans == []
    finally:
        receiver.stop()


def _span_id(span: Any) -> Any:
    return span.span_id


def _shape(spans: Any) -> list[Any]:
    return sorted((x.span_id, x.parent_span_id, x.name, x.start_ns, x.end_ns, [e[:2] for e in x.events]) for x in spans)


async def test_an_exceptions_traceback_is_exported_as_its_stacktrace(sqlite_url) -> None:
    def solve() -> None:
        raise ArithmeticError("the chain did not converge")

    async with capture_run(sqlite_url, config=FAST, hooks=False) as run:
        call = run.capture_agent_call("fitter", "fit it")
        try:
            solve()
        except ArithmeticError as exc:
            run.capture_exception("fitter", exc, "mcmc")
        run.capture_agent_response("fitter", "gave up", event_id=call)
    with otlp_receiver() as rx:
        assert await asyncio.to_thread(_export, sqlite_url, run.run_id, rx.url) == 0
    fitter = _by_name(rx.spans)["invoke_agent fitter"]
    (exception,) = [a for n, _, a in fitter.events if n == "exception"]
    assert exception["exception.type"] == "ArithmeticError"
    assert "Traceback (most recent call last)" in exception["exception.stacktrace"]
    assert "in solve" in exception["exception.stacktrace"]
