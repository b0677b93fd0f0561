"""Runs to an OTLP/HTTP endpoint (Phoenix, Langfuse, Jaeger, Tempo, an OpenTelemetry Collector).

Two ways in, one mapping (:mod:`.spans`), the official exporter for the wire (protobuf over HTTP,
retries, headers, TLS, compression: ``opentelemetry-exporter-otlp-proto-http``):

- a stored run, read back page by page: :func:`export_stored_run` (``cmbagent-events export RUN_ID
  --otlp URL``);
- a live run, when ``CMBAGENT_EVENTS_OTLP_ENDPOINT`` is set: an :class:`OtlpForwarder` listens to
  the writer's commits. The listener only appends the committed rows to a bounded queue (what does
  not fit is dropped and counted); a thread of its own turns them into spans and sends them, so a
  slow or dead endpoint never slows capture.

Headers for authentication come from ``--header`` or, as for any OTLP exporter, from
``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` / ``OTEL_EXPORTER_OTLP_HEADERS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ..errors import CaptureError
from ..live.wire import event_from_row, update_from_row
from ..store.columns import EVENT_COLUMNS, RUN_COLUMNS, LlmCallRow, LlmContentRow, RunFinish, decode_json
from ..store.sink import Batch
from .span_mapping import RunInfo
from .spans import TraceBuilder

if TYPE_CHECKING:
    from ..store.reader import RunReader

log = logging.getLogger("cmbagent_events.export")

EXPORT_BATCH = 512  # spans per OTLP request
TRACES_PATH = "/v1/traces"


class OtlpExportError(CaptureError):
    """The endpoint refused the spans or could not be reached (after the exporter's retries)."""


def traces_url(url: str) -> str:
    """The OTLP/HTTP traces URL for ``url``: a bare ``http://host:port`` gets ``/v1/traces``.

    Raises:
        ValueError: for anything but an http(s) URL with a host.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"an OTLP endpoint must be an http:// or https:// URL, got {url!r}")
    if parts.path in ("", "/"):
        return url.strip().rstrip("/") + TRACES_PATH
    return url.strip()


def parse_headers(items: Sequence[str]) -> dict[str, str]:
    """``["k=v", ...]`` as a dict. Raises ValueError naming an item without ``=``."""
    headers: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"a header must look like NAME=VALUE, got {item!r}")
        headers[key.strip()] = value.strip()
    return headers


def make_exporter(url: str, headers: Mapping[str, str] | None = None, timeout: float | None = None
                  ) -> OTLPSpanExporter:
    """The official OTLP/HTTP protobuf span exporter for ``url`` (see :func:`traces_url`)."""
    return OTLPSpanExporter(endpoint=traces_url(url), headers=dict(headers) if headers else None, timeout=timeout)


@dataclass(slots=True)
class ExportSummary:
    """What an export sent."""

    run_id: str
    spans: int = 0
    seconds: float = 0.0
    span_counts: Counter[str] = field(default_factory=Counter)
    event_counts: Counter[str] = field(default_factory=Counter)

    @property
    def spans_per_second(self) -> float:
        return self.spans / self.seconds if self.seconds > 0 else 0.0


# -- a stored run ---------------------------------------------------------------------------------------
async def export_stored_run(reader: RunReader, run_id: str, exporter: SpanExporter, *,
                            on_page: Callable[[int], None] | None = None, page_size: int = 2000,
                            batch_size: int = EXPORT_BATCH) -> ExportSummary:
    """Send the stored run ``run_id`` as spans through ``exporter``, reading ``page_size`` events at
    a time (``on_page(n)`` after each page: progress). Repeating it sends the same span ids.

    Raises:
        OtlpExportError: when a request fails (spans sent before it stay sent).
        LookupError: when there is no such run.
    """
    started = time.perf_counter()
    run = await reader.get_run(run_id)
    if run is None:
        raise LookupError(f"no run {run_id!r}")
    builder = TraceBuilder(run_id, last_child_seq=await reader.last_child_seqs(run_id))
    summary = ExportSummary(run_id)
    pending: list[ReadableSpan] = []
    sending: asyncio.Task[None] | None = None  # one request in flight while the next page is read

    async def send(spans: list[ReadableSpan]) -> None:
        nonlocal sending
        if sending is not None:
            await sending
        sending = asyncio.create_task(_send(exporter, spans, summary))

    after = -1
    try:
        while True:
            page = await reader.events_after(run_id, after, page_size)
            if not page:
                break
            exchanges = await reader.llm_exchanges(run_id, [e.id for e in page if e.event_type == "llm_call"])
            for event in page:
                row = {c: getattr(event, c) for c in EVENT_COLUMNS}
                if event.id in exchanges:
                    row["llm"] = exchanges[event.id]
                builder.add(row)
            builder.release_completed()  # agent calls whose last child is on this page (or before)
            after = page[-1].seq
            pending.extend(builder.take())
            while len(pending) >= batch_size:
                await send(pending[:batch_size])
                del pending[:batch_size]
            if on_page is not None:
                on_page(len(page))
        pending.extend(builder.finish(RunInfo.from_model(run)))
        for i in range(0, len(pending), batch_size):
            await send(pending[i:i + batch_size])
    except BaseException:
        if sending is not None:  # let it finish, but report the first failure
            with contextlib.suppress(BaseException):
                await sending
        raise
    if sending is not None:
        await sending
    summary.span_counts = builder.span_counts
    summary.event_counts = builder.event_counts
    summary.seconds = time.perf_counter() - started
    return summary


async def _send(exporter: SpanExporter, spans: list[ReadableSpan], summary: ExportSummary) -> None:
    result = await asyncio.to_thread(exporter.export, spans)
    if result is not SpanExportResult.SUCCESS:
        raise OtlpExportError(f"the OTLP endpoint did not accept {len(spans)} spans "
                              f"({summary.spans} were sent before); see the log above for why")
    summary.spans += len(spans)


# -- a live run -------------------------------------------------------------------------------------------
_END = object()


class Conversations:
    """The model calls' conversations of a run forwarded live: each batch carries only the contents new
    to the run, so the ones seen are kept (up to ``max_bytes``; past it a call's span goes without the
    messages no longer kept, which the stored run and ``export --otlp`` still have)."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._bodies: dict[int, str] = {}  # ordinal -> stored JSON
        self._bytes = 0

    def add(self, calls: Sequence[Any], contents: Sequence[Any]) -> dict[str, dict[str, Any]]:
        """Keep ``contents`` (``llm_contents`` rows); the conversations of ``calls`` (``llm_calls`` rows)."""
        for row in contents:
            body = row[LlmContentRow.body]
            if self._bytes + len(body) <= self.max_bytes:
                self._bodies[row[LlmContentRow.ordinal]] = body
                self._bytes += len(body)
        out = {}
        for row in calls:
            refs = decode_json(row[LlmCallRow.messages]) or []
            response = row[LlmCallRow.response]
            out[row[LlmCallRow.event_id]] = {
                "messages": [decode_json(self._bodies[r]) if r in self._bodies else None for r in refs],
                "response": decode_json(self._bodies[response]) if response in self._bodies else None}
        return out


AFTER_FAILURE_WAIT_S = 1.0  # a run's close waits no longer for its last spans once an export failed


class OtlpForwarder:
    """Forwards one run's committed batches to OTLP as they commit (see the module doc).

    Register :meth:`on_commit` with ``BatchWriter.add_commit_listener`` before the writer starts,
    and call :meth:`close` after the run's writer has stopped. Drops are counted by cause in
    ``dropped``: ``queue_full`` (events the bounded queue had no room for), ``export_failed``
    (spans the endpoint did not take), ``unmappable`` (rows that could not be turned into spans).
    """

    def __init__(self, exporter: SpanExporter, run_id: str, *, max_queued_events: int = 20_000,
                 batch_size: int = EXPORT_BATCH, interval_s: float = 1.0) -> None:
        if max_queued_events < 1 or batch_size < 1:
            raise ValueError("max_queued_events and batch_size must be at least 1")
        self.exporter = exporter
        self.run_id = run_id
        self.max_queued_events = max_queued_events
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.dropped: Counter[str] = Counter()
        self.exported_spans = 0
        self.builder = TraceBuilder(run_id)
        self._conversations = Conversations()
        self._run: dict[str, Any] = {"id": run_id}
        self._queue: deque[Any] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._ended = False
        self.failure: str | None = None  # why the forwarding thread stopped early, if it did
        self._thread = threading.Thread(target=self._work, name=f"cmbagent-events-otlp-{run_id[:8]}", daemon=True)
        self._thread.start()

    # -- writer side: quick, never blocks on I/O ------------------------------------------------------
    def on_commit(self, batch: Batch | None) -> None:
        """The writer's commit listener: queue the batch's rows (``None``: the run is over)."""
        with self._cond:
            if batch is None:
                self._queue.append(_END)
                self._cond.notify()
                return
            rows = len(batch.events) + len(batch.updates)
            if self._queued + rows > self.max_queued_events:
                self.dropped["queue_full"] += rows
                if batch.run_insert is None and batch.run_finish is None:
                    return
                self._queue.append((batch.run_insert, (), (), batch.run_finish, (), ()))
            else:
                self._queue.append((batch.run_insert, batch.events, batch.updates, batch.run_finish,
                                    batch.llm_calls, batch.llm_contents))
                self._queued += rows
            if self._queued >= self.batch_size:
                self._cond.notify()

    # -- forwarding thread ------------------------------------------------------------------------------
    def _work(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # a bug here must not go unnoticed: the trace stays incomplete
            self.failure = repr(exc)
            log.exception("cmbagent-events: OTLP forwarding of run %s stopped", self.run_id)

    def _loop(self) -> None:
        pending: list[ReadableSpan] = []
        while True:
            with self._cond:
                if not self._queue:
                    self._cond.wait(self.interval_s)
                items = list(self._queue)
                self._queue.clear()
                self._queued = 0
            ended = False
            for item in items:
                if item is _END:
                    ended = True
                    break
                try:
                    self._apply(item)
                except Exception:
                    self.dropped["unmappable"] += len(item[1]) + len(item[2])
                    log.exception("cmbagent-events: a committed batch could not be turned into spans")
            pending.extend(self.builder.take())
            if ended:
                pending.extend(self._finish())
            while len(pending) >= self.batch_size or (pending and (ended or not self._queue)):
                chunk, pending = pending[:self.batch_size], pending[self.batch_size:]
                self._export(chunk)
            if ended:
                self._ended = True
                try:
                    self.exporter.shutdown()
                except Exception:
                    log.debug("cmbagent-events: OTLP exporter shutdown failed", exc_info=True)
                return

    def _apply(self, item: tuple) -> None:
        run_insert, events, updates, run_finish, llm_calls, llm_contents = item
        builder = self.builder
        if run_insert is not None:
            self._run.update(zip(RUN_COLUMNS, run_insert))
        exchanges = self._conversations.add(llm_calls, llm_contents)
        for row in events:
            try:
                event = event_from_row(row)
                if event["id"] in exchanges:
                    event["llm"] = exchanges[event["id"]]
                builder.add(event)
            except Exception:
                self.dropped["unmappable"] += 1
                log.debug("cmbagent-events: event not mappable to a span", exc_info=True)
        for row in updates:
            try:
                builder.complete(update_from_row(row))
            except Exception:
                self.dropped["unmappable"] += 1
                log.debug("cmbagent-events: completion not mappable to a span", exc_info=True)
        builder.release_completed()
        if run_finish is not None:
            self._run.update(status=run_finish[RunFinish.status], completed_at=run_finish[RunFinish.completed_at],
                             total_events=run_finish[RunFinish.total_events],
                             dropped_events=run_finish[RunFinish.dropped_events])
            self._run["meta_patch"] = run_finish[RunFinish.meta]

    def _finish(self) -> list[ReadableSpan]:
        run = dict(self._run)
        meta = decode_json(run.get("meta"))
        patch = decode_json(run.pop("meta_patch", None))
        if isinstance(meta, dict) and isinstance(patch, dict):
            meta = {**meta, **patch}
        run["meta"] = meta if meta is not None else patch
        extra = {f"cmbagent.otlp.dropped.{cause}": n for cause, n in self.dropped.items() if n}
        return self.builder.finish(RunInfo.from_mapping(run), extra)

    def _export(self, spans: list[ReadableSpan]) -> None:
        try:
            result = self.exporter.export(spans)
        except Exception:
            log.exception("cmbagent-events: OTLP export failed")
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.exported_spans += len(spans)
        else:
            self.dropped["export_failed"] += len(spans)

    # -- closing ---------------------------------------------------------------------------------------
    def close(self, timeout: float = 10.0) -> bool:
        """Wait (at most ``timeout`` s) until the last spans are sent; call after the writer stopped
        (its final ``on_commit(None)``). True when everything queued was sent or counted. Once an
        export has failed (the endpoint is down) it waits at most ``AFTER_FAILURE_WAIT_S``."""
        if self.dropped["export_failed"]:
            timeout = min(timeout, AFTER_FAILURE_WAIT_S)
        self._thread.join(timeout)
        if self.failure is not None:
            return False
        if self._thread.is_alive():
            log.warning("cmbagent-events: OTLP forwarding of run %s still busy after %.1fs; left behind",
                        self.run_id, timeout)
            return False
        if any(self.dropped.values()):
            log.warning("cmbagent-events: OTLP forwarding of run %s dropped %s", self.run_id, dict(self.dropped))
        return True

    def stats(self) -> dict[str, Any]:
        """Counters: spans sent, drops by cause, and whether the run's trace is complete."""
        stats: dict[str, Any] = {"exported_spans": self.exported_spans, "dropped": dict(self.dropped),
                                 "finished": self._ended}
        if self.failure is not None:
            stats["failure"] = self.failure
        return stats

