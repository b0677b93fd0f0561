"""An offline, scripted AG2 model client (classic AG2: ag2 0.10.3 .. 0.14, autogen 0.14, the cmbagent fork).

Why: the demo, the tests and the benchmarks must drive *real* AG2 code (ConversableAgent,
GroupChat, tool and code execution, group patterns) without a network or an API key, and with
replies, token counts and latency that are exactly reproducible.

How it plugs in: AG2's documented custom-client route. An llm_config entry names the class::

    {"model": "scripted", "model_client_cls": "ScriptedModelClient", "script_id": "..."}

``OpenAIWrapper`` then holds a placeholder until ``agent.register_model_client(ScriptedModelClient)``
swaps in an instance; :func:`register_scripted_client` does that for you.

CMBAgent's fork of AG2 (``cmbagent-autogen``, ag2 0.9.1-based) names the key ``mod_client_cls``
(config key, ``register_model_client`` parameter, GroupChat's ``select_speaker_auto_mod_client_cls``)
and forbids unknown config keys: there the script settings travel in the entry's ``tags``. The
helpers here pick the names of the AG2 that is installed.

A :class:`Script` holds the replies, one queue per agent name plus a shared ``"*"`` queue.
A reply is plain text, a :class:`ToolCall` (or a list of them: parallel tool calls), or a
callable ``(messages) -> reply`` evaluated when the call happens. Scripts live in a
module-level registry and configs carry only the script id (a string), so AG2's copies of
llm_config never fork a script's state.

Token counts are deterministic: prompt tokens are the whitespace-separated words of every
message ``content`` sent to the model (text parts of multimodal content included; tool schemas
and tool-call arguments in the history are not counted); completion tokens are the words of the
reply text, or, for tool calls, of each call's name plus its JSON arguments. Cost is
``(prompt * price[0] + completion * price[1]) / 1000`` with ``price`` from the config entry
(default 0), the same formula AG2 applies itself when an entry has a ``price``.

Gotchas (AG2 behaviour, not ours):

* Registering a tool (``register_for_llm``, ``register_function``, group handoffs) rebuilds
  ``agent.client`` from llm_config, dropping the registered client. Register tools first, or use
  :func:`register_scripted_client`, which also installs a hook that re-registers the client
  before each reply when it was rebuilt.
* ``GroupChat`` "auto" speaker selection runs an inner ``speaker_selection_agent``; AG2 only
  registers a custom client there when the GroupChat gets ``select_speaker_auto_llm_config``
  and ``select_speaker_auto_model_client_cls``: use :func:`scripted_speaker_selection` (or
  :func:`apply_scripted_speaker_selection` on a manager built elsewhere, e.g. by ``AutoPattern``).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "SCRIPTED_MODEL",
    "Script",
    "ScriptExhaustedError",
    "ScriptedCall",
    "ScriptedModelClient",
    "ScriptedResponse",
    "ToolCall",
    "apply_scripted_speaker_selection",
    "count_tokens",
    "get_script",
    "register_scripted_client",
    "scripted_llm_config",
    "scripted_speaker_selection",
]

SCRIPTED_MODEL = "scripted"
ANY_AGENT = "*"
SETTINGS_TAG = "cmbagent-events-scripted:"  # tag prefix carrying the settings where extra keys are forbidden


@functools.cache
def client_key() -> str:
    """The llm_config key naming a custom model client: ``model_client_cls`` (ag2 0.10+),
    ``mod_client_cls`` (the cmbagent fork). Read off ``OpenAIWrapper.register_model_client``."""
    from autogen import OpenAIWrapper

    return "mod_client_cls" if "mod_client_cls" in inspect.signature(OpenAIWrapper.register_model_client).parameters \
        else "model_client_cls"


# --------------------------------------------------------------------------- replies and scripts


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


# --------------------------------------------------------------------------- OpenAI-shaped response
# Plain (non-slots) dataclasses: AG2's runtime logging serialises responses through vars().


@dataclass
class ScriptedFunction:
    name: str
    arguments: str

    def model_dump(self, **_: Any) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}


@dataclass
class ScriptedToolCall:
    id: str
    function: ScriptedFunction
    type: str = "function"

    def model_dump(self, **_: Any) -> dict[str, Any]:
        return {"id": self.id, "function": self.function.model_dump(), "type": self.type}


@dataclass
class ScriptedMessage:
    content: str | None
    role: str = "assistant"
    tool_calls: list[ScriptedToolCall] | None = None
    function_call: None = None

    def model_dump(self, **_: Any) -> dict[str, Any]:
        return {
            "content": self.content,
            "role": self.role,
            "function_call": None,
            "tool_calls": [t.model_dump() for t in self.tool_calls] if self.tool_calls else None,
        }


@dataclass
class ScriptedChoice:
    index: int
    message: ScriptedMessage
    finish_reason: str = "stop"
    logprobs: None = None


@dataclass
class ScriptedUsage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass
class ScriptedResponse:
    """Shaped like ``openai.types.chat.ChatCompletion`` (+ ``cost``, which AG2 sets anyway)."""

    id: str
    model: str
    choices: list[ScriptedChoice]
    usage: ScriptedUsage
    created: int
    object: str = "chat.completion"
    cost: float = 0.0
    agent_name: str = ANY_AGENT

    def model_dump(self, **_: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "object": self.object,
            "created": self.created,
            "choices": [
                {"index": c.index, "finish_reason": c.finish_reason, "message": c.message.model_dump()}
                for c in self.choices
            ],
            "usage": vars(self.usage).copy(),
            "cost": self.cost,
        }


# --------------------------------------------------------------------------- the client


class ScriptedModelClient:
    """AG2 ``ModelClient`` serving replies from a :class:`Script`.

    Built by ``OpenAIWrapper.register_model_client`` as ``ScriptedModelClient(config, **kwargs)``.
    Config keys read: ``script_id`` (required), ``agent_name`` (queue to read; a kwarg wins),
    ``latency`` (seconds slept per call), ``price`` ([per-1k prompt, per-1k completion]),
    ``model``.
    """

    RESPONSE_USAGE_KEYS: ClassVar[list[str]] = ["prompt_tokens", "completion_tokens", "total_tokens", "cost", "model"]

    _response_ids = itertools.count(1)

    def __init__(
        self,
        config: Mapping[str, Any],
        agent_name: str | None = None,
        script: Script | None = None,
        **_: Any,
    ) -> None:
        self.config = dict(config)
        for tag in self.config.get("tags") or ():
            if isinstance(tag, str) and tag.startswith(SETTINGS_TAG):
                self.config.update(json.loads(tag[len(SETTINGS_TAG):]))
        self.script = script if script is not None else get_script(str(self.config["script_id"]))
        self.agent_name = agent_name or self.config.get("agent_name") or ANY_AGENT
        self.model = str(self.config.get("model") or SCRIPTED_MODEL)
        self.latency = float(self.config.get("latency") or 0.0)
        price = self.config.get("price") or (0.0, 0.0)
        self.price: tuple[float, float] = (float(price[0]), float(price[1]))

    def create(self, params: dict[str, Any]) -> ScriptedResponse:
        messages: list[dict[str, Any]] = list(params.get("messages") or [])
        if not messages and params.get("prompt") is not None:
            messages = [{"role": "user", "content": params["prompt"]}]
        if self.latency > 0:
            time.sleep(self.latency)
        reply = self.script.next_reply(self.agent_name, messages)

        prompt_tokens = sum(count_tokens(m.get("content")) for m in messages if isinstance(m, Mapping))
        if isinstance(reply, str):
            message = ScriptedMessage(content=reply)
            completion_tokens = count_tokens(reply)
            finish_reason = "stop"
        else:
            tool_calls = [ScriptedToolCall(c.id or "", ScriptedFunction(c.name, c.arguments_json())) for c in reply]
            message = ScriptedMessage(content=None, tool_calls=tool_calls)
            completion_tokens = sum(count_tokens(t.function.name) + count_tokens(t.function.arguments)
                                    for t in tool_calls)
            finish_reason = "tool_calls"
        cost = (prompt_tokens * self.price[0] + completion_tokens * self.price[1]) / 1000
        self.script._record(ScriptedCall(self.agent_name, prompt_tokens, completion_tokens, cost, reply))
        return ScriptedResponse(
            id=f"scripted-{next(self._response_ids)}",
            model=self.model,
            choices=[ScriptedChoice(index=0, message=message, finish_reason=finish_reason)],
            usage=ScriptedUsage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens),
            created=int(time.time()),
            cost=cost,
            agent_name=self.agent_name,
        )

    def message_retrieval(self, response: ScriptedResponse) -> list[str] | list[ScriptedMessage]:
        """Text for plain replies; the message object (with ``tool_calls``) for tool calls."""
        return [c.message if c.message.tool_calls else (c.message.content or "") for c in response.choices]  # type: ignore[return-value]

    def cost(self, response: ScriptedResponse) -> float:
        return response.cost

    @staticmethod
    def get_usage(response: ScriptedResponse) -> dict[str, Any]:
        return {
            "prompt_tokens": response.usage.prompt_tokens,
            "completion_tokens": response.usage.completion_tokens,
            "total_tokens": response.usage.total_tokens,
            "cost": response.cost,
            "model": response.model,
        }


# --------------------------------------------------------------------------- helpers


def scripted_llm_config(
    script: Script | str,
    latency: float = 0.0,
    *,
    agent_name: str | None = None,
    price: tuple[float, float] | None = None,
    model: str = SCRIPTED_MODEL,
) -> dict[str, Any]:
    """The ``llm_config`` for a scripted agent: one flat entry naming :class:`ScriptedModelClient`.

    Flat on purpose: ag2 0.14 ``LLMConfig.ensure_config`` pops ``config_list`` out of the dict it
    is given, so a ``{"config_list": [...]}`` dict cannot be shared by several agents.
    ``agent_name`` selects the script queue when no name is passed at registration (AG2's own
    internal agents, e.g. the auto speaker selector).
    """
    settings: dict[str, Any] = {"script_id": script.id if isinstance(script, Script) else str(script)}
    if latency:
        settings["latency"] = float(latency)
    if agent_name:
        settings["agent_name"] = agent_name
    if price is not None:
        settings["price"] = [float(price[0]), float(price[1])]
    key = client_key()
    entry: dict[str, Any] = {"model": model, key: ScriptedModelClient.__name__}
    if key == "model_client_cls":
        entry.update(settings)
    else:  # the fork's config entries forbid unknown keys
        entry["tags"] = [SETTINGS_TAG + json.dumps(settings)]
    return entry


def scripted_speaker_selection(
    script: Script | str, *, agent_name: str = "speaker_selection_agent", latency: float = 0.0
) -> dict[str, Any]:
    """Keyword arguments for ``GroupChat(...)`` so "auto" speaker selection is scripted too.

    AG2 runs auto selection as an inner chat with a fresh ``speaker_selection_agent`` and only
    registers a custom client on it when both of these GroupChat arguments are given. Script its
    replies under ``agent_name`` (each reply should name exactly one agent).
    """
    return {
        "select_speaker_auto_llm_config": scripted_llm_config(script, latency, agent_name=agent_name),
        f"select_speaker_auto_{client_key()}": ScriptedModelClient,
    }


def apply_scripted_speaker_selection(
    manager_or_groupchat: Any, script: Script | str, *, agent_name: str = "speaker_selection_agent"
) -> None:
    """Script "auto" speaker selection of an existing GroupChat / GroupChatManager.

    For group chats you do not construct yourself (``AutoPattern`` builds its own; override
    ``prepare_group_chat`` and call this on the returned manager). ``GroupChatManager`` runs
    ``run_chat`` / ``a_run_chat`` with a *shallow copy* of its GroupChat (``register_reply``
    copies ``config``), so the copies in its reply list are updated too.
    """
    values = scripted_speaker_selection(script, agent_name=agent_name)
    targets = [manager_or_groupchat]
    groupchat = getattr(manager_or_groupchat, "groupchat", None)
    if groupchat is not None:
        targets.append(groupchat)
        for entry in getattr(manager_or_groupchat, "_reply_func_list", ()):
            for key in ("config", "init_config"):
                if type(entry.get(key)) is type(groupchat):
                    targets.append(entry[key])
    for target in targets:
        if hasattr(target, "select_speaker_auto_llm_config"):
            for key, value in values.items():
                setattr(target, key, value)


def _pending_scripted_entry(agent: Any) -> bool:
    client = getattr(agent, "client", None)
    for inner in getattr(client, "_clients", ()):
        if type(inner).__name__ == "PlaceHolderClient" and (
            getattr(inner, "config", {}).get(client_key()) == ScriptedModelClient.__name__
        ):
            return True
    return False


def _has_scripted_entry(agent: Any) -> bool:
    if _pending_scripted_entry(agent):
        return True
    client = getattr(agent, "client", None)
    return any(isinstance(inner, ScriptedModelClient) for inner in getattr(client, "_clients", ()))


def register_scripted_client(*agents: Any, keep_registered: bool = True) -> list[Any]:
    """Register :class:`ScriptedModelClient` on every agent whose llm_config names it.

    Each client reads the script queue named after its agent (``agent.name``) unless the entry
    sets ``agent_name``. With ``keep_registered`` (default) a ``process_all_messages_before_reply``
    hook re-registers the client whenever AG2 rebuilt ``agent.client`` (tool registration, group
    handoff functions refreshed before every reply); it runs after the ``update_agent_state``
    hooks that do the rebuilding and returns the messages unchanged. Agents without a scripted
    entry are skipped. Returns the agents that were registered.
    """
    done: list[Any] = []
    for agent in agents:
        if not _has_scripted_entry(agent):
            continue
        _ensure_registered(agent)
        if keep_registered and not getattr(agent, "_scripted_client_hook", False):
            agent.register_hook("process_all_messages_before_reply", _make_keepalive_hook(agent))
            agent._scripted_client_hook = True
        done.append(agent)
    return done


def _ensure_registered(agent: Any) -> None:
    client = getattr(agent, "client", None)
    for _ in range(len(getattr(client, "_clients", ()))):  # one placeholder per scripted entry
        if not _pending_scripted_entry(agent):
            return
        # positional: the parameter is named differently in the fork
        agent.register_model_client(ScriptedModelClient, agent_name=agent.name)


def _make_keepalive_hook(agent: Any) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    def scripted_client_keepalive(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        _ensure_registered(agent)
        return messages

    return scripted_client_keepalive
