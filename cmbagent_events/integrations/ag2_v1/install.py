"""Installing the AG2 1.x hooks: the middleware on every turn, the listener on every hub, the code tool."""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable
from typing import Any

from ..patching import Gate, PatchSet, gated
from .code import patch_code
from .hubs import CaptureHubListener
from .middleware import CaptureMiddlewareFactory

log = logging.getLogger("cmbagent_events.ag2_v1")

_hub_listeners: weakref.WeakKeyDictionary[Any, CaptureHubListener] = weakref.WeakKeyDictionary()


def _carries_capture(factories: Any) -> bool:
    return any(isinstance(f, CaptureMiddlewareFactory) for f in factories)


def _patch_agent(patches: PatchSet, agent_cls: Any) -> None:
    original = agent_cls._drive_scope

    gate = Gate()

    def _drive_scope(self: Any, event: Any, *, additional_middleware: Any = (), **kwargs: Any) -> Any:
        if not gate.on:  # removed while another library's patch covered ours: a pass-through
            return original(self, event, additional_middleware=additional_middleware, **kwargs)
        try:
            if not _carries_capture(self._middleware) and not _carries_capture(additional_middleware):
                additional_middleware = (CaptureMiddlewareFactory(agent=self), *additional_middleware)
        except Exception:
            log.debug("cmbagent-events: could not add the capture middleware", exc_info=True)
        return original(self, event, additional_middleware=additional_middleware, **kwargs)

    functools.update_wrapper(_drive_scope, original)
    patches.patch(agent_cls, "_drive_scope", gated(_drive_scope, gate))


def _listener_for(hub: Any) -> CaptureHubListener:
    listener = _hub_listeners.get(hub)
    if listener is None:
        listener = _hub_listeners[hub] = CaptureHubListener(hub)
    return listener


def _patch_hub(patches: PatchSet, hub_cls: Any) -> None:
    original = hub_cls._fan_out

    gate = Gate()

    async def _fan_out(self: Any, method_name: str, *args: Any) -> None:
        await original(self, method_name, *args)
        if not gate.on or method_name not in ("on_envelope_posted", "on_turn_failed"):
            return
        if any(isinstance(listener, CaptureHubListener) for listener in self._listeners):
            return  # the user registered one: it already ran
        try:
            await getattr(_listener_for(self), method_name)(*args)
        except Exception:
            log.debug("cmbagent-events: hub capture failed", exc_info=True)

    functools.update_wrapper(_fan_out, original)
    patches.patch(hub_cls, "_fan_out", gated(_fan_out, gate))


def _install(patches: PatchSet) -> None:
    from ag2.agent import Agent

    _patch_agent(patches, Agent)
    try:  # imported here (~0.3 s, once per process) so that hubs made later in the run are covered too
        from ag2.network.hub.core import Hub
    except ImportError:  # an AG2 1.x without the network package
        pass
    else:
        _patch_hub(patches, Hub)
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
