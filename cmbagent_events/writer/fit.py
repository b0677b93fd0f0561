"""Values fitted to their columns: every stored value has its column's type and fits its width.

A name longer than its ``VARCHAR`` is cut *including* its marker (PostgreSQL refuses a value one
character too long, and with it the whole batch); a value of the wrong type is converted (an int
node id becomes ``"1"``) or, for numbers that cannot be numbers (``duration_ms="slow"``), stored as
NULL. Widths come from the column spec (``store/columns.py``; a test checks them against the models).
Plain, short, ASCII strings and in-range ints take a fast path of a type check and a length check.
"""

from __future__ import annotations

import math
from typing import Any

from ..store.columns import INT32

FLOAT_MAX = 1e300
__all__ = ["NeedsUserCode", "UserCodeTimeout", "as_text", "clean_text", "cut", "fit_float", "fit_float_column",
           "fit_int", "fit_int_column", "fit_text", "fit_text_column"]


def as_text(value: Any) -> str:
    """Any value as a str, without calling a subclass's (possibly raising) ``__str__``."""
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__getitem__(value, slice(None))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        number = int.__index__(value)
        return str(number) if number.bit_length() < 10_000 else f"<int of {number.bit_length()} bits>"
    if isinstance(value, float):
        return float.__repr__(value)
    try:
        return repr(value)
    except Exception as exc:
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"


def clean_text(value: str) -> str:
    """NUL bytes and lone surrogates made storable (PostgreSQL and UTF-8 refuse them)."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    return value


def cut(value: str, width: int) -> str:
    """``value`` in at most ``width`` characters, its marker included."""
    if len(value) <= width:
        return value
    marker = f"...[{len(value)} chars]"
    keep = width - len(marker)
    return value[:width] if keep < 1 else value[:keep] + marker


class NeedsUserCode(BaseException):
    """Raised (only while user code is off: the sanitizer's ``user_code=False`` / ``fit_text(user_code=False)``)
    where turning a value into text would call the caller's own code (``__repr__``, ``model_dump``):
    the writer then makes that value text on a worker thread (writer/rows.py: the value's cell waits),
    so a slow ``__repr__`` never stalls the writer's loop. A BaseException: no ``except Exception``
    on the way may turn it into a marker."""


class UserCodeTimeout(Exception):
    """The caller's own code (``__repr__``, ``model_dump``) did not return within the writer's budget
    (``CaptureConfig.user_code_timeout_s``): the values waiting for it are stored as markers naming this."""


class Unreadable:
    """A value the caller's own code did not describe in the process that captured it (writer/handoff.py):
    stored as the marker ``reason`` in its place, or, when that code did not return in time
    (``timed_out``), as a value given up on (:class:`UserCodeTimeout`), as the writer thread would."""

    __slots__ = ("reason", "timed_out")

    def __init__(self, reason: str, timed_out: bool = False) -> None:
        self.reason = reason
        self.timed_out = timed_out

    def __reduce__(self) -> tuple[Any, ...]:
        return Unreadable, (self.reason, self.timed_out)

    def __repr__(self) -> str:
        return self.reason

    def marker(self) -> str:
        """The marker stored in its place (raises :class:`UserCodeTimeout` for a value given up on)."""
        if self.timed_out:
            raise UserCodeTimeout(self.reason)
        return self.reason


class Described:
    """A value its own code described (``model_dump``, ``__repr__``) in the process that captured it,
    as plain ``value`` (writer/handoff.py). The writer treats it as it treats the original: it waits
    for the user-code pass (``NeedsUserCode``), which then stores ``value``; where no user code runs
    (a model call's message) it is "not storable", as the original would have been."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return self.value if type(self.value) is str else repr(self.value)


def fit_text(value: Any, width: int | None, user_code: bool = True) -> str | None:
    """A storable str of at most ``width`` characters (None stays None). With ``user_code`` False,
    a value only its own ``__repr__`` can turn into text raises :class:`NeedsUserCode` instead."""
    if value is None:
        return None
    if type(value) is str and value.isascii() and "\x00" not in value and (width is None or len(value) <= width):
        return value  # the common case
    if not user_code and not isinstance(value, (str, int, float)):
        raise NeedsUserCode
    text = clean_text(as_text(value))
    return text if width is None else cut(text, width)


def fit_int(value: Any, bounds: tuple[int, int] = INT32) -> int | None:
    """An int within ``bounds`` (the column's integer type), or None when ``value`` is not one."""
    if value is None:
        return None
    if type(value) is not int:
        try:
            if isinstance(value, bool):
                value = int(value)
            elif isinstance(value, int):
                value = int.__index__(value)
            elif isinstance(value, float):
                value = int(value) if value.is_integer() else None
            elif isinstance(value, str) and len(value) < 32:
                value = int(str.__getitem__(value, slice(None)).strip())
            else:
                return None
        except (ValueError, OverflowError, TypeError):
            return None
    if value is None:
        return None
    return value if bounds[0] <= value <= bounds[1] else None


def fit_float(value: Any) -> float | None:
    """A finite float (``duration_ms``), or None when ``value`` is not a usable number."""
    if value is None:
        return None
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) and abs(value) < FLOAT_MAX else None
    try:
        if kind is int or isinstance(value, int):
            number = float(int.__index__(value))
        elif isinstance(value, float):
            number = float.__float__(value)
        elif isinstance(value, str) and len(value) < 64:
            number = float(str.__getitem__(value, slice(None)))
        else:
            return None
    except (ValueError, OverflowError, TypeError):
        return None
    return number if math.isfinite(number) and abs(number) < FLOAT_MAX else None


# -- whole columns (the writer's batch path): one check in C for the common column, else value by value
_STR_OR_NONE = frozenset((str, type(None)))
_INT_OR_NONE = frozenset((int, type(None)))
_FLOAT_OR_NONE = frozenset((float, type(None)))


def fit_text_column(values: list[Any] | tuple[Any, ...], width: int | None) -> list[Any] | tuple[Any, ...]:
    """``[fit_text(v, width, user_code=False) for v in values]`` (raises NeedsUserCode for a value only
    its own ``__repr__`` can write); a column of plain, short, ASCII strings (and None), the usual one,
    is checked as a whole and returned as it is."""
    if set(map(type, values)) <= _STR_OR_NONE:
        strings = list(filter(None, values))
        joined = "".join(strings)
        if (joined.isascii() and "\x00" not in joined
                and (width is None or not strings or max(map(len, strings)) <= width)):
            return values
    return [fit_text(v, width, False) for v in values]  # a name only user code can write: not here


def fit_int_column(values: list[Any] | tuple[Any, ...], bounds: tuple[int, int] = INT32) -> list[Any] | tuple[Any, ...]:
    """``[fit_int(v, bounds) for v in values]``; a column of in-range ints (and None) as it is."""
    if set(map(type, values)) <= _INT_OR_NONE:
        ints = [v for v in values if v is not None]
        if not ints or (bounds[0] <= min(ints) and max(ints) <= bounds[1]):
            return values
    return [fit_int(v, bounds) for v in values]


def fit_float_column(values: list[Any] | tuple[Any, ...]) -> list[Any] | tuple[Any, ...]:
    """``[fit_float(v) for v in values]``; a column of finite, in-range floats (and None) as it is."""
    if set(map(type, values)) <= _FLOAT_OR_NONE:
        floats = [v for v in values if v is not None]
        if not floats or (all(map(math.isfinite, floats)) and max(map(abs, floats)) < FLOAT_MAX):
            return values
    return [fit_float(v) for v in values]
