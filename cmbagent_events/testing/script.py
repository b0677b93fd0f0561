"""Scripts for the scripted model client: the replies each agent gets, and what each served call cost.

A :class:`Script` holds the replies, one queue per agent name plus a shared ``"*"`` queue. A reply
is plain text, a :class:`ToolCall` (or a list of them: parallel tool calls), or a callable
``(messages) -> reply`` evaluated when the call happens. Scripts live in a module-level registry
and configs carry only the script id (a string), so AG2's copies of llm_config never fork a
script's state. Token counts are deterministic (:func:`count_tokens`).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ANY_AGENT = "*"


@dataclass(frozen=True)
class ToolCall:
    """A scripted tool call: the model "asks" to call ``name`` with ``arguments``.

    ``arguments`` is a mapping (JSON-encoded for you) or an already encoded JSON string.
    ``id`` defaults to a deterministic ``call_<script>_<n>``.
    """

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments), sort_keys=True)


Reply = str | ToolCall | Sequence[ToolCall] | Callable[[list[dict[str, Any]]], Any]
"""Text, a tool call, several parallel tool calls, or ``callable(messages) -> one of those``."""


class ScriptExhaustedError(RuntimeError):
    """A scripted agent was asked for more replies than its script holds (and no fallback)."""


@dataclass(frozen=True)
class ScriptedCall:
    """One served model call, kept on the script so tests can assert usage sums exactly."""

    agent_name: str
    prompt_tokens: int
    completion_tokens: int
    cost: float
    reply: str | tuple[ToolCall, ...]
    params: dict[str, Any] | None = None  # the request as the client received it (a deep copy), tests compare


_REGISTRY: dict[str, Script] = {}
_REGISTRY_LOCK = threading.Lock()
_SCRIPT_IDS = itertools.count(1)


class Script:
    """Replies for scripted agents: a queue per agent name, plus a shared ``"*"`` queue.

    ``replies`` is either a sequence (the shared queue) or a mapping agent name -> sequence.
    An agent's own queue is used first, then the shared one, then ``fallback`` (a reply served
    forever, e.g. ``"TERMINATE"``); with neither, :class:`ScriptExhaustedError` is raised.
    Thread-safe; registered under ``script_id`` on creation (see :func:`get_script`).
    """

    def __init__(
        self,
        replies: Mapping[str, Iterable[Reply]] | Iterable[Reply] | None = None,
        *,
        script_id: str | None = None,
        fallback: Reply | None = None,
    ) -> None:
        self.id = script_id or f"script-{next(_SCRIPT_IDS)}"
        self.fallback = fallback
        self.calls: list[ScriptedCall] = []
        self._queues: dict[str, deque[Reply]] = {}
        self._lock = threading.Lock()
        self._call_ids = itertools.count(1)
        if isinstance(replies, Mapping):
            for name, items in replies.items():
                self.add(name, *items)
        elif replies is not None:
            self.add(ANY_AGENT, *replies)
        with _REGISTRY_LOCK:
            _REGISTRY[self.id] = self

    def add(self, agent_name: str, *replies: Reply) -> Script:
        """Append replies to ``agent_name``'s queue (``"*"``: shared). Returns self to chain."""
        with self._lock:
            self._queues.setdefault(agent_name, deque()).extend(replies)
        return self

    def remaining(self, agent_name: str | None = None) -> int:
        """Replies left for one agent's own queue, or in all queues when ``agent_name`` is None."""
        with self._lock:
            if agent_name is not None:
                return len(self._queues.get(agent_name, ()))
            return sum(len(q) for q in self._queues.values())

    def usage(self, agent_name: str | None = None) -> dict[str, Any]:
        """Totals of the calls served so far (optionally for one agent)."""
        with self._lock:
            calls = [c for c in self.calls if agent_name is None or c.agent_name == agent_name]
        prompt = sum(c.prompt_tokens for c in calls)
        completion = sum(c.completion_tokens for c in calls)
        return {
            "calls": len(calls),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cost": sum(c.cost for c in calls),
        }

    def unregister(self) -> None:
        """Drop the script from the registry (configs naming it stop resolving)."""
        with _REGISTRY_LOCK:
            if _REGISTRY.get(self.id) is self:
                del _REGISTRY[self.id]

    def next_reply(self, agent_name: str, messages: list[dict[str, Any]]) -> str | tuple[ToolCall, ...]:
        """Pop and resolve the next reply for ``agent_name``: text, or a tuple of tool calls."""
        with self._lock:
            queue = self._queues.get(agent_name)
            if not queue:
                queue = self._queues.get(ANY_AGENT)
            if queue:
                reply: Reply | None = queue.popleft()
            elif self.fallback is not None:
                reply = self.fallback
            else:
                raise ScriptExhaustedError(
                    f"script {self.id!r} has no reply left for agent {agent_name!r} "
                    f"(queues: {sorted(self._queues)}); add replies or set fallback="
                )
        if callable(reply) and not isinstance(reply, ToolCall):
            reply = reply(messages)  # outside the lock: it may be slow or consult other state
        return self._normalise(reply)

    def _normalise(self, reply: Any) -> str | tuple[ToolCall, ...]:
        if isinstance(reply, str):
            return reply
        if isinstance(reply, ToolCall):
            calls: tuple[ToolCall, ...] = (reply,)
        elif isinstance(reply, Sequence) and reply and all(isinstance(c, ToolCall) for c in reply):
            calls = tuple(reply)
        else:
            raise TypeError(f"a scripted reply must be str, ToolCall or a list of ToolCall, not {reply!r}")
        return tuple(c if c.id else ToolCall(c.name, c.arguments, f"call_{self.id}_{next(self._call_ids)}")
                     for c in calls)

    def _record(self, call: ScriptedCall) -> None:
        with self._lock:
            self.calls.append(call)

    def __repr__(self) -> str:
        return f"Script(id={self.id!r}, remaining={self.remaining()}, calls={len(self.calls)})"


def get_script(script_id: str) -> Script:
    """The registered :class:`Script` with this id (KeyError with a hint when unknown)."""
    with _REGISTRY_LOCK:
        script = _REGISTRY.get(script_id)
    if script is None:
        raise KeyError(f"no scripted-client Script registered with id {script_id!r}")
    return script


def count_tokens(content: Any) -> int:
    """Deterministic token count: whitespace-separated words of text (text parts of lists)."""
    if content is None:
        return 0
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, str):
                total += len(part.split())
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                total += len(part["text"].split())
        return total
    return len(str(content).split())

