"""Installing and removing the classic AG2 hooks: explicitly (``install_ag2_hooks``) or per run,
reference counted (``acquire_hooks``, used by ``capture_run``). AG2 is imported only here, when
hooks are installed, never when cmbagent_events is imported."""

from __future__ import annotations

import threading
from collections.abc import Callable

from .agents import patch_agents
from .code import patch_code
from .common import log, patches, unpatch_all
from .groupchat import patch_groupchat, restore_streams
from .llm import patch_llm

_lock = threading.RLock()
_explicit = False  # installed by install_ag2_hooks(), not only by capture_run
_refcount = 0


def _install() -> None:
    from autogen import ConversableAgent, GroupChat, GroupChatManager, OpenAIWrapper
    from autogen.io.base import IOStream

    try:
        import autogen.coding as coding

        executors = [cls for cls in (getattr(coding, name, None) for name in
                                     ("LocalCommandLineCodeExecutor", "DockerCommandLineCodeExecutor"))
                     if cls is not None]
        try:
            from autogen.agentchat.group.patterns.pattern import Pattern
        except ImportError:
            Pattern = None  # noqa: N806 - AG2 without group patterns
        patch_agents(ConversableAgent, GroupChatManager)
        patch_code(ConversableAgent, executors)
        patch_llm(OpenAIWrapper)
        patch_groupchat(ConversableAgent, GroupChat, IOStream, Pattern)
    except BaseException:
        _uninstall()
        raise


def _uninstall() -> None:
    unpatch_all()
    restore_streams()


def install_ag2_hooks() -> bool:
    """Patch AG2 so every run's events are captured (idempotent). True when the hooks are in place."""
    global _explicit
    with _lock:
        if not patches:
            try:
                _install()
            except Exception:
                log.exception("cmbagent-events: could not install AG2 hooks")
                return False
        _explicit = True
        return True


def uninstall_ag2_hooks() -> None:
    """Restore every AG2 method exactly as it was (idempotent)."""
    global _explicit, _refcount
    with _lock:
        _explicit = False
        _refcount = 0
        _uninstall()


def hooks_installed() -> bool:
    return bool(patches)


def acquire_hooks() -> Callable[[], None] | None:
    """Install the hooks for one run; the returned callable releases them (the last release uninstalls,
    unless :func:`install_ag2_hooks` was called explicitly)."""
    global _refcount
    with _lock:
        if not patches:
            try:
                _install()
            except Exception:
                log.exception("cmbagent-events: could not install AG2 hooks")
                return None
        _refcount += 1
    released = False

    def release() -> None:
        global _refcount
        nonlocal released
        with _lock:
            if released:
                return
            released = True
            _refcount = max(0, _refcount - 1)
            if _refcount == 0 and not _explicit:
                _uninstall()

    return release
