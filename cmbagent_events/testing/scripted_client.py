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

A :class:`Script` (``script.py``) holds the replies, one queue per agent name plus a shared ``"*"``
queue; configs carry only its id. Responses are shaped like OpenAI's (``scripted_response.py``).

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

import copy
import functools
import inspect
import itertools
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from .script import (
    ANY_AGENT,
    Script,
    ScriptedCall,
    count_tokens,
    get_script,
)
from .scripted_response import (
    ScriptedChoice,
    ScriptedFunction,
    ScriptedMessage,
    ScriptedResponse,
    ScriptedToolCall,
    ScriptedUsage,
)

__all__ = [
    "SCRIPTED_MODEL",
    "ScriptedModelClient",
    "apply_scripted_speaker_selection",
    "register_scripted_client",
    "scripted_llm_config",
    "scripted_speaker_selection",
]

SCRIPTED_MODEL = "scripted"
SETTINGS_TAG = "cmbagent-events-scripted:"  # tag prefix carrying the settings where extra keys are forbidden


@functools.cache
def client_key() -> str:
    """The llm_config key naming a custom model client: ``model_client_cls`` (ag2 0.10+),
    ``mod_client_cls`` (the cmbagent fork). Read off ``OpenAIWrapper.register_model_client``."""
    from autogen import OpenAIWrapper

    return "mod_client_cls" if "mod_client_cls" in inspect.signature(OpenAIWrapper.register_model_client).parameters \
        else "model_client_cls"



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
        self.script._record(ScriptedCall(self.agent_name, prompt_tokens, completion_tokens, cost, reply,
                                         copy.deepcopy(params)))
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
