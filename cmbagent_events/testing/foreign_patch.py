"""Another library's patches on methods we patch too (a tracer, an instrumentation), for coexistence tests.

What a typical one does: wrap whatever it finds on the class, count the calls its wrappers see,
and on removal put back what it found, unconditionally (whatever was put over it since goes too).
``link`` is how its wrapper leads back to what it wraps: ``"wraps"`` (``functools.wraps``, as most
do), ``"wrapped"`` (only ``__wrapped__``) or ``"bare"`` (nothing leads back).
"""

from __future__ import annotations

import functools
import inspect
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from ..integrations.patching import MISSING

LINKS = ("wraps", "wrapped", "bare")


class ForeignPatch:
    """Patches ``(owner, attribute)`` points with counting wrappers; ``seen(attr, args)`` (optional) is told
    of each call before it goes on to what was there."""

    name = "plain"

    def __init__(self, points: Iterable[tuple[type, str]], *, link: str = "wraps",
                 seen: Callable[[str, tuple[Any, ...]], None] | None = None) -> None:
        if link not in LINKS:
            raise ValueError(f"link must be one of {LINKS}, not {link!r}")
        self.points = list(points)
        self.link = link
        self.seen = seen
        self.calls: Counter[str] = Counter()
        self.saved: dict[tuple[type, str], Any] = {}

    def install(self) -> None:
        for owner, attr in self.points:
            self.saved[(owner, attr)] = owner.__dict__.get(attr, MISSING)
            setattr(owner, attr, self._wrap(getattr(owner, attr), attr))

    def _wrap(self, current: Callable[..., Any], attr: str) -> Callable[..., Any]:
        calls, seen = self.calls, self.seen
        if inspect.iscoroutinefunction(current):
            async def a_wrapper(*args: Any, **kwargs: Any) -> Any:
                calls[attr] += 1
                if seen is not None:
                    seen(attr, args)
                return await current(*args, **kwargs)
            wrapper: Callable[..., Any] = a_wrapper
        else:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                calls[attr] += 1
                if seen is not None:
                    seen(attr, args)
                return current(*args, **kwargs)
        if self.link == "wraps":
            return functools.wraps(current)(wrapper)
        if self.link == "wrapped":
            wrapper.__wrapped__ = current  # type: ignore[attr-defined]
        return wrapper

    def uninstall(self) -> None:
        for (owner, attr), saved in self.saved.items():
            if saved is MISSING:
                delattr(owner, attr)
            else:
                setattr(owner, attr, saved)
        self.saved.clear()
