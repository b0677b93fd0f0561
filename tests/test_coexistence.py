"""Our AG2 hooks beside other libraries that patch the same methods: a plain wrapper
(``functools.wraps``), a bare one (no ``__wrapped__``) and a ``wrapt`` one removed the way
OpenTelemetry instrumentations (OpenInference) and AgentOps do it, installed and removed in
every order, on real AG2 classes with a real (scripted) conversation.

What must hold: while our hooks are installed and in the chain, every call is captured exactly
once (never twice, never lost); removing ours never removes theirs (their wrapper still runs);
after removal ours captures nothing (a pass-through where it could not be taken out); installing
again wakes our dormant wrapper instead of stacking another one.
"""

from __future__ import annotations

import types
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

autogen = pytest.importorskip("autogen")
wrapt = pytest.importorskip("wrapt")

from autogen import ConversableAgent, OpenAIWrapper  # noqa: E402

from cmbagent_events import (  # noqa: E402
    ExecutionEvent,
    capture_run,
    install_ag2_hooks,
    make_engine,
    uninstall_ag2_hooks,
)
from cmbagent_events.integrations.patching import MISSING, CallHook, wrap_call  # noqa: E402
from cmbagent_events.testing.foreign_patch import ForeignPatch  # noqa: E402
from cmbagent_events.testing.tool_chat import adding_pair  # noqa: E402

pytestmark = pytest.mark.ag2

# Methods both we and the other libraries patch (OpenInference's AG2 instrumentation wraps
# generate_reply and execute_function; model-call tracers wrap OpenAIWrapper.create).
POINTS = [(ConversableAgent, "generate_reply"), (ConversableAgent, "a_generate_reply"),
          (ConversableAgent, "send"), (ConversableAgent, "execute_function"), (OpenAIWrapper, "create")]


def chat() -> None:
    """One real AG2 conversation: a tool call, two model calls, four turns."""
    user, assistant = adding_pair(2, 3)
    user.initiate_chat(assistant, message="What is 2+3?", max_turns=3)


# -- the other libraries -------------------------------------------------------------------------------
class Peer:
    """Another library's patches on POINTS; ``calls`` counts what its wrappers saw."""

    name = "peer"

    def __init__(self) -> None:
        self.calls: Counter = Counter()
        self.saved: dict[tuple[type, str], Any] = {}

    def install(self) -> None:
        raise NotImplementedError

    def uninstall(self) -> None:
        raise NotImplementedError


class PlainPeer(ForeignPatch, Peer):
    """A wrapper made with functools.wraps; uninstall puts back what it found (unconditionally)."""

    name = "plain"

    def __init__(self) -> None:
        ForeignPatch.__init__(self, POINTS)


class BarePeer(ForeignPatch, Peer):
    """A wrapper without functools.wraps: nothing leads from it to what it wraps."""

    name = "bare"

    def __init__(self) -> None:
        ForeignPatch.__init__(self, POINTS, link="bare")


