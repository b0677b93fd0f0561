"""Values as of capture time: what a capture call keeps of its arguments, cheaply, on the caller's thread.

Shallow copies (the caller goes on changing its dicts and lists), numbers that can be summed, and
exceptions and tracebacks wrapped so that the writer makes them text later, never the caller
(an exception's own ``__str__`` is user code; formatting a traceback reads source files).
"""

from __future__ import annotations

import types
from typing import Any


# -- arguments as of capture time ----------------------------------------------------------------
def snapshot(value: Any) -> Any:
    """A shallow copy of a dict or list (C-level, ~0.1-2 us): the caller may keep changing it after
    capture (AG2 appends to message lists); the stored value is its top level as captured. Deeper
    levels are read later by the writer (a deep copy on the hot path costs too much). The hottest
    capture calls do the same inline with :data:`COPIES` (no frame)."""
    copy = COPIES.get(type(value))
    return value if copy is None else copy(value)


COPIES: dict[type, Any] = {dict: dict.copy, list: list.copy}  # what snapshot() copies, and how


def fresh_meta(metadata: Any) -> dict[str, Any]:
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


def is_given(value: Any) -> bool:
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


def as_number(value: Any) -> int | float | None:
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


def as_numbers(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """:func:`as_number` of each value, in one call: ``values`` itself when all are None, ints or
    floats and together finite and below 1e18 (a model call's usage, every time but for an odd
    API: told in a few C calls, no Python loop), else a new tuple, value by value."""
    if _PLAIN_NUMBERS.issuperset(map(type, values)) and sum(map(abs, filter(None, values))) < 1e18:
        return values  # (a NaN or an infinity makes the sum fail the test)
    return tuple(map(as_number, values))


_PLAIN_NUMBERS = frozenset((int, float, type(None)))


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


MESSAGE_COPY_BYTES = 232  # what one message dict's copy holds (its contents are AG2's, shared)


class LlmExchange:
    """A model call's request and response as captured, for the writer to store whole (llm_calls).

    The request's message list and each message dict are copied (AG2 goes on changing them: the
    stored request is the one sent), and so is the request dict itself, tools at their top level;
    the response is kept as the client returned it, for the writer to dump to JSON. ``model`` and
    ``params`` (the request's other entries) are read from the request's copy when the writer asks
    for them, not on the caller's thread. ``weight``, for the queue's byte bound
    (bus.estimate_size): the copies' own bytes; the contents they point to are the history AG2 holds.

    A chat re-sends its history with every call: given ``conversations`` (one per run), the copies
    made for a conversation's last request are kept, and the next request's messages that still
    equal them (one C-level list comparison) share those copies; only what was added is copied.
    Fewer allocations on the caller's thread (and fewer garbage collections of the user's heap),
    and the writer recognises the shared part by identity.
    """

    __slots__ = ("messages", "origins", "request", "response", "tools", "weight")

    def __init__(self, request: Any, response: Any, conversations: dict[int, list[Any]] | None = None) -> None:
        messages: Any = None
        tools: Any = None
        if isinstance(request, dict):
            request = dict.copy(request) if type(request) is dict else plain_dict(request)
            messages = request.get("messages")
            tools = request.get("tools")
            if tools is not None:
                tools = snapshot(tools)
        else:
            request = None
        weight = 64
        origins: list[int] | None = None
        if type(messages) is list:
            origins = list(map(id, messages))  # lets the writer recognise a message it has seen (llm_rows)
            sent = messages
            known = conversations.get(origins[0]) if conversations is not None and origins else None
            if known is not None and (len(known) > len(sent) or not same_messages(sent[:len(known)], known)):
                known = None
            messages = _copies(sent[len(known):] if known is not None else sent)
            weight += 8 * len(sent) + MESSAGE_COPY_BYTES * len(messages)
            if known is not None:
                messages = known + messages  # the copies already made: shared, never changed
            if conversations is not None and origins:
                if len(conversations) >= CONVERSATIONS:
                    conversations.clear()
                conversations[origins[0]] = messages
        self.request = request  # the request dict's copy (None: not a dict)
        self.messages = messages
        self.origins = origins
        self.tools = tools
        self.response = response
        self.weight = weight

    @property
    def model(self) -> Any:
        """The request's ``model`` (None without one)."""
        return self.request.get("model") if self.request is not None else None

    @property
    def params(self) -> dict[str, Any]:
        """The request's parameters but its messages, tools and model (``temperature``, ...)."""
        if self.request is None:
            return {}
        return {key: value for key, value in self.request.items() if key not in _NOT_PARAMS}


_NOT_PARAMS = frozenset(("messages", "tools", "model"))
CONVERSATIONS = 256  # conversations whose last request's copies a run keeps (then forgotten: copied again)


def _copies(messages: list[Any]) -> list[Any]:
    """Each message dict copied (one C-level ``map``, ~70 ns a message); not a dict: kept as it is."""
    try:
        return list(map(dict.copy, messages))
    except TypeError:
        return [dict.copy(m) if isinstance(m, dict) else m for m in messages]


def same_messages(a: Any, b: Any) -> bool:
    """``a == b`` for two messages (or lists of them: the ones sent and our copies), False when the
    comparison is not a plain yes (an array inside)."""
    try:
        return (a == b) is True
    except Exception:
        return False
