"""One stored row -> a span's name and attributes (GenAI semantic conventions + OpenInference kinds).

Pure functions of the row; which span a row belongs to, and when a span is released, is
:class:`~cmbagent_events.export.spans.TraceBuilder`'s. The table of the mapping is in spans.py's doc.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode

from .span_values import as_dict, exception_attributes, llm_message_attributes, number, put, put_io, text

# OpenInference span kinds (what Phoenix's UI groups and draws by).
AGENT, LLM, TOOL, CHAIN = "AGENT", "LLM", "TOOL", "CHAIN"


@dataclass(frozen=True, slots=True)
class RunInfo:
    """The run row as the root span needs it."""

    id: str
    session_id: str | None = None
    task_description: str | None = None
    mode: str | None = None
    agent: str | None = None
    model: str | None = None
    status: str | None = None
    started_at: Any = None
    completed_at: Any = None
    total_events: int | None = None
    dropped_events: int | None = None
    meta: Any = None

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> RunInfo:
        return cls(**{k: row.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]

    @classmethod
    def from_model(cls, run: Any) -> RunInfo:
        return cls(**{k: getattr(run, k, None) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]


def base_attributes(run_id: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """What every span made from a row carries: the run, the row's ids, type and agent, its meta."""
    attrs: dict[str, Any] = {"gen_ai.conversation.id": run_id}
    put(attrs, "session.id", event.get("session_id"))
    put(attrs, "cmbagent.event_id", event.get("id"))
    put(attrs, "cmbagent.seq", event.get("seq"))
    put(attrs, "cmbagent.event_type", event.get("event_type"))
    put(attrs, "cmbagent.event_subtype", event.get("event_subtype"))
    put(attrs, "cmbagent.agent_name", event.get("agent_name"))
    put(attrs, "cmbagent.node_id", event.get("node_id"))
    put(attrs, "cmbagent.step_id", event.get("step_id"))
    meta = event.get("meta")
    if meta:
        attrs["metadata"] = text(meta)
    return attrs


