"""Reference-counted patches, the one way every integration hooks a library: installed while a run
(or an explicit install) holds them, then removed without ever removing anyone else's.

Other libraries patch the same AG2 methods (AgentOps and OpenInference with ``wrapt``, others with
plain wrappers), before or after us, and remove their patches in any order. So:

- removing restores what the attribute held before us only where our wrapper is still the outermost
  (``owner.__dict__[name] is ours``); when someone patched over us, our wrapper stays in their chain
  and its :class:`Gate` is switched off: it becomes a pass-through (one attribute check per call);
- installing again first looks for such a dormant wrapper of ours still in the chain (through
  ``__wrapped__``, which ``functools.wraps`` and ``wrapt`` set) and switches it back on instead of
  stacking a second one; otherwise it wraps whatever is outermost now.

Every hook is made by one generator, :func:`wrap_call` (a :class:`CallHook`'s ``start``/``end``
around the call, guarded so a hook's own failure never reaches the host), and so carries a gate.
A replacement set through :meth:`PatchSet.patch` without a gate that another library wrapped
stays active after removal (logged), since nothing else can take it out of their chain.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

from .guard import Guard

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


class DidNotEnable(Exception):  # Sentry's name for the same thing
    """The library an integration hooks is not installed (or not usable): said once, at INFO."""


class PatchSet:
    """The patches of one integration (one per AG2 flavour), installed by ``install(patches)`` through
    :meth:`patch` / :meth:`patch_call`, held explicitly (:meth:`install`) or per run (:meth:`acquire`,
    reference counted), and removed exactly (:func:`restore_patches`)."""

    def __init__(self, label: str, install: Callable[[PatchSet], None], logger: logging.Logger = log) -> None:
        self.label = label
        self.log = logger  # where what it found is said (the flavour's logger)
        self._install = install
        self._lock = threading.RLock()
        self._patches: list[tuple[Any, str, Any, Any]] = []  # (owner, attribute, original or MISSING, ours)
        self._refcount = 0
        self._explicit = False
        self._said: set[str] = set()  # messages already logged in this process
        self.unavailable: list[str] = []  # patch points the installed library lacks: their events are not captured
        self.failure: str | None = None  # why the last installation did not happen, else None
        self.on_restore: list[Callable[[], None]] = []  # run (then forgotten) after the patches are undone

    def patch(self, owner: Any, name: str, replacement: Any) -> None:
        """Set ``owner.name`` to ``replacement``, remembering what to restore (see :func:`apply_patch`)."""
        with self._lock:
            apply_patch(self._patches, owner, name, replacement)

    def patch_call(self, owner: Any, name: str, hook: CallHook) -> None:
        """Hook ``owner.name`` with :func:`wrap_call` (a staticmethod stays one); a method this version
        of the library lacks is noted in :attr:`unavailable`, never an AttributeError."""
        original = getattr(owner, name, None)
        if original is None:
            self.unavailable.append(point_name(owner, name))
            return
        wrapper = wrap_call(original, hook, name)
        if isinstance(inspect.getattr_static(owner, name, None), staticmethod):
            wrapper = staticmethod(wrapper)
        self.patch(owner, name, wrapper)

    @property
    def installed(self) -> bool:
        return bool(self._patches)

    def points(self) -> list[str]:
        """What is patched now, as ``Class.method``."""
        return [point_name(owner, name) for owner, name, _, _ in self._patches]

    def restore(self) -> None:
        """Undo every patch (idempotent)."""
        with self._lock:
            restore_patches(self._patches)
            while self.on_restore:
                self.on_restore.pop()()

    def say_once(self, message: str, level: int = logging.INFO, exc_info: bool = False) -> None:
        """Log ``message`` unless this patch set already did in this process."""
        if message not in self._said:
            self._said.add(message)
            self.log.log(level, "%s", message, exc_info=exc_info)

    def _ensure(self) -> bool:
        if self._patches:
            return True
        self.unavailable.clear()
        try:
            self._install(self)
        except DidNotEnable as exc:
            self.restore()
            self.failure = str(exc)
            self.say_once(self.failure)
            return False
        except Exception as exc:
            self.restore()
            self.failure = f"cmbagent-events: could not install the {self.label} hooks: {exc!r}"
            self.say_once(self.failure, logging.WARNING, exc_info=True)
            return False
        except BaseException:  # interrupted halfway: nothing of ours stays behind
            self.restore()
            raise
        self.failure = None
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


def point_name(owner: Any, name: str) -> str:
    """``Class.method`` (``module.function`` for a module, ``Class.method`` for an instance)."""
    label = getattr(owner, "__name__", None)
    if not isinstance(label, str):
        label = type(owner).__name__
    return f"{label.rsplit('.', 1)[-1]}.{name}"


# -- the one way to hook a call ---------------------------------------------------------------------
class CallHook:
    """What a wrapper does around one call: ``start(args, kwargs)`` before it (``args`` as the
    wrapper got them: a method's receiver first) returns its state, or None to call the original
    uncaptured; ``end(state, result, error, where)`` after it, with the result or the exception
    (re-raised unchanged after ``end``). Neither may change the result; ``start`` may add to
    ``kwargs`` only where a hook exists for that (AG2 1.x's middleware). Both are guarded by the
    generator: their failures never reach the host. A hook whose ``end`` only ever looks at errors
    sets ``errors_only``: ``end`` is then called only when the call raised (no call per result)."""

    errors_only = False

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return None

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        pass


HOOK_START = Guard("hook start")
HOOK_END = Guard("hook end")


def wrap_call(original: Callable[..., Any], hook: CallHook, where: str) -> Callable[..., Any]:
    """A gated wrapper of ``original`` (sync or async, chosen by what ``original`` is) running ``hook``.

    ``functools.wraps`` keeps the original's ``__name__`` (AG2 0.14 pairs sync and async reply
    functions by name) and sets ``__wrapped__`` (other libraries find the original through it).
    The gate is off once another library has wrapped ours and we were removed: a pass-through.
    The async wrapper only ever awaits the async original. The ``try`` blocks are inline, not
    :class:`Guard` blocks nor a helper function: this runs on every hooked call (see guard.py for
    the costs; a helper around ``end`` was one more frame per hooked call).
    """
    gate = Gate()
    start, end = hook.start, hook.end
    on_result = not hook.errors_only
    if inspect.iscoroutinefunction(original):
        @functools.wraps(original)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                state = start(args, kwargs) if gate.on else None
            except Exception:
                HOOK_START.swallow()
                state = None
            if state is None:
                return await original(*args, **kwargs)
            try:
                result = await original(*args, **kwargs)
            except BaseException as exc:
                try:
                    end(state, None, exc, where)
                except Exception:
                    HOOK_END.swallow()
                raise
            if on_result:
                try:
                    end(state, result, None, where)
                except Exception:
                    HOOK_END.swallow()
            return result

        return gated(async_wrapper, gate)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            state = start(args, kwargs) if gate.on else None
        except Exception:
            HOOK_START.swallow()
            state = None
        if state is None:
            return original(*args, **kwargs)
        try:
            result = original(*args, **kwargs)
        except BaseException as exc:
            try:
                end(state, None, exc, where)
            except Exception:
                HOOK_END.swallow()
            raise
        if on_result:
            try:
                end(state, result, None, where)
            except Exception:
                HOOK_END.swallow()
        return result

    return gated(wrapper, gate)
