"""Installing and removing the classic AG2 hooks: explicitly (``install_ag2_hooks``) or per run,
reference counted (``acquire_hooks``, used by ``capture_run``), through the patch set every flavour
uses (integrations/patching.py). AG2 is imported only here, when hooks are installed, never when
cmbagent_events is imported.

Classic AG2 (``import autogen``) comes from one of several distributions that install the same
``autogen/`` files: ``ag2`` 0.10.3-0.14, ``autogen`` 0.14.x, CMBAgent's fork ``cmbagent-autogen``
(ag2 0.9.1-based). The hooks work on whichever is installed: a patch point that flavour lacks is
skipped and reported, never an AttributeError; group transitions are read from AG2's transition
events where it sends them, else inferred (inferred_transitions.py). :func:`hooks_report` says
what was found and done; the same is logged once at INFO. With no classic AG2 (none at all, or
only AG2 1.x, which has no ``autogen`` package), runs capture what they record themselves and
this is said once.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass

from .. import flavours
from ..patching import DidNotEnable, PatchSet
from .agents import patch_agents
from .code import patch_code
from .groupchat import patch_groupchat
from .inferred_transitions import patch_inferred_transitions
from .llm import patch_llm

CLASSIC_DISTRIBUTIONS = ("ag2", "autogen", "cmbagent-autogen", "pyautogen")  # each installs autogen/
TRANSITION_EVENTS_MODULE = "autogen.agentchat.group.events.transition_events"


@dataclass(frozen=True)
class HooksReport:
    """What the classic AG2 hooks found and did (see :func:`hooks_report`).

    ``distribution``/``version``: the distribution providing ``autogen`` (None: no classic AG2);
    ``installed``: the patch points hooked now (``Class.method``; empty while not installed);
    ``unavailable``: patch points this flavour lacks, so what they capture is not captured;
    ``transitions``: how group-pattern transition reasons are learnt: ``events`` (AG2 sends
    them), ``inferred`` (from group state: the cmbagent fork) or ``none``;
    ``message``: the one-line summary that was logged.
    """

    distribution: str | None
    version: str | None
    installed: tuple[str, ...]
    unavailable: tuple[str, ...]
    transitions: str
    message: str

    @property
    def active(self) -> bool:
        return bool(self.installed)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package is missing, or blocked (sys.modules entry None)
        return False


def _provides_autogen(distribution: str) -> bool:
    # RECORD read as text: importlib.metadata.files() builds a path object per file (~1600 for ag2,
    # ~100 ms of a process's first capture_run on a loaded machine) only to look for one of them.
    try:
        record = importlib.metadata.distribution(distribution).read_text("RECORD")
    except importlib.metadata.PackageNotFoundError:
        return False
    if record is None:  # no RECORD (e.g. some system packages): cannot tell, assume it does
        return True
    return any(line.split(",", 1)[0].replace("\\", "/") == "autogen/__init__.py" for line in record.splitlines())


@functools.cache
def _classic_distribution() -> tuple[str, str]:
    """(distribution, version) of the installed ``autogen`` package; with several installed over
    each other, the one whose version the ``autogen`` files carry. Cached: reading distribution
    metadata costs tens of ms, and the hooks are installed for every run."""
    import autogen

    found = [(d, v) for d in CLASSIC_DISTRIBUTIONS if (v := _version(d)) is not None and _provides_autogen(d)]
    carried = str(getattr(autogen, "__version__", "")).replace(".", "")
    for distribution, version in found:
        if version.replace(".", "") == carried:
            return distribution, version
    if found:
        return found[0]
    return "unknown", str(getattr(autogen, "__version__", "unknown"))


def _no_classic_ag2() -> HooksReport:
    v1 = flavours.v1_version()
    message = "cmbagent-events: no classic AG2 (`import autogen`) found"
    if v1 is not None:
        message += f"; AG2 1.x (ag2 {v1}) is captured by its own hooks"
    else:
        message += " and no AG2 1.x: runs capture only what they record themselves"
    return HooksReport(None, None, (), (), "none", message)


class ClassicPatches(PatchSet):
    """The classic AG2 patch set, with what its last installation found (for :func:`hooks_report`)."""

    def __init__(self) -> None:
        super().__init__("AG2", lambda _: self._patch_all(), logging.getLogger("cmbagent_events.ag2"))
        self.found: tuple[str, str, str] | None = None  # (distribution, version, transitions)

    def report(self) -> HooksReport:
        """The last installation's report (patch points: those installed now), never raises."""
        if self.found is None:
            if self.failure is not None:
                return HooksReport(None, None, (), (), "none", self.failure)
            return _found_report()
        distribution, version, transitions = self.found
        installed = tuple(self.points())
        return HooksReport(distribution, version, installed, tuple(self.unavailable), transitions,
                           _summary(distribution, version, installed, self.unavailable, transitions))

    def _patch_all(self) -> None:
        self.found = None
        self.found = install_classic(self)
        self.say_once(self.report().message)


