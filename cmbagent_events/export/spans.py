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

Ids are derived, never random (span_values.py), so exporting a run twice sends the same spans
(receivers keyed on span id keep one copy). Values are taken as stored: redaction and truncation
already happened at capture. Each row's name and attributes come from span_mapping.py.

:class:`TraceBuilder` takes events in capture order. An agent call is a span with span events of
its own (its messages, handoffs), so it is held until its completion is known and its last child
has been seen, then released once, complete. Leaf spans (model, tool and code calls) are released
at once. The root span is released by :meth:`TraceBuilder.finish`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from .span_mapping import RunInfo, agent_call_span, complete_agent_call, leaf_span, root_span, span_event
from .span_values import exception_attributes, number, root_key, span_id_for, to_ns, trace_id_for

__all__ = ["MAX_SPAN_EVENTS", "SCOPE", "RunInfo", "TraceBuilder", "default_resource", "spans_of_run"]

SCOPE = InstrumentationScope("cmbagent_events", "0.1.0")
MAX_SPAN_EVENTS = 1000  # beyond this a span's events are counted in cmbagent.span_events_omitted


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

    def _parent_key(self, event: Mapping[str, Any]) -> str:
        parent = event.get("parent_event_id")
        if parent and parent in self._known:
            return parent
        if parent:
            self.orphans += 1
        return self._root.key

    def _agent_call(self, event: Mapping[str, Any], t: int) -> None:
        key = str(event.get("id"))
        name, attrs = agent_call_span(self.run_id, event)
        draft = _Draft(key, name, SpanKind.INTERNAL, self._parent_key(event), t, None, "agent_call",
                       attrs, complete=False, last_seen_ns=t)
        self._known.add(key)
        self._open[key] = draft
        if event.get("status") != "running":
            self._finish_agent_call(draft, event, to_ns(event.get("completed_at")))

    def _finish_agent_call(self, draft: _Draft, values: Mapping[str, Any], done: int | None) -> None:
        duration = number(values.get("duration_ms"))
        if done is None and duration is not None:
            done = draft.start_ns + int(duration * 1e6)
        draft.end_ns = max(done or draft.last_seen_ns, draft.start_ns)
        self._last_ns = max(self._last_ns, draft.end_ns)
        draft.complete = True
        failure = complete_agent_call(draft.attributes, values)
        if failure is not None:
            draft.failure = failure

    def _leaf(self, event: Mapping[str, Any], etype: str, t: int) -> None:
        duration = number(event.get("duration_ms"))
        start = t - int(duration * 1e6) if duration is not None else t  # these rows are captured at the end
        name, kind, attrs, status = leaf_span(self.run_id, event, etype)
        draft = _Draft(str(event.get("id")), name, kind, self._parent_key(event), start, t, etype, attrs,
                       status=status)
        if event.get("error_message"):
            draft.add_event("exception", exception_attributes(event["error_message"]), t)
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
        name, attrs, failure = span_event(event, etype, sub)
        if failure is not None:
            target.fail(failure)
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
            draft.add_event("exception", exception_attributes(draft.failure), draft.end_ns)
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
        root.name, attrs = root_span(self.run_id, run, extra)
        root.attributes.update(attrs)
        if run.status in ("failed", "abandoned"):
            root.fail(root.status.description or f"run {run.status}")
        elif run.status == "completed" and root.status.status_code is StatusCode.UNSET:
            root.status = Status(StatusCode.OK)
        elif run.status is None or run.status == "running":
            root.attributes["cmbagent.incomplete"] = True
        self._release(root)



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
