"""Classic AG2 answered from a recorded run: while a replay is open, ``OpenAIWrapper.create`` calls
a stand-in for each of its model clients, which asks the replay for the recorded response instead
of calling the model (and passes the call to the real client when the replay says so: a fork of the
run after a divergence). AG2's own handling around the client (cost, usage, message retrieval,
tool calls) runs as it ran when the run was recorded. With ``tools="recorded"``, ``execute_function``
answers with the recorded tool results too.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from ..patching import CallHook, Gate, apply_patch, gated, restore_patches, wrap_call


class ReplayClient:
    """A model client answering from the replay; AG2's ModelClient protocol, its other methods
    delegated to the real client it stands for (they read the response's fields)."""

    def __init__(self, real: Any, replayer: Any, agent: Any) -> None:
        self.real = real
        self.replayer = replayer
        self.agent = agent

    def create(self, params: dict[str, Any]) -> Any:
        served = self.replayer.serve(self.agent, params)
        if served is self.replayer.LIVE:
            return self.real.create(params)
        return served

    def message_retrieval(self, response: Any) -> Any:
        return self.real.message_retrieval(response)

    def cost(self, response: Any) -> float:
        try:
            return float(self.real.cost(response))
        except Exception:  # a recorded response the real client cannot price: the recorded cost
            return float(getattr(response, "cost", 0.0) or 0.0)

    def get_usage(self, response: Any) -> dict[str, Any]:
        return dict(self.real.get_usage(response))

    def __getattr__(self, name: str) -> Any:  # anything else the wrapper asks of its clients
        return getattr(self.real, name)


class ServeFromReplay(CallHook):
    """Around ``OpenAIWrapper.create``: its clients stand in for by ReplayClients for this call."""

    def __init__(self, replayer: Any) -> None:
        self.replayer = replayer

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        wrapper = args[0]
        real = wrapper.__dict__.get("_clients")
        if real is None:
            return None
        wrapper._clients = [ReplayClient(c, self.replayer, kwargs.get("agent")) for c in real]
        return wrapper, real

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        wrapper, real = state
        wrapper._clients = real


def _recorded_tools(replayer: Any, original: Any) -> Any:
    """``execute_function`` (sync or async, as ``original``) answering with the recorded result of the
    agent's next call of that tool; a tool the recorded run never called runs for real."""
    if inspect.iscoroutinefunction(original):
        @functools.wraps(original)
        async def a_execute_function(self: Any, func_call: Any, *args: Any, **kwargs: Any) -> Any:
            served = replayer.tool_result(self, func_call)
            return await original(self, func_call, *args, **kwargs) if served is None else served

        return gated(a_execute_function, Gate())

    @functools.wraps(original)
    def execute_function(self: Any, func_call: Any, *args: Any, **kwargs: Any) -> Any:
        served = replayer.tool_result(self, func_call)
        return original(self, func_call, *args, **kwargs) if served is None else served

    return gated(execute_function, Gate())


def install(replayer: Any, tools: bool = False) -> list[tuple[Any, str, Any, Any]]:
    """Route every ``OpenAIWrapper.create`` through ``replayer`` (and, with ``tools``, every
    ``execute_function``); returns the patches to restore."""
    from autogen import ConversableAgent, OpenAIWrapper

    patches: list[tuple[Any, str, Any, Any]] = []
    original = OpenAIWrapper.create
    apply_patch(patches, OpenAIWrapper, "create", wrap_call(original, ServeFromReplay(replayer), "replay"))
    if tools:
        for name in ("execute_function", "a_execute_function"):
            apply_patch(patches, ConversableAgent, name, _recorded_tools(replayer, getattr(ConversableAgent, name)))
    return patches


def uninstall(patches: list[tuple[Any, str, Any, Any]]) -> None:
    restore_patches(patches)
