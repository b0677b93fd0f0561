"""Records handed to another process: a batch as bytes, and back (the writer process's wire format).

The caller's process keeps only what cannot cross a process boundary: values only the caller's own
code can describe (a ``__repr__``, a pydantic ``model_dump``, an exception's ``__str__``, a traceback
whose frames are the caller's). Everything else, the plain values of nearly every record, is pickled
in one C call per batch (records as tuples; a message dict shared by several records of the batch is
written once, the pickler's memo). The pickler's ``reducer_override`` is called only for values that
are not exact built-in types: each becomes a placeholder, made plain data afterwards on a worker
thread within the user-code budget (:func:`describe`), and sent beside the batch. A model call's
exchange is sent as its fields, its response dumped to JSON data on the way.

The receiving side (:func:`unpack`) gets the same records, with :class:`~.fit.Described` plain data
where the objects were: the writer stores them exactly as it would have stored the objects (it would
have described them the same way, and it treats them as values only user code describes), a value
given up on as a marker naming why.
"""

from __future__ import annotations

import io
import pickle
import struct
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

from msgspec.structs import astuple

from ..capture_values import LlmExchange
from ..records import LLM_ROW, EventRecord
from .encode import Sanitizer
from .fit import Described, Unreadable
from .llm_rows import described_response, dump_response, needs_user_code

PROTOCOL = 5


class _Pickler(pickle.Pickler):
    """Pickles a batch, setting aside every value that is not of an exact built-in type."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self.objects: list[Any] = []

    def reducer_override(self, obj: Any) -> Any:
        if obj is _described or obj is _exchange:  # the placeholders' own constructors: by reference
            return NotImplemented
        if type(obj) is LlmExchange:
            # its fields are plain but the response (a ChatCompletion): dumped now, as the writer would;
            # the request without the messages and tools it holds (sent once, as their copies)
            messages = obj.messages
            if messages is not None and type(messages) is not list:  # AG2 1.x's history: rendered now
                messages = dump_response(messages)
            request = obj.request
            if request is not None:
                request = {key: value for key, value in request.items() if key != "messages" and key != "tools"}
            response = obj.response
            # dumped now, unless its own code must do it: then set aside, described within the budget
            response = _OwnResponse(response) if needs_user_code(response) else dump_response(response)
            return _exchange, (messages, obj.origins, request, obj.tools, response, obj.weight)
        objects = self.objects
        objects.append(obj)
        return _described, (len(objects) - 1,)


def pack(records: list[EventRecord]) -> tuple[bytes, list[Any]]:
    """``records`` (no barrier among them) as bytes, and the values set aside (see :func:`describe`)."""
    rows = list(map(astuple, records))
    try:
        return _dump(rows)
    except Exception:  # a value pickle cannot take (nested too deep, changed while read): found below
        return _dump([_guarded(row) for row in rows])


def _dump(rows: list[tuple[Any, ...]]) -> tuple[bytes, list[Any]]:
    buffer = io.BytesIO()
    pickler = _Pickler(buffer)
    pickler.dump(rows)
    return buffer.getvalue(), pickler.objects


class _OwnResponse:
    """A model call's response that only its own code can dump (llm_rows.needs_user_code): set aside."""

    __slots__ = ("response",)

    def __init__(self, response: Any) -> None:
        self.response = response


class _Aside:
    """A payload pickle could not take as it is: set aside whole, made plain (bounded) by :func:`describe`."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


_PAYLOAD = tuple(EventRecord.__struct_fields__.index(name)
                 for name in ("inputs", "outputs", "error_message", "meta", "extra"))


def _guarded(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """``row`` with each payload that does not pickle alone set aside."""
    try:
        _dump([row])
        return row
    except Exception:
        pass
    fixed = list(row)
    for k in _PAYLOAD:
        value = fixed[k]
        if type(value) is tuple and value[:1] == (LLM_ROW,):  # a model call's whole exchange: only as it is
            fixed[k] = value if type(_picklable(value[1])) is not _Aside else None  # (else its event row alone)
        elif type(value) is tuple:  # a companion row's fields (extra), a tuple of inputs: item by item
            fixed[k] = tuple(map(_picklable, value))
        else:
            fixed[k] = _picklable(value)
    return tuple(fixed)


def _picklable(value: Any) -> Any:
    try:
        _dump([value])
    except Exception:
        return _Aside(value)
    return value


def describe(objects: list[Any], secret_keys: Any, limit: int) -> bytes:
    """``objects`` made plain data with their own code (``model_dump``, ``__repr__``), pickled for
    :func:`unpack`: call it on a thread of its own, within the user-code budget (see
    :func:`given_up` for when it does not return in time)."""
    sanitizer = Sanitizer(secret_keys)
    values: list[Any] = []
    for obj in objects:
        try:
            if type(obj) is _OwnResponse:  # as the writer thread would have: dumped, then made plain
                values.append(described_response(sanitizer, obj.response, limit).value)
                continue
            values.append(sanitizer.plain(obj.value if type(obj) is _Aside else obj, limit))
        except Exception as exc:
            values.append(Unreadable(f"<unstorable {type(obj).__name__}: {type(exc).__name__}>"))
    return pickle.dumps(values, protocol=PROTOCOL)


def given_up(objects: list[Any], reason: str) -> bytes:
    """What :func:`describe` sends when the objects' own code did not return in time: markers."""
    return pickle.dumps([Unreadable(reason, timed_out=True)] * len(objects), protocol=PROTOCOL)


# -- frames: a message is a pickled tuple behind its length ------------------------------------------
_LENGTH = struct.Struct("<Q")


def frame(message: tuple[Any, ...]) -> tuple[bytes, bytes]:
    """``message`` (plain data, our own types) as one frame of the pipe: its length, then itself
    (written one after the other: no copy of a large batch to join them)."""
    data = pickle.dumps(message, protocol=PROTOCOL)
    return _LENGTH.pack(len(data)), data


def read_frame(stream: BinaryIO) -> tuple[Any, ...] | None:
    """The next message from ``stream``, or None at its end (the other side is gone)."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        return None
    message: tuple[Any, ...] = pickle.loads(data)
    return message


_described_values: list[Any] = []  # the receiving side's values for the batch being unpacked


def _described(index: int) -> Any:
    value = _described_values[index]
    return value if type(value) is Unreadable else Described(value)


def _exchange(messages: Any, origins: Any, request: Any, tools: Any, response: Any, weight: int) -> LlmExchange:
    exchange = LlmExchange.__new__(LlmExchange)
    exchange.messages, exchange.origins, exchange.request, exchange.tools = messages, origins, request, tools
    exchange.response, exchange.weight = response, weight
    return exchange


_unpack_lock = threading.Lock()


def unpack(data: bytes, described: bytes | None, record: Callable[..., EventRecord] = EventRecord) -> list[EventRecord]:
    """The records :func:`pack` packed, the values set aside replaced by what :func:`describe` made."""
    with _unpack_lock:
        _described_values[:] = pickle.loads(described) if described else ()
        try:
            rows = pickle.loads(data)
        finally:
            _described_values.clear()
    return [record(*row) for row in rows]
