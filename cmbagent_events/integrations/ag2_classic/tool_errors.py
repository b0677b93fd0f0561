"""A tool's exception as it was raised, although AG2 catches it: ``execute_function`` turns it into the
tool's result text (``"Error: ..."``) and drops the exception with its traceback.

While a captured ``execute_function`` runs, the agent's registered function is wrapped (reference
counted per agent and tool, put back when the last call using it ends): the wrapper notes the
exception in the calling task's holder (a ContextVar, so concurrent tool calls never mix) and
re-raises it unchanged. The hook then records it as one ``error`` event with its traceback.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any

raised: contextvars.ContextVar[list[BaseException] | None] = contextvars.ContextVar(
    "cmbagent_events_tool_raised", default=None)

_lock = threading.Lock()
_wrapped: dict[tuple[int, str], list[Any]] = {}  # (id(function map), tool) -> [users, original, wrapper]


def _noting(original: Callable[..., Any]) -> Callable[..., Any]:
    """``original``, noting what it raises in the caller's holder (sync or async alike)."""
    if inspect.iscoroutinefunction(original):
        @functools.wraps(original)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await original(*args, **kwargs)
            except Exception as exc:
                _note(exc)
                raise

        return async_wrapper

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except Exception as exc:
            _note(exc)
            raise

    return wrapper


def _note(exc: BaseException) -> None:
    holder = raised.get()
    if holder is not None:
        holder.append(exc)


def watch(function_map: Any, name: Any) -> Callable[[], None] | None:
    """Wrap ``function_map[name]`` while a call uses it; returns what puts it back (None: not wrapped)."""
    if not isinstance(function_map, dict) or not isinstance(name, str):
        return None
    key = (id(function_map), name)
    with _lock:
        entry = _wrapped.get(key)
        if entry is not None and function_map.get(name) is entry[2]:
            entry[0] += 1
        else:
            original = function_map.get(name)
            if not callable(original):
                return None
            entry = _wrapped[key] = [1, original, _noting(original)]
            function_map[name] = entry[2]

    def put_back() -> None:
        with _lock:
            entry[0] -= 1
            if entry[0] == 0:
                if function_map.get(name) is entry[2]:  # never undo what someone registered since
                    function_map[name] = entry[1]
                if _wrapped.get(key) is entry:
                    del _wrapped[key]

    return put_back
