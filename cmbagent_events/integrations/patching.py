"""Reference-counted class patches: installed while a run (or an explicit install) holds them, then
removed without ever removing anyone else's. Shared by the AG2 integrations.

Other libraries patch the same AG2 methods (AgentOps and OpenInference with ``wrapt``, others with
plain wrappers), before or after us, and remove their patches in any order. So:

- removing restores what the attribute held before us only where our wrapper is still the outermost
  (``owner.__dict__[name] is ours``); when someone patched over us, our wrapper stays in their chain
  and its :class:`Gate` is switched off: it becomes a pass-through (one attribute check per call);
- installing again first looks for such a dormant wrapper of ours still in the chain (through
  ``__wrapped__``, which ``functools.wraps`` and ``wrapt`` set) and switches it back on instead of
  stacking a second one; otherwise it wraps whatever is outermost now.

Gates are opt-in: a replacement carries one when made with :func:`gated` (or when the wrapper
generator attaches it). A replacement without a gate that another library wrapped stays active
after removal (logged), since nothing else can take it out of their chain.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("cmbagent_events")

MISSING = object()  # recorded as the original of an attribute the class only inherited
GATE_ATTR = "__cmbagent_events_gate__"
MAX_CHAIN = 64  # wrappers followed through __wrapped__ when looking for ours


class Gate:
    """The switch of one of our wrappers: when off, the wrapper only calls what it wraps."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = True


def gated(replacement: Any, gate: Gate | None = None) -> Any:
    """Attach ``gate`` (a new one by default) to ``replacement`` (a function, or a staticmethod /
    classmethod around one) and return ``replacement``; the wrapper must check ``gate.on`` itself."""
    func = getattr(replacement, "__func__", replacement)
    func.__dict__[GATE_ATTR] = gate or Gate()  # set after functools.wraps, which copies the wrapped one's
    return replacement


def gate_of(replacement: Any) -> Gate | None:
    func = getattr(replacement, "__func__", replacement)
    gate = getattr(func, "__dict__", {}).get(GATE_ATTR)
    return gate if isinstance(gate, Gate) else None


# (owner id, attribute) -> [(owner, our switched-off replacement, what it replaced)]
_dormant: dict[tuple[int, str], list[tuple[Any, Any, Any]]] = {}
_dormant_lock = threading.Lock()


def _in_chain(current: Any, ours: Any) -> bool:
    """True when ``ours`` is ``current`` or reachable from it through ``__wrapped__``."""
    targets = {id(ours), id(getattr(ours, "__func__", ours))}
    for _ in range(MAX_CHAIN):
        if current is None or current is MISSING:
            return False
        if id(current) in targets or id(getattr(current, "__func__", current)) in targets:
            return True
        try:
            current = getattr(current, "__wrapped__", None)
        except Exception:  # a hostile proxy
            return False
    return False


def apply_patch(patches: list[tuple[Any, str, Any, Any]], owner: Any, name: str, replacement: Any) -> None:
    """Set ``owner.name`` to ``replacement`` and record it in ``patches``, unless a dormant wrapper
    of ours is still in the attribute's chain: that one is switched back on instead (and recorded)."""
    current = owner.__dict__.get(name, MISSING)
    key = (id(owner), name)
    with _dormant_lock:
        for entry in _dormant.get(key, ()):
            _owner, ours, original = entry
            if _owner is owner and _in_chain(current, ours):
                _dormant[key].remove(entry)
                if not _dormant[key]:
                    del _dormant[key]
                gate = gate_of(ours)
                assert gate is not None  # only gated wrappers go dormant
                gate.on = True
                patches.append((owner, name, original, ours))
                return
    patches.append((owner, name, current, replacement))
    setattr(owner, name, replacement)


def _put_back(owner: Any, name: str, original: Any) -> None:
    if original is MISSING:
        try:
            delattr(owner, name)
        except AttributeError:
            pass
    else:
        setattr(owner, name, original)


def restore_patches(patches: list[tuple[Any, str, Any, Any]]) -> None:
    """Undo ``(owner, name, original, replacement)`` patches newest first: restore ``original`` (or
    delete an attribute that was inherited) where ours is still the outermost, else switch ours off.
    Then take out the pass-throughs of ours that became the outermost again (their coverer left)."""
    while patches:
        owner, name, original, replacement = patches.pop()
        if owner.__dict__.get(name, MISSING) is replacement:
            _put_back(owner, name, original)
            continue
        gate = gate_of(replacement)
        where = f"{getattr(owner, '__qualname__', type(owner).__qualname__)}.{name}"
        if gate is None:
            log.warning("cmbagent-events: %s was patched over ours by another library; ours stays in its chain", where)
            continue
        gate.on = False
        with _dormant_lock:
            _dormant.setdefault((id(owner), name), []).append((owner, replacement, original))
        log.info("cmbagent-events: %s was patched over ours by another library: ours is now a pass-through", where)
    _sweep_dormant()


def _sweep_dormant() -> None:
    with _dormant_lock:
        for key, entries in list(_dormant.items()):
            for entry in list(entries):
                owner, ours, original = entry
                if owner.__dict__.get(key[1], MISSING) is ours:
                    _put_back(owner, key[1], original)
                    entries.remove(entry)
            if not entries:
                del _dormant[key]


class PatchSet:
    """The patches of one integration. ``install(patches)`` applies them via :meth:`patch`."""

    def __init__(self, label: str, install: Callable[[PatchSet], None]) -> None:
        self.label = label
        self._install = install
        self._lock = threading.RLock()
        self._patches: list[tuple[Any, str, Any, Any]] = []  # (owner, attribute, original or MISSING, ours)
        self._refcount = 0
        self._explicit = False

    def patch(self, owner: type, name: str, replacement: Any) -> None:
        """Set ``owner.name`` to ``replacement``, remembering what to restore (see :func:`apply_patch`)."""
        with self._lock:
            apply_patch(self._patches, owner, name, replacement)

    @property
    def installed(self) -> bool:
        return bool(self._patches)

    def points(self) -> list[str]:
        """What is patched now, as ``Class.method``."""
        return [f"{owner.__name__}.{name}" for owner, name, _, _ in self._patches]

    def restore(self) -> None:
        """Undo every patch (idempotent)."""
        with self._lock:
            restore_patches(self._patches)

    def _ensure(self) -> bool:
        if self._patches:
            return True
        try:
            self._install(self)
        except Exception:
            self.restore()
            log.exception("cmbagent-events: could not install the %s hooks", self.label)
            return False
        return True

    def install(self) -> bool:
        """Install until :meth:`uninstall` (idempotent). True when the patches are in place."""
        with self._lock:
            ok = self._ensure()
            self._explicit = self._explicit or ok
            return ok

    def uninstall(self) -> None:
        """Remove everything now, whoever holds it."""
        with self._lock:
            self._explicit = False
            self._refcount = 0
            self.restore()

    def acquire(self) -> Callable[[], None] | None:
        """Hold the patches for one run; the returned callable releases them (once). The last release
        restores them unless :meth:`install` was called. None when they could not be installed."""
        with self._lock:
            if not self._ensure():
                return None
            self._refcount += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                self._refcount = max(0, self._refcount - 1)
                if self._refcount == 0 and not self._explicit:
                    self.restore()

        return release