def _summary(distribution: str, version: str, installed: tuple[str, ...], unavailable: list[str],
             transitions: str) -> str:
    return (f"cmbagent-events: AG2 hooks on {distribution} {version}: {len(installed)} patch points installed, "
            f"transitions {transitions}; unavailable on this flavour: {', '.join(unavailable) or 'none'}")


def _found_report() -> HooksReport:
    """The flavour found, without patching anything (the hooks were never installed)."""
    try:
        if not flavours.classic_installed():
            return _no_classic_ag2()
        distribution, version = _classic_distribution()
        transitions = "events" if _has_module(TRANSITION_EVENTS_MODULE) else "inferred"
        return HooksReport(distribution, version, (), (), transitions,
                           f"cmbagent-events: {distribution} {version} found; AG2 hooks not installed yet")
    except Exception as exc:
        return HooksReport(None, None, (), (), "none", f"cmbagent-events: classic AG2 unusable: {exc!r}")


def install_classic(patches: PatchSet) -> tuple[str, str, str]:
    """Patch every hook point the installed classic AG2 has (an explicit list, in this order) and
    return what was found: (distribution, version, how transitions are learnt). Raises DidNotEnable
    without classic AG2."""
    if not flavours.classic_installed():
        raise DidNotEnable(_no_classic_ag2().message)
    from autogen import ConversableAgent, GroupChat, GroupChatManager, OpenAIWrapper, coding

    distribution, version = _classic_distribution()
    executors = [cls for cls in (getattr(coding, name, None) for name in
                                 ("LocalCommandLineCodeExecutor", "DockerCommandLineCodeExecutor"))
                 if cls is not None]
    pattern_cls: type | None = None
    try:
        from autogen.agentchat.group.patterns import pattern as pattern_module

        pattern_cls = pattern_module.Pattern
    except ImportError:
        pass  # AG2 without group patterns
    io_cls: type | None = None
    transitions = "none"
    if _has_module(TRANSITION_EVENTS_MODULE):
        from autogen.io.base import IOStream

        io_cls = IOStream
        transitions = "events"
    patch_agents(patches, ConversableAgent, GroupChatManager)
    patch_code(patches, ConversableAgent, executors)
    patch_llm(patches, OpenAIWrapper)
    patch_groupchat(patches, ConversableAgent, GroupChat, io_cls, pattern_cls)
    if io_cls is None:
        patches.unavailable.append("IOStream.get_default (sends no transition events: inferred from group state)")
        transitions = _patch_inferred(patches)
    return distribution, version, transitions


def _patch_inferred(patches: PatchSet) -> str:
    """Hook what transitions are inferred from; how transitions are learnt (``inferred`` or ``none``)."""
    try:
        from autogen.agentchat.group import group_utils
        from autogen.agentchat.group.group_tool_executor import GroupToolExecutor
    except ImportError:
        return "none"  # AG2 without group patterns: no transitions to learn
    patch_inferred_transitions(patches, group_utils, GroupToolExecutor)
    return "inferred"


PATCHES = ClassicPatches()


def hooks_report() -> HooksReport:
    """The classic AG2 flavour found (distribution, version), the patch points installed now and
    those unavailable on it (known once the hooks have been installed: ``install_ag2_hooks()`` or
    a ``capture_run``), and how transitions are learnt. Never raises."""
    return PATCHES.report()


def install_ag2_hooks() -> bool:
    """Patch AG2 so every run's events are captured (idempotent). True when the hooks are in place."""
    return PATCHES.install()


def uninstall_ag2_hooks() -> None:
    """Restore every AG2 method exactly as it was (idempotent)."""
    PATCHES.uninstall()


def hooks_installed() -> bool:
    return PATCHES.installed


def acquire_hooks() -> Callable[[], None] | None:
    """Install the hooks for one run; the returned callable releases them (the last release uninstalls,
    unless :func:`install_ag2_hooks` was called explicitly)."""
    return PATCHES.acquire()
