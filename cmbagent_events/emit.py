"""The hot path of capture: one event becomes one small record on the bus.

:class:`EventEmitter` holds a run's capture state (seq, the open-call stack of each task or
thread, the node/step context, per-thread broadcast folds) and ``_emit``, which every capture call
goes through: it assigns the event id, the run-wide ``seq``, the parent (the innermost agent call
open in the *current task or thread*, kept in a ContextVar, not in a shared list), the node/step
context and the per-node ``execution_order``, builds one record and puts it on the bus. No I/O,
no JSON, no datetime: those happen in the writer. The public API is
:class:`cmbagent_events.capture.EventCaptureManager`, built on this class.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import threading
import time
import types
import weakref
from typing import TYPE_CHECKING, Any

from .bus import CAPTURE_FAILED, INTERRUPTED, EventBus, accounted
from .config import CaptureConfig
from .ids import event_id_prefix
from .records import INSERT, EventRecord

if TYPE_CHECKING:
    from .writer import BatchWriter

log = logging.getLogger("cmbagent_events")

_time_ns = time.time_ns
_perf_ns = time.perf_counter_ns
PERF_SAMPLE_MASK = 63  # time one capture call in 64 for avg_capture_time_us


class EventEmitter:
    """A run's capture state and the one way events reach the bus (see the module doc)."""

    def __init__(
        self,
        run_id: str,
        session_id: str = "default",
        *,
        config: CaptureConfig | None = None,
        enabled: bool | None = None,
        bus: EventBus | None = None,
        own_files: frozenset[str] = frozenset(),
    ) -> None:
        self.config = config or CaptureConfig()
        self.own_files = own_files  # this run's database files: never reported as files a run produced
        self.run_id = run_id
        self.session_id = session_id
        self.enabled = self.config.enabled if enabled is None else enabled
        self.bus = bus if bus is not None else EventBus(self.config.queue_size, self.config.buffer_size,
                                                        self.config.queue_max_bytes)
        self.writer: BatchWriter | None = None
        self.otlp_forwarder: Any = None  # set by the run when CMBAGENT_EVENTS_OTLP_ENDPOINT is set
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
        self._closed = False
        _live_managers.add(self)
        # what integrations attach to agents to remember their run across threads
        self.ref: weakref.ref[Any] = weakref.ref(self)  # Any: the manager subclass
        self._seen: set[int] = set()  # ids of objects first_sight() has seen
        self._usage_lock = threading.Lock()
        self.usage: dict[str, float] = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
                                         "cost": 0.0}  # summed over llm_call events, stored on the run
        cfg = self.config
        self._fold = cfg.broadcasts == "fold"
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
            if _given(node_id):
                self.current_node_id = node_id
                self._node_base = self._issued
            if _given(step_id):
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
    def _emit(self, kind_key: str, event_type: str, subtype: str | None, agent: Any, inputs: Any,
              outputs: Any, error: str | ErrorText | None, status: str, duration_ms: float | None, meta: Any,
              extra: Any, push: bool) -> str | None:
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
            eid = self._prefix + str(seq).zfill(9)  # fixed width: ids sort by seq, B-tree appends
            now = _time_ns()
            self._put(EventRecord(
                INSERT, eid, seq, now, event_type, subtype, agent, stack[-1] if stack else None, len(stack),
                self.current_node_id, self.current_step_id, seq - self._node_base, inputs, outputs, error,
                status, duration_ms, meta, extra,
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
        meta = {"broadcast": True, **_meta(metadata), "recipients": recipients}
        self._folds[thread] = [message, sender, recipients, _time_ns(), stack[-1] if stack else None, len(stack),
                               {"sender": sender, "content": _snap(content)}, meta]

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
        seq = -1
        try:
            for seq in self._seqs:  # noqa: B007 (as in _emit)
                break
            self._issued = seq + 1
            self._put(EventRecord(
                INSERT, self._prefix + str(seq).zfill(9), seq, started, "agent_call", "message", sender, parent, depth,
                self.current_node_id, self.current_step_id, seq - self._node_base, inputs, None, None, "completed",
                None, meta, None,
            ))
        except Exception as exc:
            if seq >= 0 and not accounted(exc, seq):
                self.bus.count_dropped(1, CAPTURE_FAILED)
            self._log_failure()
        except BaseException as exc:  # Ctrl-C / SIGTERM: as in _emit
            if seq >= 0 and not accounted(exc, seq):
                self.bus.count_dropped(1, INTERRUPTED)
            raise

    def _flush_folds(self) -> None:
        """Record every pending folded broadcast (before a flush barrier or the close)."""
        for thread in list(self._folds):
            self._flush_fold(thread)



# -- arguments as of capture time ----------------------------------------------------------------
def _snap(value: Any) -> Any:
    """A shallow copy of a dict or list (C-level, ~0.1-2 us): the caller may keep changing it after
    capture (AG2 appends to message lists); the stored value is its top level as captured. Deeper
    levels are read later by the writer (a deep copy on the hot path costs too much)."""
    kind = type(value)
    if kind is dict:
        return dict.copy(value)
    if kind is list:
        return list.copy(value)
    return value


def _meta(metadata: Any) -> dict[str, Any]:
    """Metadata as a fresh dict: None -> {}, a dict (or subclass) copied without calling its
    overrides, anything else kept under ``"metadata"``."""
    if metadata is None:
        return {}
    if type(metadata) is dict:
        return dict.copy(metadata)
    if isinstance(metadata, dict):
        return plain_dict(metadata)
    return {"metadata": metadata}


def plain_dict(mapping: dict[Any, Any]) -> dict[Any, Any]:
    """A plain copy of a dict subclass, read through ``dict``'s own C methods: ``dict.copy`` calls a
    subclass's ``keys()`` when it overrides ``__iter__``, and either may raise or be slow."""
    return dict(dict.items(mapping))


def _given(value: Any) -> bool:
    """Whether a context value was given (not None, "" or 0), told without calling its own methods
    (a str subclass's ``__len__``, an object's ``__bool__``): any other object counts as given."""
    if value is None:
        return False
    if isinstance(value, str):
        return str.__len__(value) > 0
    if isinstance(value, int):
        return int.__bool__(value)
    if isinstance(value, float):
        return float.__bool__(value)
    return True


def _number(value: Any) -> int | float | None:
    """``value`` as an int or finite float, or None (a count or cost the run can sum)."""
    if value is None or value is True or value is False:
        return None
    if type(value) is int or type(value) is float:
        return value if value == value and abs(value) < 1e18 else None
    try:
        number = float(str.__getitem__(value, slice(None)) if isinstance(value, str) else value)
    except Exception:
        return None
    if number != number or abs(number) >= 1e18:
        return None
    return int(number) if number.is_integer() else number


class ErrorText:
    """An exception as ``"Kind: message"`` (``kind`` None: the message, else the type's name) for an
    error event, made text by the writer (on its worker thread when user code must run): an
    exception's own ``__str__`` may be slow or raise, and must not run on the caller's loop."""

    __slots__ = ("error", "kind")

    def __init__(self, kind: str | None, error: BaseException) -> None:
        self.kind = kind
        self.error = error

    @classmethod
    def of(cls, kind: str | None, error: BaseException) -> str | ErrorText:
        """The text now when no user code makes it (a built-in ``__str__`` over plain arguments), else
        an ``ErrorText`` for the writer."""
        args = BaseException.__dict__["args"].__get__(error)  # not a subclass's own `args`
        if (not isinstance(type(error).__str__, types.FunctionType)
                and all(arg is None or type(arg) in (str, int, float, bool) for arg in args)):
            return repr(cls(kind, error))
        return cls(kind, error)

    def __repr__(self) -> str:
        try:
            message = str(self.error)
        except Exception as exc:
            message = f"<str() failed: {type(exc).__name__}>"
        if self.kind is None:
            return message or type(self.error).__name__
        return f"{self.kind}: {message}" if message else self.kind


MAX_TRACEBACK_CHARS = 8_000  # a traceback's text kept per error event: its innermost end
RECORDED_ATTR = "__cmbagent_events_captured__"  # on an exception: the run ids that recorded it


def mark_recorded(exc: BaseException, run_id: str) -> bool:
    """Mark ``exc`` as recorded in run ``run_id``; False when it already was there (an inner hook
    recorded it, or the same exception passed through another layer): one error event per exception
    per run. An exception that cannot be marked (``__slots__``) is recorded each time it is seen."""
    try:
        runs = getattr(exc, RECORDED_ATTR, None)
        if type(runs) is set:
            if run_id in runs:
                return False
            runs.add(run_id)
        else:
            setattr(exc, RECORDED_ATTR, {run_id})
    except Exception:
        pass
    return True


class TracebackText:
    """An exception's formatted traceback, made text by the writer (reading source lines is I/O and
    a frame's locals are the caller's: never on the caller's thread); the innermost
    ``MAX_TRACEBACK_CHARS`` are kept, where the error was raised. Holds the traceback (and so its
    frames) only until the writer has made it text."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __repr__(self) -> str:
        import traceback

        try:
            text = "".join(traceback.format_exception(type(self.error), self.error, self.error.__traceback__))
        except Exception as exc:
            return f"<traceback not formatted: {type(exc).__name__}>"
        if len(text) > MAX_TRACEBACK_CHARS:
            text = f"...[{len(text) - MAX_TRACEBACK_CHARS} chars of outer frames cut]\n" + text[-MAX_TRACEBACK_CHARS:]
        return text


# -- the managers of this process (fork safety, see captor.py) -----------------------------------
_live_managers: weakref.WeakSet[EventEmitter] = weakref.WeakSet()


def live_managers() -> list[EventEmitter]:
    """The managers alive in this process."""
    return list(_live_managers)