class WraptPeer(Peer):
    """``wrapt.wrap_function_wrapper`` in, ``opentelemetry.instrumentation.utils.unwrap`` out (only
    when its own proxy is the attribute: it never removes a wrapper put over it)."""

    name = "wrapt"

    def install(self) -> None:
        for owner, attr in POINTS:
            wrapt.wrap_function_wrapper(owner, attr, self._wrapper)

    def _wrapper(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        self.calls[wrapped.__name__] += 1
        return wrapped(*args, **kwargs)

    def uninstall(self) -> None:
        for owner, attr in POINTS:
            proxy = owner.__dict__.get(attr)  # otel's unwrap: only a wrapt proxy it finds on the class
            if isinstance(proxy, wrapt.FunctionWrapper) and hasattr(proxy, "__wrapped__"):
                setattr(owner, attr, proxy.__wrapped__)


PEERS = [PlainPeer, BarePeer, WraptPeer]


# -- helpers -----------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _pristine() -> Iterator[dict[tuple[type, str], Any]]:
    """Start and end with AG2 as it was (and tell a test if it did not end so)."""
    uninstall_ag2_hooks()
    before = {(owner, attr): owner.__dict__.get(attr, MISSING) for owner, attr in POINTS}
    yield before
    uninstall_ag2_hooks()
    for (owner, attr), value in before.items():  # leave nothing of a failed test behind
        if owner.__dict__.get(attr, MISSING) is not value:
            setattr(owner, attr, value) if value is not MISSING else delattr(owner, attr)


async def captured(url: str) -> Counter:
    """Run the chat inside a run that installs nothing; what did our hooks capture?"""
    async with capture_run(url, hooks=False) as run:
        chat()
    return await events_by_type(url, run.run_id)


async def events_by_type(url: str, run_id: str) -> Counter:
    engine = make_engine(url)
    try:
        async with async_sessionmaker(engine)() as session:
            rows = (await session.scalars(select(ExecutionEvent).where(ExecutionEvent.run_id == run_id))).all()
    finally:
        await engine.dispose()
    return Counter((e.event_type, e.event_subtype) for e in rows)


def peer_active(peer: Peer) -> bool:
    """Does the peer's generate_reply wrapper still run?"""
    saved = peer.calls.copy()
    peer.calls.clear()
    ConversableAgent("probe", llm_config=False, human_input_mode="NEVER").generate_reply(
        messages=[{"role": "user", "content": "hi"}])
    active = peer.calls["generate_reply"] > 0
    peer.calls.clear()
    peer.calls.update(saved)
    return active


def our_wrappers(owner: type, attr: str) -> int:
    """How many wrappers of ours are in the attribute's chain (followed through __wrapped__)."""
    ours = {wrap_call(lambda self: None, CallHook(), "x").__code__,
            wrap_call(_async_probe, CallHook(), "x").__code__}
    node, count = owner.__dict__.get(attr), 0
    for _ in range(64):
        if node is None:
            break
        count += type(node) is types.FunctionType and node.__code__ in ours  # a wrapt proxy mimics its target
        node = getattr(node, "__wrapped__", None)
    return count


async def _async_probe(self: Any) -> None:
    return None


async def baseline(url: str, peer_cls: type[Peer]) -> tuple[Counter, Counter]:
    """What our hooks alone capture, and what the peer alone sees, for one chat."""
    install_ag2_hooks()
    ours = await captured(url)
    uninstall_ag2_hooks()
    peer = peer_cls()
    peer.install()
    chat()
    peer.uninstall()
    assert ours[("agent_call", "complete")] >= 2 and ours[("tool_call", "execute")] == 1
    assert peer.calls["generate_reply"] >= 2 and peer.calls["create"] == 2
    return ours, Counter(peer.calls)


# -- the matrix ----------------------------------------------------------------------------------------------
ORDERS = {
    "ours, theirs, ours out, theirs out": ["U+", "T+", "U-", "T-"],
    "ours, theirs, theirs out, ours out": ["U+", "T+", "T-", "U-"],
    "theirs, ours, ours out, theirs out": ["T+", "U+", "U-", "T-"],
    "theirs, ours, theirs out, ours out": ["T+", "U+", "T-", "U-"],
    "ours, theirs, ours out and in again, theirs out": ["U+", "T+", "U-", "U+", "U-", "T-"],
}


@pytest.mark.parametrize("peer_cls", PEERS, ids=lambda p: p.name)
@pytest.mark.parametrize("order", list(ORDERS), ids=list(ORDERS))
async def test_interleaved_installs_never_remove_theirs_and_never_capture_twice(
        peer_cls: type[Peer], order: str, sqlite_url: str, _pristine: dict) -> None:
    ours_alone, theirs_alone = await baseline(sqlite_url, peer_cls)
    peer = peer_cls()
    ours_in = theirs_in = False
    for step in ORDERS[order]:
        theirs_ran_before = peer_active(peer)
        if step == "U+":
            assert install_ag2_hooks()
            ours_in = True
        elif step == "U-":
            uninstall_ag2_hooks()
            ours_in = False
        elif step == "T+":
            peer.install()
            theirs_in = True
        else:
            peer.uninstall()
            theirs_in = False
        peer.calls.clear()
        got = await captured(sqlite_url)
        where = f"after {step} in {ORDERS[order]}"
        # A peer that restores the method it found when it came first removes whatever was put over
        # it later, ours included; that is its doing, and the only case where ours is lost.
        lost_to_peer = (step == "T-" and ours_in and order.startswith("theirs, ours")
                        and peer_cls is not WraptPeer)
        if ours_in and not lost_to_peer:
            assert got == ours_alone, where  # exactly once: nothing doubled, nothing missing
        else:
            assert got == Counter(), where  # removed, or a pass-through
        # otel's unwrap leaves its proxy in place when something sits over it: it stays active.
        theirs_stuck = peer_cls is WraptPeer and order == "theirs, ours, theirs out, ours out" and step in ("T-", "U-")
        if theirs_in or theirs_stuck:
            assert peer.calls == theirs_alone, where  # ours never removed theirs
        else:
            assert peer.calls == Counter(), where
        if step == "U-":
            assert peer_active(peer) == theirs_ran_before, where
        for owner, attr in POINTS:
            assert our_wrappers(owner, attr) <= 1, f"{where}: {owner.__name__}.{attr} holds several of ours"

    uninstall_ag2_hooks()  # as the next run's exit would: takes out pass-throughs left outermost by the peer
    if not (peer_cls is WraptPeer and order == "theirs, ours, theirs out, ours out"):
        for (owner, attr), value in _pristine.items():  # everyone gone: AG2 exactly as it was
            assert owner.__dict__.get(attr, MISSING) is value, f"{owner.__name__}.{attr} not restored"


@pytest.mark.parametrize("peer_cls", PEERS, ids=lambda p: p.name)
async def test_runs_under_another_librarys_patch_wake_one_wrapper_of_ours(peer_cls: type[Peer],
                                                                           sqlite_url: str) -> None:
    """capture_run installs and removes our hooks per run; with a peer patched over ours, each run
    wakes the same dormant wrapper (or, when the chain cannot be followed, adds one and removes it
    again): the chain does not grow run after run, and every run captures exactly once."""
    ours_alone, theirs_alone = await baseline(sqlite_url, peer_cls)
    install_ag2_hooks()
    peer = peer_cls()
    peer.install()
    uninstall_ag2_hooks()  # ours under theirs: dormant
    for _ in range(5):
        peer.calls.clear()
        async with capture_run(sqlite_url) as run:  # hooks=True: acquire, then release at exit
            chat()
            chains = [our_wrappers(owner, attr) for owner, attr in POINTS]
        assert await events_by_type(sqlite_url, run.run_id) == ours_alone  # exactly once, every run
        assert peer.calls == theirs_alone
        assert chains == [1] * len(POINTS)  # one wrapper of ours in each chain, run after run
    assert await captured(sqlite_url) == Counter()  # between runs: nothing of ours active
    peer.uninstall()