def agent_call_span(run_id: str, event: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """An agent call's span name and attributes at its start."""
    agent = event.get("agent_name") or "agent"
    attrs = base_attributes(run_id, event)
    attrs["gen_ai.operation.name"] = "invoke_agent"
    attrs["gen_ai.agent.name"] = agent
    attrs["agent.name"] = agent
    attrs["openinference.span.kind"] = AGENT
    put_io(attrs, "input", as_dict(event.get("inputs")).get("message"))
    return f"invoke_agent {agent}", attrs


def complete_agent_call(attrs: dict[str, Any], values: Mapping[str, Any]) -> str | None:
    """Add an agent call's completion to its attributes; its own failure message, if it failed."""
    put_io(attrs, "output", as_dict(values.get("outputs")).get("response"))
    if values.get("event_subtype"):
        attrs["cmbagent.event_subtype"] = values["event_subtype"]
    patch = values.get("meta")
    if patch and isinstance(patch, dict):
        old = json.loads(attrs.get("metadata", "{}"))
        attrs["metadata"] = text({**(old if isinstance(old, dict) else {}), **patch})
    if values.get("status") == "failed" or values.get("error_message"):
        return values.get("error_message") or "failed"
    return None


def leaf_span(run_id: str, event: Mapping[str, Any], etype: str) -> tuple[str, SpanKind, dict[str, Any], Status]:
    """A model, tool or code call row: span name, kind, attributes and status."""
    inputs, outputs, meta = as_dict(event.get("inputs")), as_dict(event.get("outputs")), as_dict(event.get("meta"))
    attrs = base_attributes(run_id, event)
    kind = SpanKind.INTERNAL
    status = Status()
    if etype == "llm_call":
        model = inputs.get("model") or meta.get("model") or "unknown"
        usage = as_dict(outputs.get("usage"))
        name = f"chat {model}"
        kind = SpanKind.CLIENT
        attrs["gen_ai.operation.name"] = "chat"
        attrs["gen_ai.request.model"] = str(model)
        attrs["openinference.span.kind"] = LLM
        attrs["llm.model_name"] = str(model)
        for ours, semconv, oi in (("prompt_tokens", "gen_ai.usage.input_tokens", "llm.token_count.prompt"),
                                  ("completion_tokens", "gen_ai.usage.output_tokens",
                                   "llm.token_count.completion"),
                                  ("total_tokens", None, "llm.token_count.total")):
            value = number(usage.get(ours))
            if value is not None:
                if semconv:
                    attrs[semconv] = int(value)
                attrs[oi] = int(value)
        cost = number(usage.get("cost"))
        if cost is not None:
            attrs["gen_ai.usage.cost"] = float(cost)
            attrs["llm.cost.total"] = float(cost)
        put(attrs, "cmbagent.cost_source", outputs.get("cost_source"))
        attrs.update(llm_message_attributes(event.get("llm")))
    elif etype == "tool_call":
        tool = inputs.get("tool_name") or "tool"
        name = f"execute_tool {tool}"
        attrs["gen_ai.operation.name"] = "execute_tool"
        attrs["gen_ai.tool.name"] = str(tool)
        attrs["gen_ai.tool.type"] = "function"
        attrs["openinference.span.kind"] = TOOL
        attrs["tool.name"] = str(tool)
        put(attrs, "gen_ai.tool.call.id", meta.get("call_id"))
        if "arguments" in inputs:
            attrs["gen_ai.tool.call.arguments"] = text(inputs["arguments"])
            attrs["tool.parameters"] = text(inputs["arguments"])
            put_io(attrs, "input", inputs["arguments"])
        if outputs.get("result") is not None:
            attrs["gen_ai.tool.call.result"] = text(outputs["result"])
            put_io(attrs, "output", outputs["result"])
        if event.get("status") == "failed":
            status = Status(StatusCode.ERROR, event.get("error_message") or "tool call failed")
    else:  # code_exec
        language = meta.get("language") or "code"
        name = f"execute_code {language}"
        attrs["gen_ai.operation.name"] = "execute_tool"
        attrs["gen_ai.tool.name"] = "code_execution"
        attrs["gen_ai.tool.type"] = "extension"
        attrs["openinference.span.kind"] = TOOL
        attrs["tool.name"] = "code_execution"
        put(attrs, "code.language", language)
        exit_code = meta.get("exit_code")
        put(attrs, "process.exit.code", exit_code)
        put_io(attrs, "input", inputs.get("code"))
        put_io(attrs, "output", outputs.get("result"))
        if exit_code != 0 or event.get("status") == "failed":
            status = Status(StatusCode.ERROR, f"exit code {exit_code}")
    return name, kind, attrs, status


def span_event(event: Mapping[str, Any], etype: Any, sub: Any) -> tuple[str, dict[str, Any], str | None]:
    """A row that is a span event on its enclosing span: its name, attributes, and the failure
    message it puts on that span (``error`` rows), else None."""
    inputs, meta = as_dict(event.get("inputs")), as_dict(event.get("meta"))
    attrs: dict[str, Any] = {}
    failure = None
    put(attrs, "cmbagent.event_id", event.get("id"))
    put(attrs, "cmbagent.seq", event.get("seq"))
    if etype == "agent_call" and sub == "message":
        name = "message"
        put(attrs, "message.sender", inputs.get("sender"))
        put(attrs, "message.recipient", inputs.get("recipient"))
        put(attrs, "message.content", inputs.get("content"))
        if meta.get("broadcast"):
            attrs["message.broadcast"] = True
        put(attrs, "message.tokens", number(meta.get("tokens")))
    elif etype == "handoff":
        name = "handoff"
        put(attrs, "handoff.from_agent", inputs.get("from_agent"))
        put(attrs, "handoff.to_agent", inputs.get("to_agent"))
        put(attrs, "handoff.reason", meta.get("reason"))
        if inputs.get("context"):
            attrs["handoff.context"] = text(inputs["context"])
    elif etype == "file_gen":
        name = "file"
        put(attrs, "file.path", inputs.get("file_path"))
        put(attrs, "cmbagent.file_type", inputs.get("file_type"))
        put(attrs, "file.size", number(meta.get("size_bytes")))
    elif etype == "error":
        name = "exception"
        failure = event.get("error_message") or ""
        attrs.update(exception_attributes(failure, sub))
        put(attrs, "exception.stacktrace", meta.get("traceback"))  # OpenTelemetry's name; Phoenix shows it
    else:
        name = f"{etype}.{sub}" if sub else str(etype)
        put(attrs, "cmbagent.agent_name", event.get("agent_name"))
        if event.get("inputs") is not None:
            attrs["input.value"] = text(event["inputs"])
        if event.get("outputs") is not None:
            attrs["output.value"] = text(event["outputs"])
        if meta:
            attrs["metadata"] = text(meta)
    return name, attrs, failure


def root_span(run_id: str, run: RunInfo, extra: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The root span's name and attributes, from the run row (and ``extra`` attributes)."""
    mode = run.mode or "run"
    attrs: dict[str, Any] = {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": mode,
                             "gen_ai.conversation.id": run_id, "openinference.span.kind": CHAIN,
                             "cmbagent.run_id": run_id}
    put(attrs, "session.id", run.session_id)
    put_io(attrs, "input", run.task_description or None)
    put(attrs, "cmbagent.run.agent", run.agent)
    put(attrs, "cmbagent.run.model", run.model)
    put(attrs, "cmbagent.run.status", run.status)
    put(attrs, "cmbagent.run.total_events", run.total_events)
    put(attrs, "cmbagent.run.dropped_events", run.dropped_events)
    meta = as_dict(run.meta)
    if meta:
        attrs["metadata"] = text(meta)
    usage = as_dict(meta.get("usage"))
    for key in ("prompt_tokens", "completion_tokens", "total_tokens", "cost"):
        put(attrs, f"cmbagent.usage.{key}", number(usage.get(key)))
    for key, value in extra.items():
        put(attrs, key, value)
    return f"invoke_workflow {mode}", attrs
