"""Reference-counted class patches: installed while a run (or an explicit install) holds them, then
restored exactly. Shared by the AG2 integrations.

Restoring puts back what the class itself held (or deletes our attribute when the method was
inherited), in reverse order of patching.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("cmbagent_events")

MISSING = object()  # recorded as the original of an attribute the class only inherited


def restore_patches(patches: list[tuple[type, str, Any]]) -> None:
    """Undo ``(owner, name, original)`` patches newest first (an inherited one is deleted again)."""
    while patches:
        owner, name, original = patches.pop()
        if original is MISSING:
            try:
                delattr(owner, name)
            except AttributeError:
                pass
        else:
            setattr(owner, name, original)


class PatchSet:
    """The patches of one integration. ``install(patches)`` applies them via :meth:`patch`."""

    def __init__(self, label: str, install: Callable[[PatchSet], None]) -> None:
        self.label = label
        self._install = install
        self._lock = threading.RLock()
        self._patches: list[tuple[type, str, Any]] = []  # (owner, attribute, original or MISSING)
        self._refcount = 0
        self._explicit = False

    def patch(self, owner: type, name: str, replacement: Any) -> None:
        """Set ``owner.name`` to ``replacement``, remembering what to restore."""
        with self._lock:
            self._patches.append((owner, name, owner.__dict__.get(name, MISSING)))
            setattr(owner, name, replacement)

    @property
    def installed(self) -> bool:
        return bool(self._patches)

    def points(self) -> list[str]:
        """What is patched now, as ``Class.method``."""
        return [f"{owner.__name__}.{name}" for owner, name, _ in self._patches]

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
