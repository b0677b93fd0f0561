"""A captured run as OpenTelemetry spans (GenAI semantic conventions + OpenInference span kinds).

The mapping, one stored row at a time:

=====================  ===================================================================
run                    root span ``invoke_workflow {mode}`` (OpenInference ``CHAIN``)
agent_call             span ``invoke_agent {agent}`` (``AGENT``), from start to completion
llm_call               span ``chat {model}`` (``LLM``, kind CLIENT) with model, tokens, cost
tool_call              span ``execute_tool {tool}`` (``TOOL``) with arguments and result
code_exec              span ``execute_code {language}`` (``TOOL``) with ``process.exit.code``
agent_call/message     span event ``message`` on the enclosing agent call (or the root)
handoff                span event ``handoff`` (from, to, reason)
file_gen               span event ``file``
error                  span event ``exception`` and status ERROR on the enclosing span
anything else          span event ``{type}.{subtype}`` (e.g. ``workflow.start``, ``plan.complete``)
=====================  ===================================================================

Ids are derived, never random: the trace id is the run id (a UUID) and each span id a hash of
its event id, so exporting a run twice sends the same spans (receivers keyed on span id keep one
copy) and a span's parent is known from ``parent_event_id`` alone. Values are taken as stored:
redaction and truncation already happened at capture.

:class:`TraceBuilder` takes events in capture order. An agent call is a span with span events of
its own (its messages, handoffs), so it is held until its completion is known and its last child
has been seen, then released once, complete. Leaf spans (model, tool and code calls) are released
at once. The root span is released by :meth:`TraceBuilder.finish`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

SCOPE = InstrumentationScope("cmbagent_events", "0.1.0")
MAX_SPAN_EVENTS = 1000  # beyond this a span's events are counted in cmbagent.span_events_omitted
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# OpenInference span kinds (what Phoenix's UI groups and draws by).
AGENT, LLM, TOOL, CHAIN = "AGENT", "LLM", "TOOL", "CHAIN"


# -- ids ----------------------------------------------------------------------------------------------
def trace_id_for(run_id: str) -> int:
    """The trace id of a run: the run id itself when it is a UUID (so it can be searched for),
    else 128 bits of its SHA-256."""
    try:
        value = uuid.UUID(run_id).int
    except ValueError:
        value = int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:16], "big")
    return value or 1


def span_id_for(key: str) -> int:
    """A span id from an event id (or ``run:<run id>`` for the root): 64 bits of its SHA-256."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") or 1


def root_key(run_id: str) -> str:
    return f"run:{run_id}"


# -- values ----------------------------------------------------------------------------------------------
def to_ns(value: Any) -> int | None:
    """A stored timestamp (datetime, naive meaning UTC, or ISO 8601 text) in ns since the epoch."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _text(value: Any) -> str:
    """A stored value as an attribute string: text as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _mime(value: Any) -> str:
    return "text/plain" if isinstance(value, str) else "application/json"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _put(attrs: dict[str, Any], key: str, value: Any) -> None:
    """Set an attribute when there is a value (OTLP has no null)."""
    if value is None:
        return
    if isinstance(value, (str, bool, int, float)):
        attrs[key] = value
    else:
        attrs[key] = _text(value)


def _io(attrs: dict[str, Any], prefix: str, value: Any) -> None:
    """OpenInference ``input.*`` / ``output.*``: the value and its MIME type."""
    if value is None:
        return
    attrs[f"{prefix}.value"] = _text(value)
    attrs[f"{prefix}.mime_type"] = _mime(value)


# -- drafts: spans still being assembled ---------------------------------------------------------------
@dataclass(slots=True)
class _Draft:
    key: str  # event id (or root_key)
    name: str
    kind: SpanKind
    parent_key: str | None
    start_ns: int
    end_ns: int | None
    span_type: str  # what the span counts as in TraceBuilder.span_counts
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    omitted_events: int = 0
    status: Status = field(default_factory=Status)
    complete: bool = True
    last_seen_ns: int = 0  # latest time seen in the span (the end of one never completed)
    failure: str | None = None  # an agent call's own error: its last event, at its end

    def add_event(self, name: str, attributes: dict[str, Any], t_ns: int | None) -> None:
        if len(self.events) >= MAX_SPAN_EVENTS:
            self.omitted_events += 1
            return
        t = t_ns if t_ns is not None else self.start_ns
        self.last_seen_ns = max(self.last_seen_ns, t)
        self.events.append(Event(name, attributes, timestamp=t))

    def fail(self, description: str | None) -> None:
        self.status = Status(StatusCode.ERROR, description or None)


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


