"""Never break the host: the one way the integrations keep their own failures out of AG2 and MARS.

A hook's own code (reading AG2's objects, building a capture call) can fail on a flavour we have not
seen or a hostile value. Such a failure must never raise into AG2: it is logged at DEBUG with its
traceback, and the call goes on as if there were no capture. (Failures inside the run object's
``capture_*`` methods never get here: those count themselves as dropped events.)

A :class:`Guard` is made once per place, at import, and used as a context manager or a decorator::

    TOOL = Guard("tool capture")

    with TOOL:
        ...

    @TOOL
    def end(...): ...

Only ``Exception`` is swallowed: ``KeyboardInterrupt``, ``SystemExit`` and cancellation go on.

Cost, measured (callgrind, CPython 3.11): a ``with`` block ~2,200 instructions per use, the
decorator ~1,400, an inline ``try`` nothing until it catches. So the hook generator
(:func:`~cmbagent_events.integrations.patching.wrap_call`), run on every hooked AG2 call, keeps an
inline ``try`` that hands what it caught to :meth:`Guard.swallow`; the hook bodies it runs need no
guard of their own.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from types import TracebackType
from typing import ParamSpec, TypeVar

log = logging.getLogger("cmbagent_events")

P = ParamSpec("P")
R = TypeVar("R")


class Guard:
    """Swallow and log (DEBUG, with traceback) an ``Exception`` from the code it guards; stateless,
    so one instance serves every thread and task at once."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what  # names the failure in the log: "<what> failed"

    def swallow(self) -> None:
        """Log the exception being handled now (call it from an ``except`` block)."""
        log.debug("cmbagent-events: %s failed", self.what, exc_info=True)

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> bool:
        if kind is None or not issubclass(kind, Exception):
            return False
        log.debug("cmbagent-events: %s failed", self.what, exc_info=(kind, error, traceback))  # type: ignore[arg-type]
        return True

    def __call__(self, func: Callable[P, R]) -> Callable[P, R | None]:
        """``func`` guarded: None instead of raising."""

        @functools.wraps(func)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R | None:
            try:
                return func(*args, **kwargs)
            except Exception:
                self.swallow()
                return None

        return guarded
