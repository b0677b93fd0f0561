"""Installing the AG2 1.x hooks: the middleware on every turn, the listener on every hub, the code tool."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from ..patching import CallHook, PatchSet
from .code import patch_code
from .hubs import CaptureHubListener
from .middleware import CaptureMiddlewareFactory


def _carries_capture(factories: Any) -> bool:
    return any(isinstance(f, CaptureMiddlewareFactory) for f in factories)


class DriveScopeHook(CallHook):
    """``Agent._drive_scope(self, event, *, additional_middleware=(), ...)``: every turn gets our
    middleware, unless the agent or the call already carries one (``capture_middleware()``). The one
    hook that adds to the call's arguments, which is how AG2 1.x takes middleware for one turn."""

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        extra = kwargs.get("additional_middleware", ())
        if not _carries_capture(args[0]._middleware) and not _carries_capture(extra):
            kwargs["additional_middleware"] = (CaptureMiddlewareFactory(agent=args[0]), *extra)
        return None  # nothing to do after the call


class FanOutHook(CallHook):
    """``Hub._fan_out(self, method_name, *args)``: after the hub's own listeners, ours (one per hub),
    unless the user registered one."""

    def __init__(self) -> None:
        self._listeners: weakref.WeakKeyDictionary[Any, CaptureHubListener] = weakref.WeakKeyDictionary()

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        hub = args[0]
        if args[1] not in ("on_envelope_posted", "on_turn_failed"):
            return None
        if any(isinstance(listener, CaptureHubListener) for listener in hub._listeners):
            return None  # the user registered one: it runs anyway
        return args

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        if error is not None:
            return
        hub, method_name, *rest = state
        listener = self._listeners.get(hub)
        if listener is None:
            listener = self._listeners[hub] = CaptureHubListener(hub)
        listener.seen(method_name, *rest)


def _install(patches: PatchSet) -> None:
    from ag2.agent import Agent

    patches.patch_call(Agent, "_drive_scope", DriveScopeHook())
    try:  # imported here (~0.3 s, once per process) so that hubs made later in the run are covered too
        from ag2.network.hub.core import Hub
    except ImportError:  # an AG2 1.x without the network package
        pass
    else:
        patches.patch_call(Hub, "_fan_out", FanOutHook())
    try:
        from ag2.tools.sandbox.adapter.code import CodeAdapter
        from ag2.tools.sandbox.local import LocalSandbox
    except ImportError:  # an AG2 1.x without the sandbox code tool
        pass
    else:
        patch_code(patches, CodeAdapter, LocalSandbox)


PATCHES = PatchSet("AG2 1.x", _install)


def version() -> str | None:
    """The installed AG2 1.x version, or None."""
    from ..flavours import v1_version

    return v1_version()


def install_hooks() -> bool:
    """Patch AG2 1.x so every agent turn and hub envelope is captured (idempotent)."""
    return PATCHES.install()


def uninstall_hooks() -> None:
    """Restore ``Agent._drive_scope`` (and ``Hub._fan_out``) exactly as they were (idempotent)."""
    PATCHES.uninstall()


def hooks_installed() -> bool:
    return PATCHES.installed


def patch_points() -> list[str]:
    """The methods currently patched, as ``Class.method``."""
    return PATCHES.points()


def acquire_hooks() -> Callable[[], None] | None:
    """Install the hooks for one run; the returned callable releases them (the last release
    uninstalls, unless :func:`install_hooks` was called explicitly)."""
    return PATCHES.acquire()