def default_resource() -> Resource:
    """``service.name`` cmbagent-events and Phoenix's project, unless OTEL_SERVICE_NAME /
    OTEL_RESOURCE_ATTRIBUTES say otherwise (``Resource.create`` reads them)."""
    detected = Resource.create({})
    ours: dict[str, Any] = {"telemetry.sdk.name": "cmbagent-events"}
    if str(detected.attributes.get("service.name", "")).startswith("unknown_service"):
        ours["service.name"] = "cmbagent-events"
    if "openinference.project.name" not in detected.attributes:
        ours["openinference.project.name"] = "cmbagent-events"
    return detected.merge(Resource(ours))


# -- the builder ----------------------------------------------------------------------------------------
class TraceBuilder:
    """One run's events in, finished :class:`ReadableSpan` objects out (see the module doc).

    ``last_child_seq`` (event id -> seq of its last direct child), when given, lets a stored
    export release an agent call as soon as its last child has been read; without it (live
    forwarding) complete agent calls are released by :meth:`release_completed`.
    """

    def __init__(self, run_id: str, resource: Resource | None = None,
                 last_child_seq: Mapping[str, int] | None = None) -> None:
        self.run_id = run_id
        self.trace_id = trace_id_for(run_id)
        self.resource = resource or default_resource()
        self._last_child = dict(last_child_seq) if last_child_seq is not None else None
        self._root = _Draft(root_key(run_id), "invoke_workflow", SpanKind.INTERNAL, None, 0, None, "workflow",
                            complete=False)
        self._open: dict[str, _Draft] = {}  # agent calls held back (event id -> draft)
        self._known: set[str] = set()  # agent calls seen: valid parents
        self._ready: list[ReadableSpan] = []
        self._seen_through = -1  # highest seq added
        self._first_ns: int | None = None
        self._last_ns = 0
        self.span_counts: Counter[str] = Counter()  # spans released, by type
        self.event_counts: Counter[str] = Counter()  # span events added, by name
        self.orphans = 0  # children whose parent was unknown or already released: put under the root

    # -- input ------------------------------------------------------------------------------------
    def add(self, event: Mapping[str, Any]) -> None:
        """One stored event (the ``execution_events`` columns as a dict)."""
        etype, sub = event.get("event_type"), event.get("event_subtype")
        seq = event.get("seq")
        if isinstance(seq, int) and seq > self._seen_through:
            self._seen_through = seq
        t = to_ns(event.get("timestamp")) or self._last_ns
        self._first_ns = t if self._first_ns is None else min(self._first_ns, t)
        done = to_ns(event.get("completed_at"))
        self._last_ns = max(self._last_ns, t, done or 0)
        if etype == "agent_call" and sub != "message":
            self._agent_call(event, t)
        elif etype in ("llm_call", "tool_call", "code_exec"):
            self._leaf(event, etype, t)
        else:
            self._span_event(event, etype, sub, t)

    def complete(self, update: Mapping[str, Any]) -> None:
        """The completion of an agent call added earlier (``live.wire.update_from_row`` shape)."""
        draft = self._open.get(update.get("id", ""))
        if draft is None:
            return
        merged = dict(update)
        self._finish_agent_call(draft, merged, to_ns(merged.get("completed_at")))

    # -- output -----------------------------------------------------------------------------------
    def release_completed(self) -> None:
        """Release every held agent call whose completion is known and whose children have all
        been added (all of them, without ``last_child_seq``: live batches arrive in capture order)."""
        for key in [k for k, d in self._open.items() if d.complete and self._children_done(k)]:
            self._release(self._open.pop(key))

    def take(self) -> list[ReadableSpan]:
        """Spans released since the last call."""
        ready, self._ready = self._ready, []
        return ready

    def finish(self, run: RunInfo | None = None, extra: Mapping[str, Any] | None = None) -> list[ReadableSpan]:
        """Release everything still held (agent calls never completed end at the last time seen,
        marked ``cmbagent.incomplete``) and the root span; return what :meth:`take` would."""
        for draft in sorted(self._open.values(), key=lambda d: d.start_ns, reverse=True):
            if not draft.complete:
                draft.end_ns = max(draft.last_seen_ns, self._last_ns)
                draft.attributes["cmbagent.incomplete"] = True
            self._release(draft)
        self._open.clear()
        self._finish_root(run or RunInfo(self.run_id), extra or {})
        return self.take()

    # -- mapping ----------------------------------------------------------------------------------
    def _base(self, event: Mapping[str, Any]) -> dict[str, Any]:
        attrs: dict[str, Any] = {"gen_ai.conversation.id": self.run_id}
        _put(attrs, "session.id", event.get("session_id"))
        _put(attrs, "cmbagent.event_id", event.get("id"))
        _put(attrs, "cmbagent.seq", event.get("seq"))
        _put(attrs, "cmbagent.event_type", event.get("event_type"))
        _put(attrs, "cmbagent.event_subtype", event.get("event_subtype"))
        _put(attrs, "cmbagent.agent_name", event.get("agent_name"))
        _put(attrs, "cmbagent.node_id", event.get("node_id"))
        _put(attrs, "cmbagent.step_id", event.get("step_id"))
        meta = event.get("meta")
        if meta:
            attrs["metadata"] = _text(meta)
        return attrs

    def _parent_key(self, event: Mapping[str, Any]) -> str:
        parent = event.get("parent_event_id")
        if parent and parent in self._known:
            return parent
        if parent:
            self.orphans += 1
        return self._root.key

    def _agent_call(self, event: Mapping[str, Any], t: int) -> None:
        key = str(event.get("id"))
        agent = event.get("agent_name") or "agent"
        attrs = self._base(event)
        attrs["gen_ai.operation.name"] = "invoke_agent"
        attrs["gen_ai.agent.name"] = agent
        attrs["agent.name"] = agent
        attrs["openinference.span.kind"] = AGENT
        _io(attrs, "input", _dict(event.get("inputs")).get("message"))
        draft = _Draft(key, f"invoke_agent {agent}", SpanKind.INTERNAL, self._parent_key(event), t, None, "agent_call",
                       attrs, complete=False, last_seen_ns=t)
        self._known.add(key)
        self._open[key] = draft
        if event.get("status") != "running":
            self._finish_agent_call(draft, event, to_ns(event.get("completed_at")))

    def _finish_agent_call(self, draft: _Draft, values: Mapping[str, Any], done: int | None) -> None:
        duration = _number(values.get("duration_ms"))
        if done is None and duration is not None:
            done = draft.start_ns + int(duration * 1e6)
        draft.end_ns = max(done or draft.last_seen_ns, draft.start_ns)
        self._last_ns = max(self._last_ns, draft.end_ns)
        draft.complete = True
        _io(draft.attributes, "output", _dict(values.get("outputs")).get("response"))
        if values.get("event_subtype"):
            draft.attributes["cmbagent.event_subtype"] = values["event_subtype"]
        patch = values.get("meta")
        if patch and isinstance(patch, dict):
            old = json.loads(draft.attributes.get("metadata", "{}"))
            draft.attributes["metadata"] = _text({**(old if isinstance(old, dict) else {}), **patch})
        if values.get("status") == "failed" or values.get("error_message"):
            draft.failure = values.get("error_message") or "failed"

    def _leaf(self, event: Mapping[str, Any], etype: str, t: int) -> None:
        inputs, outputs, meta = _dict(event.get("inputs")), _dict(event.get("outputs")), _dict(event.get("meta"))
        duration = _number(event.get("duration_ms"))
        start = t - int(duration * 1e6) if duration is not None else t  # these rows are captured at the end
        attrs = self._base(event)
        kind = SpanKind.INTERNAL
        status = Status()
        if etype == "llm_call":
            model = inputs.get("model") or meta.get("model") or "unknown"
            usage = _dict(outputs.get("usage"))
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
                value = _number(usage.get(ours))
                if value is not None:
                    if semconv:
                        attrs[semconv] = int(value)
                    attrs[oi] = int(value)
            cost = _number(usage.get("cost"))
            if cost is not None:
                attrs["gen_ai.usage.cost"] = float(cost)
                attrs["llm.cost.total"] = float(cost)
        elif etype == "tool_call":
            tool = inputs.get("tool_name") or "tool"
            name = f"execute_tool {tool}"
            attrs["gen_ai.operation.name"] = "execute_tool"
            attrs["gen_ai.tool.name"] = str(tool)
            attrs["gen_ai.tool.type"] = "function"
            attrs["openinference.span.kind"] = TOOL
            attrs["tool.name"] = str(tool)
            _put(attrs, "gen_ai.tool.call.id", meta.get("call_id"))
            if "arguments" in inputs:
                attrs["gen_ai.tool.call.arguments"] = _text(inputs["arguments"])
                attrs["tool.parameters"] = _text(inputs["arguments"])
                _io(attrs, "input", inputs["arguments"])
            if outputs.get("result") is not None:
                attrs["gen_ai.tool.call.result"] = _text(outputs["result"])
                _io(attrs, "output", outputs["result"])
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
            _put(attrs, "code.language", language)
            exit_code = meta.get("exit_code")
            _put(attrs, "process.exit.code", exit_code)
            _io(attrs, "input", inputs.get("code"))
            _io(attrs, "output", outputs.get("result"))
            if exit_code != 0 or event.get("status") == "failed":
                status = Status(StatusCode.ERROR, f"exit code {exit_code}")
        draft = _Draft(str(event.get("id")), name, kind, self._parent_key(event), start, t, etype, attrs,
                       status=status)
        if event.get("error_message"):
            draft.add_event("exception", _exception(event["error_message"]), t)
            self.event_counts["exception"] += 1
        self._bump(draft.parent_key, t)
        self._release(draft)

    def _span_event(self, event: Mapping[str, Any], etype: Any, sub: Any, t: int) -> None:
        parent_key = event.get("parent_event_id")
        target = self._open.get(parent_key) if parent_key else None
        if target is None:
            if parent_key:
                self.orphans += 1
            target = self._root
        inputs, meta = _dict(event.get("inputs")), _dict(event.get("meta"))
        attrs: dict[str, Any] = {}
        _put(attrs, "cmbagent.event_id", event.get("id"))
        _put(attrs, "cmbagent.seq", event.get("seq"))
        if etype == "agent_call" and sub == "message":
            name = "message"
            _put(attrs, "message.sender", inputs.get("sender"))
            _put(attrs, "message.recipient", inputs.get("recipient"))
            _put(attrs, "message.content", inputs.get("content"))
            if meta.get("broadcast"):
                attrs["message.broadcast"] = True
            _put(attrs, "message.tokens", _number(meta.get("tokens")))
        elif etype == "handoff":
            name = "handoff"
            _put(attrs, "handoff.from_agent", inputs.get("from_agent"))
            _put(attrs, "handoff.to_agent", inputs.get("to_agent"))
            _put(attrs, "handoff.reason", meta.get("reason"))
            if inputs.get("context"):
                attrs["handoff.context"] = _text(inputs["context"])
        elif etype == "file_gen":
            name = "file"
            _put(attrs, "file.path", inputs.get("file_path"))
            _put(attrs, "cmbagent.file_type", inputs.get("file_type"))
            _put(attrs, "file.size", _number(meta.get("size_bytes")))
        elif etype == "error":
            name = "exception"
            message = event.get("error_message") or ""
            attrs.update(_exception(message, sub))
            target.fail(message)
        else:
            name = f"{etype}.{sub}" if sub else str(etype)
            _put(attrs, "cmbagent.agent_name", event.get("agent_name"))
            if event.get("inputs") is not None:
                attrs["input.value"] = _text(event["inputs"])
            if event.get("outputs") is not None:
                attrs["output.value"] = _text(event["outputs"])
            if meta:
                attrs["metadata"] = _text(meta)
        target.add_event(name, attrs, t)
        self.event_counts[name] += 1
        self._bump(target.key, t)

    def _bump(self, key: str | None, t: int) -> None:
        """A child at time ``t``: an agent call that never completes ends no earlier than that."""
        draft = self._open.get(key) if key else None
        if draft is not None and t > draft.last_seen_ns:
            draft.last_seen_ns = t

    def _children_done(self, key: str) -> bool:
        if self._last_child is None:
            return True
        return self._last_child.get(key, -1) <= self._seen_through

    def _release(self, draft: _Draft) -> None:
        if draft.failure is not None:  # after its children's events, whichever way they arrived
            draft.fail(draft.failure)
            draft.add_event("exception", _exception(draft.failure), draft.end_ns)
            self.event_counts["exception"] += 1
        attrs = draft.attributes
        if draft.omitted_events:
            attrs["cmbagent.span_events_omitted"] = draft.omitted_events
        parent = None
        if draft.parent_key is not None:
            parent = SpanContext(self.trace_id, span_id_for(draft.parent_key), is_remote=False,
                                 trace_flags=TraceFlags(TraceFlags.SAMPLED))
        context = SpanContext(self.trace_id, span_id_for(draft.key), is_remote=False,
                              trace_flags=TraceFlags(TraceFlags.SAMPLED))
        end = draft.end_ns if draft.end_ns is not None else draft.start_ns
        self._ready.append(ReadableSpan(
            name=draft.name, context=context, parent=parent, resource=self.resource, attributes=attrs,
            events=tuple(draft.events), kind=draft.kind, status=draft.status, start_time=draft.start_ns,
            end_time=max(end, draft.start_ns), instrumentation_scope=SCOPE))
        self.span_counts[draft.span_type] += 1

    def _finish_root(self, run: RunInfo, extra: Mapping[str, Any]) -> None:
        root = self._root
        start = to_ns(run.started_at) or self._first_ns or 0
        end = to_ns(run.completed_at) or max(self._last_ns, start)
        root.start_ns = min(start, self._first_ns) if self._first_ns is not None else start
        root.end_ns = max(end, root.start_ns)
        mode = run.mode or "run"
        root.name = f"invoke_workflow {mode}"
        attrs = root.attributes
        attrs.update({"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": mode,
                      "gen_ai.conversation.id": self.run_id, "openinference.span.kind": CHAIN,
                      "cmbagent.run_id": self.run_id})
        _put(attrs, "session.id", run.session_id)
        _io(attrs, "input", run.task_description or None)
        _put(attrs, "cmbagent.run.agent", run.agent)
        _put(attrs, "cmbagent.run.model", run.model)
        _put(attrs, "cmbagent.run.status", run.status)
        _put(attrs, "cmbagent.run.total_events", run.total_events)
        _put(attrs, "cmbagent.run.dropped_events", run.dropped_events)
        meta = _dict(run.meta)
        if meta:
            attrs["metadata"] = _text(meta)
        usage = _dict(meta.get("usage"))
        for key in ("prompt_tokens", "completion_tokens", "total_tokens", "cost"):
            _put(attrs, f"cmbagent.usage.{key}", _number(usage.get(key)))
        for key, value in extra.items():
            _put(attrs, key, value)
        if run.status in ("failed", "abandoned"):
            root.fail(root.status.description or f"run {run.status}")
        elif run.status == "completed" and root.status.status_code is StatusCode.UNSET:
            root.status = Status(StatusCode.OK)
        elif run.status is None or run.status == "running":
            attrs["cmbagent.incomplete"] = True
        self._release(root)


def _exception(message: str, error_type: str | None = None) -> dict[str, Any]:
    """``exception.*`` attributes; the type from ``error_type`` or a ``Type: message`` prefix."""
    kind = error_type
    if kind is None and ": " in message:
        head = message.split(": ", 1)[0]
        if head.replace(".", "").replace("_", "").isalnum():
            kind = head
    attrs = {"exception.message": message}
    if kind:
        attrs["exception.type"] = kind
    return attrs


def spans_of_run(run: RunInfo, events: Iterable[Mapping[str, Any]], resource: Resource | None = None
                 ) -> tuple[list[ReadableSpan], TraceBuilder]:
    """Every span of a run whose events are all in hand (in seq order)."""
    events = list(events)
    last_child: dict[str, int] = {}
    for e in events:
        parent = e.get("parent_event_id")
        if parent:
            last_child[parent] = max(last_child.get(parent, -1), e.get("seq", -1))
    builder = TraceBuilder(run.id, resource, last_child)
    spans: list[ReadableSpan] = []
    for e in events:
        builder.add(e)
        builder.release_completed()
    spans.extend(builder.take())
    spans.extend(builder.finish(run))
    return spans, builder
