"""EventCaptureManager: the seed's capture API, made cheap, thread-safe and non-blocking.

Each ``capture_*`` call is one ``_emit`` (:mod:`.emit`, the hot path): the event id, ``seq``,
parent and context assigned, one small record put on the bus. No I/O, no JSON, no datetime: those
happen in the writer. Capture calls never raise into the caller; a failure inside one is counted
as a dropped event.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from .emit import (
    ErrorText,
    EventEmitter,
    TracebackText,
    _meta,
    _number,
    _snap,
    _time_ns,
    live_managers,
    mark_recorded,
)
from .records import COMPLETE, FILE_ROW, MESSAGE_ROW, EventRecord

if TYPE_CHECKING:
    from .live.subscribers import Subscription

__all__ = ["EventCaptureManager", "live_managers"]


class EventCaptureManager(EventEmitter):
    """Captures one run's events onto a bounded bus drained by a background writer.

    Normally created by :func:`cmbagent_events.capture_run`; every method is synchronous, safe from
    any thread, never blocks and never raises, and returns the new event id (or None when capture
    is disabled, the event type is switched off, or the run was sampled out).
    """

    # -- the seed's API -------------------------------------------------------------------------
    def capture_agent_call(self, agent_name: str, message: Any, context: dict[str, Any] | None = None,
                           metadata: dict[str, Any] | None = None) -> str | None:
        """An agent starts working on ``message``: one row, status ``running`` until its response."""
        try:
            return self._emit("agent_call", "agent_call", "start", agent_name,
                              (_snap(message), _snap(context)), None, None, "running", None,
                              _meta(metadata), None, True)
        except Exception:
            self._capture_failed()
            return None

    def capture_agent_response(self, agent_name: str, response: Any, event_id: str | None = None,
                               metadata: dict[str, Any] | None = None) -> str | None:
        """Complete the agent call ``event_id`` with ``response`` (or record a standalone completion)."""
        try:
            if event_id is not None:
                return self.finish_agent_call(event_id, response=response, metadata=metadata)
            return self._emit("agent_call", "agent_call", "complete", agent_name, None, {"response": _snap(response)},
                              None, "completed", None, _meta(metadata), None, False)
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
            # outputs {"response": ...} is built by the writer (see records.INPUT_FIELDS)
            self._put(EventRecord(COMPLETE, event_id, -1, now, None, subtype, None, None, 0, None, None, 0,
                                  None, _snap(response), err, status, duration,
                                  _meta(metadata) if metadata is not None else None, None))
        except Exception:  # a completion is not an event (no seq): counted apart, never raised
            self.lost_completions += 1
            self._log_failure()
            return None
        return event_id

    def capture_tool_call(self, agent_name: str, tool_name: str, arguments: Any, result: Any = None,
                          metadata: dict[str, Any] | None = None) -> str | None:
        """A tool/function invocation (with its result when known)."""
        try:
            meta = _meta(metadata)
            failed = meta.get("success") is False
            return self._emit("tool_call", "tool_call", "execute", agent_name, (tool_name, _snap(arguments)),
                              {"result": _snap(result)} if result is not None else None,
                              None, "failed" if failed else "completed", meta.get("duration_ms"), meta, None, False)
        except Exception:
            self._capture_failed()
            return None

    def capture_code_execution(self, agent_name: str, code: str, language: str = "python", result: Any = None,
                               exit_code: int | None = None, duration_ms: float | None = None,
                               metadata: dict[str, Any] | None = None) -> str | None:
        """A code block run: subtype ``complete`` on exit code 0, else ``error``."""
        try:
            meta = _meta(metadata)
            meta["language"] = language
            meta["exit_code"] = exit_code
            meta["code_length"] = str.__len__(code) if isinstance(code, str) else None
            ok = type(exit_code) is int and exit_code == 0
            return self._emit("code_exec", "code_exec", "complete" if ok else "error", agent_name, (code,),
                              {"result": _snap(result)}, None, "completed" if ok else "failed", duration_ms, meta,
                              None, False)
        except Exception:
            self._capture_failed()
            return None

    def capture_file_generation(self, agent_name: str, file_path: str, file_type: str,
                                size_bytes: int | None = None, metadata: dict[str, Any] | None = None) -> str | None:
        """A file produced by the run; also written as a ``files`` row linked to the event."""
        try:
            meta = {"size_bytes": size_bytes, **_meta(metadata)}
            return self._emit("file_gen", "file_gen", "create", agent_name, (file_path, file_type), None, None,
                              "completed", None, meta,
                              (FILE_ROW, file_path, file_type, size_bytes), False)
        except Exception:
            self._capture_failed()
            return None

    def capture_handoff(self, from_agent: str | None, to_agent: str | None, context: dict[str, Any] | None = None,
                        reason: str | None = None) -> str | None:
        """Control passes from one agent to another (speaker selection, group-pattern transition)."""
        try:
            return self._emit("handoff", "handoff", "transfer", from_agent, (from_agent, to_agent, _snap(context)),
                              None, None, "completed", None, {"reason": reason} if reason is not None else {}, None,
                              False)
        except Exception:
            self._capture_failed()
            return None

    def capture_message(self, sender: str | None, recipient: str | None, content: Any, tokens: int | None = None,
                        metadata: dict[str, Any] | None = None) -> str | None:
        """An agent-to-agent message; also written as a ``messages`` row linked to the event."""
        # inputs {"sender", "recipient", "content"} and meta {"tokens"} are built by the writer from
        # the message row: messages are the most frequent event, so no dicts on their hot path.
        try:
            return self._emit("message", "agent_call", "message", recipient, None, None, None, "completed",
                              None, _meta(metadata) if metadata is not None else None,
                              (MESSAGE_ROW, sender, recipient, _snap(content), tokens), False)
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
                meta = {"broadcast": True, **_meta(metadata)}
                return self._emit("message", "agent_call", "message", recipient,
                                  {"sender": sender, "recipient": recipient, "content": _snap(content)}, None, None,
                                  "completed", None, meta, None, False)
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
                              agent_name, None, None, error_message, "failed", None, _meta(metadata), None, False)
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
            meta = _meta(metadata)
            meta["where"] = where
            meta["traceback"] = TracebackText(error)
            return self.capture_error(agent_name or where, ErrorText.of(kind, error),
                                      error_type or type(error).__name__, meta)
        except Exception:
            self._capture_failed()
            return None

    def capture_llm_call(self, agent_name: str | None, model: str | None, prompt_tokens: float | None,
                         completion_tokens: float | None, total_tokens: float | None = None, cost: float | None = None,
                         duration_ms: float | None = None, metadata: dict[str, Any] | None = None) -> str | None:
        """One model call with its token usage and cost; the run's totals (``usage``) are summed here."""
        if not self.enabled:
            return None
        try:
            # counts and cost as numbers (an API may hand over "12" or a Decimal); anything else counts 0
            prompt_tokens, completion_tokens = _number(prompt_tokens), _number(completion_tokens)
            total_tokens, cost = _number(total_tokens), _number(cost)
            if total_tokens is None and (prompt_tokens is not None or completion_tokens is not None):
                total_tokens = (prompt_tokens or 0) + (completion_tokens or 0)
            with self._usage_lock:
                totals = self.usage
                totals["calls"] += 1
                totals["prompt_tokens"] += prompt_tokens or 0
                totals["completion_tokens"] += completion_tokens or 0
                totals["total_tokens"] += total_tokens or 0
                totals["cost"] += cost or 0.0
            return self._emit("llm_call", "llm_call", "complete", agent_name, (model,),
                              (prompt_tokens, completion_tokens, total_tokens, cost), None, "completed", duration_ms,
                              _meta(metadata) or {"model": model}, None, False)
        except Exception:
            self._capture_failed()
            return None

    def capture_event(self, event_type: str, event_subtype: str | None = None, agent_name: str | None = None,
                      inputs: Any = None, outputs: Any = None, duration_ms: float | None = None,
                      metadata: dict[str, Any] | None = None, status: str = "completed") -> str | None:
        """Any other event type (e.g. ``llm_call`` with tokens and cost); nested like the rest."""
        try:
            return self._emit(event_type if type(event_type) is str else "custom", event_type, event_subtype,
                              agent_name, _snap(inputs), _snap(outputs), None, status, duration_ms, _meta(metadata),
                              None, False)
        except Exception:
            self._capture_failed()
            return None

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
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
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
