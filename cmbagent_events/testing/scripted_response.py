"""The scripted client's responses, shaped like OpenAI's ``ChatCompletion`` (what AG2 reads off them).

Plain (non-slots) dataclasses: AG2's runtime logging serialises responses through vars().
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .script import ANY_AGENT


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

