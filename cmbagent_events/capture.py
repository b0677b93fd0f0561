"""EventCaptureManager: the run object, one captured run (the seed's API, made cheap, thread-safe and
non-blocking; "run" and "the seed" are defined in docs/architecture.md, Vocabulary).

It holds the run's capture state (seq, the open-call stack of each task or thread, the node/step
context, per-thread broadcast folds) and every ``capture_*`` call goes through one ``_emit``, the hot
path: it assigns the event id, the run-wide ``seq``, the parent (the innermost agent call open in the
*current task or thread*, kept in a ContextVar, not in a shared list), the node/step context and the
per-node ``execution_order``, builds the one record and puts it on the bus. No I/O, no JSON, no
datetime: those happen in the writer. Capture calls never raise into the caller; a failure inside
one is counted as a dropped event.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from .bus import CAPTURE_FAILED, INTERRUPTED, EventBus, accounted
from .capture_values import (
    COPIES,
    ErrorText,
    LlmExchange,
    TracebackText,
    as_numbers,
    fresh_meta,
    is_given,
    mark_recorded,
    snapshot,
)
from .config import CaptureConfig
from .ids import event_id_prefix
from .records import COMPLETE, COST_SOURCES, FILE_ROW, INSERT, LLM_ROW, MESSAGE_ROW, EventRecord

if TYPE_CHECKING:
    from .live.subscribers import Subscription
    from .writer import RunWriter

__all__ = ["EventCaptureManager", "live_runs"]

log = logging.getLogger("cmbagent_events")

_time_ns = time.time_ns
_perf_ns = time.perf_counter_ns
PERF_SAMPLE_MASK = 63  # time one capture call in 64 for avg_capture_time_us


class EventCaptureManager:
    """Captures one run's events onto a bounded bus drained by a background writer (see the module doc).

    Normally created by :func:`cmbagent_events.capture_run` (which hands it its bus, writer and OTLP
    forwarder); every ``capture_*`` method is synchronous, safe from any thread, never blocks and never
    raises, and returns the new event id (or None when capture is disabled, the event type is
    switched off, or the run was sampled out).
    """

    def __init__(
        self,
        run_id: str,
        session_id: str = "default",
        *,
        config: CaptureConfig | None = None,
        enabled: bool | None = None,
        bus: EventBus | None = None,
        writer: RunWriter | None = None,
        otlp_forwarder: Any = None,
        own_files: frozenset[str] = frozenset(),
    ) -> None:
        self.config = config or CaptureConfig()
        self.own_files = own_files  # this run's database files: never reported as files a run produced
        self.run_id = run_id
        self.session_id = session_id
        self.enabled = self.config.enabled if enabled is None else enabled
        self.bus = bus if bus is not None else EventBus(self.config.queue_size, self.config.buffer_size,
                                                        self.config.queue_max_bytes)
        self.writer = writer  # None: nothing is written (capture off, or a bare run object in tests)
        self.otlp_forwarder = otlp_forwarder  # export.otlp.OtlpForwarder when CMBAGENT_EVENTS_OTLP_ENDPOINT is set
        self.current_node_id: str | None = None
        self.current_step_id: str | None = None
        self._prefix = event_id_prefix(run_id)
        # atomic under the GIL: gapless, unique seq. Drawn with ``for seq in self._seqs: break`` on the
        # hot path: no call, so no Ctrl-C / SIGTERM can land between the draw and its store (see bus.accounted)
        self._seqs = itertools.count()
        self._next_seq = self._seqs.__next__
        self._issued = 0  # one past the last seq handed out (stats and execution_order base)
        self._node_base = 0  # seq at which the current node started
        self._stack: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
            f"cmbagent_events_stack_{run_id}", default=()
        )
        self._stack_get = self._stack.get
        self._put = self.bus.put
        self._open_calls: dict[str, tuple[int, Any]] = {}  # open agent_call id -> (start ns, agent name)
        self._track = self.config.track_perf
        self._capture_ns = 0
        self._capture_count = 0
        self._failure_logged = False
        self.lost_completions = 0  # agent-call completions that could not be queued (not events: no seq)
        self.run_meta: dict[str, Any] = {}  # merged into the run row's meta when it closes (annotate)
        self._closed = False
        _live_runs.add(self)
        # what integrations attach to agents to remember their run across threads
        self.ref: weakref.ref[Any] = weakref.ref(self)  # Any: a subclass of the run object
        self._seen: set[int] = set()  # ids of objects first_sight() has seen
        self._usage_lock = threading.Lock()
        self.usage: dict[str, float] = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
                                         "cost": 0.0}  # summed over llm_call events, stored on the run
        cfg = self.config
        self._fold = cfg.broadcasts == "fold"
        self._llm_messages = cfg.capture_llm_messages
        self._conversations: dict[int, list[Any]] = {}  # LlmExchange's copies of each conversation's last request
        self._folds: dict[int, list[Any]] = {}  # thread id -> [message, sender, recipients, record fields]
        self._fold_lock = threading.Lock()
        self._on = {
            "agent_call": cfg.capture_agent_calls,
            "tool_call": cfg.capture_tool_calls,
            "code_exec": cfg.capture_code_exec,
            "file_gen": cfg.capture_file_gen,
            "handoff": cfg.capture_handoffs,
            "message": cfg.capture_messages,
        }

    # -- context ---------------------------------------------------------------------------
    def set_context(self, node_id: str | None = None, step_id: str | None = None) -> None:
        """Set the DAG node / workflow step that following events belong to.

        A new ``node_id`` restarts ``execution_order`` at 0, as in the seed. An empty value (None,
        ``""``, 0) leaves the current one. Any other object is kept as given: the writer turns it into
        text (its ``__str__``/``__repr__`` run there, never on the caller's thread or event loop).
        """
        try:
            if self._folds:
                self._flush_fold(threading.get_ident())
            if is_given(node_id):
                self.current_node_id = node_id
                self._node_base = self._issued
            if is_given(step_id):
                self.current_step_id = step_id
        except Exception:  # never raised into the caller
            self._log_failure()

    @property
    def execution_order(self) -> int:
        """Events captured since the current node started (the next event's execution_order)."""
        return self._issued - self._node_base

    def open_call_agent(self, event_id: str | None) -> Any:
        """The agent name of an open agent call (None when it is not open)."""
        opened = self._open_calls.get(event_id) if event_id else None
        return opened[1] if opened else None

    def current_parent(self) -> str | None:
        """Id of the innermost agent call open in this task/thread, if any."""
        stack = self._stack.get()
        return stack[-1] if stack else None

    def event_stack(self) -> tuple[str, ...]:
        """The open agent calls of this task/thread, outermost first."""
        return self._stack.get()

    def adopt_stack(self, stack: tuple[str, ...]) -> None:
        """Make ``stack`` the open-call stack of the current task/thread.

        Integrations call this when work hops to a thread that lost the contextvars (AG2's
        ``run_in_executor`` and background threads), so nesting survives the hop.
        """
        self._stack.set(stack)

    # -- the seam for integrations ---------------------------------------------------------------
    def captures(self, kind: str) -> bool:
        """Whether events of ``kind`` ("agent_call", "file_gen", ...) are captured (capture on and
        the kind not switched off in the config); lets integrations skip work for switched-off kinds."""
        return self.enabled and self._on.get(kind, True)

    def first_sight(self, obj: Any) -> bool:
        """True the first time this run sees ``obj`` (by identity), e.g. to record an agent's
        configuration once per run rather than on every call."""
        key = id(obj)
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def abandon_after_fork(self) -> None:
        """In a forked child: stop capturing and let go of the parent's writer and queue (its
        queued records are the parent's to write)."""
        self.enabled = False
        self._closed = True
        self.writer = None
        self.bus.set_waker(None)
        self.bus.discard()

    # -- the hot path ----------------------------------------------------------------------------
    def _emit(self, kind_key: str, event_type: str, subtype: str | None, agent: Any, *, inputs: Any = None,
              outputs: Any = None, error: str | ErrorText | None = None, status: str = "completed",
              duration_ms: float | None = None, meta: Any = None, extra: Any = None, push: bool = False,
              at: tuple[int, str | None, int] | None = None) -> str | None:
        """Queue one event (the only place an event's record is built); its id, or None.

        ``push``: the event is an agent call that stays open (later events nest under it until it
        completes). ``at``: (time ns, parent id, depth) taken earlier, for a folded broadcast.
        """
        # Hot path: ~0.5 us. Bound methods are cached on the instance and only one event in
        # PERF_SAMPLE_MASK + 1 (64) is timed, so tracking costs ~nothing.
        if not self.enabled or not self._on.get(kind_key, True):
            return None
        if self._folds:  # a broadcast of this thread being folded is complete: it goes first
            self._flush_fold(threading.get_ident())
        seq = -1
        try:
            for seq in self._seqs:  # noqa: B007 (seq = next(self._seqs) with no call: see __init__)
                break
            timed = self._track and not seq & PERF_SAMPLE_MASK
            if timed:
                t0 = _perf_ns()
            self._issued = seq + 1
            stack = self._stack_get()
            eid = self._prefix + str(seq).zfill(9)  # fixed width: ids sort by seq, B-tree appends (an f-string's
            # {seq:09} goes through the advanced formatter: ~2k instructions more per event)
            if at is None:
                now, parent, depth = _time_ns(), stack[-1] if stack else None, len(stack)
            else:
                now, parent, depth = at
            self._put(EventRecord(
                INSERT, eid, seq, now, event_type, subtype, agent, parent, depth, self.current_node_id,
                self.current_step_id, seq - self._node_base, inputs, outputs, error, status, duration_ms, meta, extra,
            ))
            seq = -1  # queued: from here on, nothing to account for
            if push:
                self._stack.set((*stack, eid))
                self._open_calls[eid] = (now, agent)
            if timed:
                self._capture_ns += _perf_ns() - t0
                self._capture_count += 1
        except Exception as exc:  # never into the caller; counted so the loss shows on the run
            if seq >= 0 and not accounted(exc, seq):
                self.bus.count_dropped(1, CAPTURE_FAILED)
            self._log_failure()
            return None
        except BaseException as exc:  # Ctrl-C / SIGTERM landed mid-call: the event is lost, counted, and it unwinds
            if seq >= 0 and not accounted(exc, seq):  # unless the bus had queued or counted it already
                self.bus.count_dropped(1, INTERRUPTED)
            raise
        return eid

    def _capture_failed(self) -> None:
        """A capture call failed before its event was queued (arguments it could not even read): the
        event's seq is used up and counted as dropped, so the gap in seq says where it was."""
        try:
            if self.enabled:
                self._issued = self._next_seq() + 1
                self.bus.count_dropped(1, CAPTURE_FAILED)
            self._log_failure()
        except Exception:  # nothing may reach the caller
            pass

    def _log_failure(self) -> None:
        if not self._failure_logged:  # once per run: a hostile value repeated 10,000 times is one story
            self._failure_logged = True
            log.exception("cmbagent-events: a capture call failed (counted as dropped; logged once per run)")


    # -- broadcast folding (see EventCaptureManager.capture_relay) --------------------------------
    def _fold_relay(self, sender: str | None, recipient: str | None, content: Any, metadata: Any,
                    message: Any) -> None:
        """Add this relay to the broadcast folded on this thread, or start a new one (the previous
        one, of another message or sender, is recorded first)."""
        thread = threading.get_ident()
        with self._fold_lock:
            pending = self._folds.get(thread)
            if pending is not None and pending[0] is message and pending[1] == sender:
                pending[2].append(recipient)
                return
        if pending is not None:
            self._flush_fold(thread)
        stack = self._stack_get()
        recipients = [recipient]
        meta = {"broadcast": True, **fresh_meta(metadata), "recipients": recipients}
        self._folds[thread] = [message, sender, recipients, _time_ns(), stack[-1] if stack else None, len(stack),
                               {"sender": sender, "content": snapshot(content)}, meta]

    def extend_fold(self, sender: str | None, recipient: str | None, message: Any) -> bool:
        """The fast path of :meth:`capture_relay` for integrations: True when this relay of
        ``message`` by ``sender`` joined the broadcast being folded on this thread (nothing more to
        capture); False when ``capture_relay`` must be called. Never raises."""
        if not self._folds:
            return False
        try:
            with self._fold_lock:
                pending = self._folds.get(threading.get_ident())
                if pending is not None and pending[0] is message and pending[1] == sender:
                    pending[2].append(recipient)
                    return True
        except Exception:
            self._log_failure()
        return False

    def _flush_fold(self, thread: int) -> None:
        """Record the folded broadcast pending on ``thread`` (if any) as one event."""
        with self._fold_lock:
            pending = self._folds.pop(thread, None)
        if pending is None:
            return
        _message, sender, _recipients, started, parent, depth, inputs, meta = pending
        self._emit("message", "agent_call", "message", sender, inputs=inputs, meta=meta, at=(started, parent, depth))

    def _flush_folds(self) -> None:
        """Record every pending folded broadcast (before a flush barrier or the close)."""
        for thread in list(self._folds):
            self._flush_fold(thread)

    # -- the seed's API -------------------------------------------------------------------------
    def capture_agent_call(self, agent_name: str, message: Any, context: dict[str, Any] | None = None,
                           metadata: dict[str, Any] | None = None) -> str | None:
        """An agent starts working on ``message``: one row, status ``running`` until its response."""
        try:  # the values' copies inline (snapshot, fresh_meta): this runs for every reply
            copy = COPIES.get(type(message))
            if copy is not None:
                message = copy(message)
            if context is not None:
                context = snapshot(context)
            meta = dict.copy(metadata) if type(metadata) is dict else fresh_meta(metadata)
            return self._emit("agent_call", "agent_call", "start", agent_name, inputs=(message, context),
                              status="running", meta=meta, push=True)
        except Exception:
            self._capture_failed()
            return None

    def capture_agent_response(self, agent_name: str, response: Any, event_id: str | None = None,
                               metadata: dict[str, Any] | None = None) -> str | None:
        """Complete the agent call ``event_id`` with ``response`` (or record a standalone completion)."""
        try:
            if event_id is not None:
                return self.finish_agent_call(event_id, response=response, metadata=metadata)
            return self._emit("agent_call", "agent_call", "complete", agent_name,
                              outputs={"response": snapshot(response)}, meta=fresh_meta(metadata))
        except Exception:
            self._capture_failed()
            return None

    def finish_agent_call(self, event_id: str, *, response: Any = None, error: BaseException | str | None = None,
                          metadata: dict[str, Any] | None = None) -> str | None:
        """Close an open agent call: completed with ``response``, or failed with ``error``.

        The row keeps its id; the completion is applied as an UPDATE (or merged into the INSERT when
        both are in the same batch). The call leaves the current task's open-call stack.
        """
        if not self.enabled or not self._on["agent_call"]:
            return None
        if self._folds:
            self._flush_fold(threading.get_ident())
        try:
            now = _time_ns()
            opened = self._open_calls.pop(event_id, None)
            duration = (now - opened[0]) / 1e6 if opened is not None else None
            stack = self._stack.get()
            if stack and stack[-1] == event_id:
                self._stack.set(stack[:-1])
            elif event_id in stack:
                self._stack.set(stack[: stack.index(event_id)])
            if error is None:
                subtype, status, err = "complete", "completed", None
            else:
                subtype, status = "error", "failed"
                err = error if isinstance(error, str) else ErrorText.of(type(error).__name__, error)
            copy = COPIES.get(type(response))
            if copy is not None:
                response = copy(response)
            # a COMPLETE record: no seq, it is not an event of its own; outputs {"response": ...} is
            # built by the writer (see records.INPUT_FIELDS)
            self._put(EventRecord(COMPLETE, event_id, -1, now, None, subtype, None, None, 0, None, None, 0, None,
                                  response, err, status, duration,
                                  fresh_meta(metadata) if metadata is not None else None, None))
        except Exception:  # a completion is not an event (no seq): counted apart, never raised
            self.lost_completions += 1
            self._log_failure()
            return None
        return event_id

    def capture_tool_call(self, agent_name: str, tool_name: str, arguments: Any, result: Any = None,
                          metadata: dict[str, Any] | None = None) -> str | None:
        """A tool/function invocation (with its result when known)."""
        try:
            meta = fresh_meta(metadata)
            failed = meta.get("success") is False
            # a failed call's result text is its error (AG2: "Error: ..."): on its own row too
            error = result if failed and type(result) is str else None
            return self._emit("tool_call", "tool_call", "execute", agent_name, inputs=(tool_name, snapshot(arguments)),
                              outputs={"result": snapshot(result)} if result is not None else None, error=error,
                              status="failed" if failed else "completed", duration_ms=meta.get("duration_ms"),
                              meta=meta)
        except Exception:
            self._capture_failed()
            return None

    def capture_code_execution(self, agent_name: str, code: str, language: str = "python", result: Any = None,
                               exit_code: int | None = None, duration_ms: float | None = None,
                               metadata: dict[str, Any] | None = None) -> str | None:
        """A code block run: subtype ``complete`` on exit code 0, else ``error``."""
        try:
            meta = fresh_meta(metadata)
            meta["language"] = language
            meta["exit_code"] = exit_code
            meta["code_length"] = str.__len__(code) if isinstance(code, str) else None
            ok = type(exit_code) is int and exit_code == 0
            return self._emit("code_exec", "code_exec", "complete" if ok else "error", agent_name, inputs=(code,),
                              outputs={"result": snapshot(result)}, status="completed" if ok else "failed",
                              duration_ms=duration_ms, meta=meta)
        except Exception:
            self._capture_failed()
            return None

    def capture_file_generation(self, agent_name: str, file_path: str, file_type: str,
                                size_bytes: int | None = None, metadata: dict[str, Any] | None = None) -> str | None:
        """A file produced by the run; also written as a ``files`` row linked to the event."""
        try:
            meta = {"size_bytes": size_bytes, **fresh_meta(metadata)}
            return self._emit("file_gen", "file_gen", "create", agent_name, inputs=(file_path, file_type), meta=meta,
                              extra=(FILE_ROW, file_path, file_type, size_bytes))
        except Exception:
            self._capture_failed()
            return None

    def capture_handoff(self, from_agent: str | None, to_agent: str | None, context: dict[str, Any] | None = None,
                        reason: str | None = None) -> str | None:
        """Control passes from one agent to another (speaker selection, group-pattern transition)."""
        try:
            return self._emit("handoff", "handoff", "transfer", from_agent,
                              inputs=(from_agent, to_agent, snapshot(context)),
                              meta={"reason": reason} if reason is not None else {})
        except Exception:
            self._capture_failed()
            return None

    def capture_message(self, sender: str | None, recipient: str | None, content: Any, tokens: int | None = None,
                        metadata: dict[str, Any] | None = None) -> str | None:
        """An agent-to-agent message; also written as a ``messages`` row linked to the event."""
        # inputs {"sender", "recipient", "content"} and meta {"tokens"} are built by the writer from
        # the message row: messages are the most frequent event, so no dicts on their hot path.
        try:
            copy = COPIES.get(type(content))  # snapshot(content) inline
            if copy is not None:
                content = copy(content)
            return self._emit("message", "agent_call", "message", recipient,
                              meta=fresh_meta(metadata) if metadata is not None else None,
                              extra=(MESSAGE_ROW, sender, recipient, content, tokens))
        except Exception:
            self._capture_failed()
            return None

    def capture_relay(self, sender: str | None, recipient: str | None, content: Any,
                      metadata: dict[str, Any] | None = None, message: Any = None) -> str | None:
        """A message a group chat manager forwards (broadcasts) to another member: an event marked
        ``broadcast`` but no ``messages`` row, so that table holds the conversation's turns once each
        (AG2's own chat history) while the trace still shows every delivery.

        Folding (``CMBAGENT_CAPTURE_BROADCASTS=fold``, the default): consecutive relays of the same
        ``message`` object by the same sender on one thread are one event, ``agent_name`` the sender,
        ``meta.recipients`` every recipient in order. It is recorded (its seq assigned) when the fold
        is complete: at this thread's next event, agent call completion or context change, at
        ``flush()`` or at the run's close; until then this returns None. Without ``message``, or with
        ``each``, every relay is its own event (``agent_name`` the recipient), as returned.
        """
        try:
            if message is None or not self._fold:
                meta = {"broadcast": True, **fresh_meta(metadata)}
                return self._emit("message", "agent_call", "message", recipient,
                                  inputs={"sender": sender, "recipient": recipient, "content": snapshot(content)},
                                  meta=meta)
            if self.enabled and self._on["message"]:
                self._fold_relay(sender, recipient, content, metadata, message)
        except Exception:
            self._capture_failed()
        return None

    def capture_error(self, agent_name: str, error_message: str | ErrorText, error_type: str | None = None,
                      metadata: dict[str, Any] | None = None) -> str | None:
        """An error anywhere in the run (always captured while capture is on)."""
        try:
            return self._emit("error", "error", error_type if error_type is not None else "runtime_error",
                              agent_name, error=error_message, status="failed", meta=fresh_meta(metadata))
        except Exception:
            self._capture_failed()
            return None

    def capture_exception(self, agent_name: str | None, error: BaseException, where: str,
                          metadata: dict[str, Any] | None = None, kind: str | None = None,
                          error_type: str | None = None) -> str | None:
        """An ``error`` event for ``error`` with its formatted traceback (``meta.traceback``) and
        ``meta.where``; one per exception per run: None when this run already recorded it (an inner
        hook saw it first). ``kind`` prefixes the message (``"Kind: message"``); ``error_type`` (the
        subtype) defaults to the exception's class name."""
        if not self.enabled:
            return None
        try:
            if not mark_recorded(error, self.run_id):
                return None
            meta = fresh_meta(metadata)
            meta["where"] = where
            meta["traceback"] = TracebackText(error)
            return self.capture_error(agent_name or where, ErrorText.of(kind, error),
                                      error_type or type(error).__name__, meta)
        except Exception:
            self._capture_failed()
            return None

    def capture_llm_call(self, agent_name: str | None, model: str | None, prompt_tokens: float | None,
                         completion_tokens: float | None, total_tokens: float | None = None, cost: float | None = None,
                         duration_ms: float | None = None, metadata: dict[str, Any] | None = None, *,
                         request: dict[str, Any] | None = None, response: Any = None,
                         cached_tokens: float | None = None, reasoning_tokens: float | None = None,
                         cost_source: str | None = None) -> str | None:
        """One model call with its token usage and cost; the run's totals (``usage``) are summed here.

        ``request``: the parameters the client was called with (``messages``, ``tools``, ``model``,
        ``temperature``, ...) and ``response``: what it returned (e.g. an OpenAI ``ChatCompletion``);
        both are stored whole in ``llm_calls`` (``CMBAGENT_CAPTURE_LLM_MESSAGES``), each distinct message
        once per run. ``cost_source``: ``reported`` (by the API or the caller), ``ag2_price_table``
        (computed by AG2) or ``unknown``; by default ``reported`` when a cost is given.
        """
        if not self.enabled:
            return None
        try:
            # counts and cost as numbers (an API may hand over "12" or a Decimal); anything else counts 0
            prompt_tokens, completion_tokens, total_tokens, cost, cached_tokens, reasoning_tokens = as_numbers(
                (prompt_tokens, completion_tokens, total_tokens, cost, cached_tokens, reasoning_tokens))
            if total_tokens is None and (prompt_tokens is not None or completion_tokens is not None):
                total_tokens = (prompt_tokens or 0) + (completion_tokens or 0)
            if cost_source not in COST_SOURCES:
                cost_source = "unknown" if cost is None else "reported"
            with self._usage_lock:
                totals = self.usage
                totals["calls"] += 1
                totals["prompt_tokens"] += prompt_tokens or 0
                totals["completion_tokens"] += completion_tokens or 0
                totals["total_tokens"] += total_tokens or 0
                totals["cost"] += cost or 0.0
                if cached_tokens:
                    totals["cached_tokens"] = totals.get("cached_tokens", 0) + cached_tokens
                if reasoning_tokens:
                    totals["reasoning_tokens"] = totals.get("reasoning_tokens", 0) + reasoning_tokens
            exchange = None
            if self._llm_messages and (request is not None or response is not None):
                exchange = (LLM_ROW, LlmExchange(request, response, self._conversations))
            return self._emit("llm_call", "llm_call", "complete", agent_name, inputs=(model,),
                              outputs=(prompt_tokens, completion_tokens, total_tokens, cost, cached_tokens,
                                       reasoning_tokens, cost_source),
                              duration_ms=duration_ms, meta=fresh_meta(metadata) or {"model": model}, extra=exchange)
        except Exception:
            self._capture_failed()
            return None

    def capture_event(self, event_type: str, event_subtype: str | None = None, agent_name: str | None = None,
                      inputs: Any = None, outputs: Any = None, duration_ms: float | None = None,
                      metadata: dict[str, Any] | None = None, status: str = "completed") -> str | None:
        """Any other event type (e.g. ``llm_call`` with tokens and cost); nested like the rest."""
        try:
            return self._emit(event_type if type(event_type) is str else "custom", event_type, event_subtype,
                              agent_name, inputs=snapshot(inputs), outputs=snapshot(outputs), status=status,
                              duration_ms=duration_ms, meta=fresh_meta(metadata))
        except Exception:
            self._capture_failed()
            return None

    def annotate(self, **meta: Any) -> None:
        """Add ``meta`` to the run row's ``meta`` when the run closes (e.g. ``replay_of``); values
        stored like every value (secrets redacted). Never raises."""
        try:
            self.run_meta.update(meta)
        except Exception:
            self._log_failure()

    # -- stats, flush, close -------------------------------------------------------------------
    def get_performance_stats(self) -> dict[str, Any]:
        """Counters of this run's capture (cheap; safe from any thread)."""
        writer = self.writer
        count = self._capture_count
        avg_us = self._capture_ns / count / 1000.0 if count else 0.0
        return {
            "total_events": self._issued,
            "dropped_events": self.bus.dropped,
            "drops": dict(self.bus.drop_causes),  # cause -> events lost
            "lost_completions": self.lost_completions + self.bus.lost_completions,
            "queue_depth": len(self.bus),
            "queue_high_water": writer.queue_high_water if writer else 0,
            "batches_written": writer.batches_written if writer else 0,
            "records_written": writer.records_written if writer else 0,
            "avg_capture_time_us": avg_us,
            "avg_capture_time_ms": avg_us / 1000.0,
            "total_capture_time_ms": self._capture_ns / 1e6,
            "enabled": self.enabled,
            "current_node_id": self.current_node_id,
            "current_step_id": self.current_step_id,
            "execution_order": self.execution_order,
            "last_error": writer.last_error if writer else None,
            "reconnects": writer.reconnects if writer else 0,
            "spilled_events": writer.spilled if writer else 0,
            "spill_path": writer.spill_path if writer else None,
            "otlp": self.otlp_forwarder.stats() if self.otlp_forwarder is not None else None,
        }

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything captured before this call is committed. False on timeout
        (``timeout=None`` waits at most ``config.close_timeout_s``: a flush never hangs).

        Works from any event loop or thread's loop: the barrier is a thread-safe future.
        """
        if self._folds:
            self._flush_folds()
        writer = self.writer
        if writer is None:
            return True
        if timeout is None:
            timeout = self.config.close_timeout_s
        future = writer.request_flush()
        try:  # not wait_for: on 3.11 it returns the result when a cancel (SIGTERM's) lands as it completes
            async with asyncio.timeout(timeout):
                return await asyncio.wrap_future(future)
        except TimeoutError:
            return False

    def request_drain(self) -> None:
        """Ask the writer to commit what it holds now, or to spill it when the database is down, without
        waiting (safe in a signal handler: the barrier is queued from the writer's own loop)."""
        writer = self.writer
        loop = writer.loop if writer is not None else None
        if loop is not None and not loop.is_closed():
            writer.terminating = True  # type: ignore[union-attr]  # a database down now: spill, do not wait
            loop.call_soon_threadsafe(writer.request_flush)  # type: ignore[union-attr]

    def flush_sync(self, timeout: float | None = None) -> bool:
        """:meth:`flush` for synchronous code (not from the writer's own loop thread)."""
        if self._folds:
            self._flush_folds()
        writer = self.writer
        if writer is None:
            return True
        try:
            return writer.request_flush().result(self.config.close_timeout_s if timeout is None else timeout)
        except TimeoutError:  # concurrent.futures.TimeoutError is this builtin since 3.11
            return False

    async def aclose(self, timeout: float | None = None) -> bool:
        """Stop capturing, drain the queue (bounded by ``timeout``) and stop the writer."""
        if self._folds and self.enabled:
            self._flush_folds()
        self.enabled = False
        self._conversations = {}  # the copies it holds are the queued exchanges' now
        if self._closed:
            return True
        self._closed = True
        writer = self.writer
        if writer is None:
            return True
        timeout = self.config.close_timeout_s if timeout is None else timeout
        loop = writer.loop
        if loop is asyncio.get_running_loop():
            return await writer.aclose(timeout)
        future = asyncio.run_coroutine_threadsafe(writer.aclose(timeout), loop)  # type: ignore[arg-type]
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout + 1.0)
        except TimeoutError:
            return False

    close = aclose  # the seed's name

    def subscribe(self, maxsize: int = 10_000) -> Subscription:
        """Live events of this run once committed: ``async for ev in run.subscribe(): ...``.

        Each subscriber has its own queue of ``maxsize`` items; when it falls behind it is told how
        many it missed, and capture never waits for it. See :mod:`cmbagent_events.live.subscribers`.
        """
        from .live.subscribers import subscribe

        writer = self.writer if self.enabled else None
        return subscribe(writer, self._issued, maxsize)


# -- the runs of this process (fork safety, see current_run.py) -----------------------------------
_live_runs: weakref.WeakSet[EventCaptureManager] = weakref.WeakSet()


def live_runs() -> list[EventCaptureManager]:
    """The runs alive in this process."""
    return list(_live_runs)
