"""How AG2 1.x objects are stored: a turn's request, tool results, model responses, configs."""

from __future__ import annotations

import json
from typing import Any


def text_of(event: Any) -> Any:
    """What a turn was asked: the request's text parts, or a short description of other triggers."""
    parts = getattr(event, "parts", None)
    if parts is not None:
        texts = [c if isinstance(c := getattr(p, "content", None), str) else None for p in parts]
        if all(t is not None for t in texts):
            return "\n".join(t for t in texts if t is not None)
        return [t if t is not None else type(p).__name__ for t, p in zip(texts, parts)]  # images, files...
    results = getattr(event, "results", None)
    if results is not None:  # a ToolResultsEvent (resume from a trajectory)
        return {"tool_results": [result_value(getattr(r, "result", None)) for r in results]}
    return type(event).__name__


def _part_value(part: Any) -> Any:
    for attr in ("content", "data", "url"):
        if hasattr(part, attr):
            return getattr(part, attr)
    return repr(part)


def result_value(result: Any) -> Any:
    """A ToolResult's value: the one part's text/data, or the list of them."""
    parts = getattr(result, "parts", None)
    if parts is None:
        return result
    values = [_part_value(p) for p in parts]
    return values[0] if len(values) == 1 else values


def response_value(response: Any) -> Any:
    """A ModelResponse as stored: its text, or the tool calls it asks for."""
    content = getattr(response, "content", None)
    calls = getattr(getattr(response, "tool_calls", None), "calls", None)
    if calls:
        listed = [{"name": c.name, "arguments": c.arguments} for c in calls]
        return {"content": content, "tool_calls": listed} if content else {"tool_calls": listed}
    return content


def tool_arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw  # stored as the raw string the model produced
    return raw


def tokens(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


def config_summary(config: Any) -> dict[str, Any]:
    """A model config as stored: class, provider and model (scripted configs raise on the last two)."""
    summary: dict[str, Any] = {"class": type(config).__name__}
    for attr in ("provider", "model"):
        try:
            value = getattr(config, attr)
        except (NotImplementedError, AttributeError):  # ag2.testing.TestConfig has neither
            continue
        summary[attr] = value if isinstance(value, str) else str(value)
    return summary


class SentMessages:
    """The history an ``on_llm_call`` sent, as OpenAI-style chat messages, made by the writer
    (``model_dump``), not on the caller's loop: the system prompt first, then AG2's own rendering of
    its events (its telemetry's, the one its OpenTelemetry spans carry). AG2's events are immutable;
    the list is copied here."""

    __slots__ = ("events", "prompt")

    def __init__(self, events: Any, prompt: Any) -> None:
        self.events = tuple(events)
        self.prompt = tuple(prompt) if isinstance(prompt, (list, tuple)) else ()

    def model_dump(self) -> list[dict[str, Any]]:
        from ag2.middleware.builtin import telemetry

        system = [{"role": "system", "content": text} for text in self.prompt if isinstance(text, str)]
        return system + telemetry._build_input_messages(self.events, None)


class ChatCompletionOf:
    """A ModelResponse as an OpenAI ``ChatCompletion``'s JSON (``model_dump``, by the writer)."""

    __slots__ = ("response",)

    def __init__(self, response: Any) -> None:
        self.response = response

    def model_dump(self) -> dict[str, Any]:
        from ag2.middleware.builtin import telemetry

        response = self.response
        usage = response.usage
        return {
            "id": response.response_id, "object": "chat.completion", "model": response.model,
            "provider": response.provider,
            "choices": [{"index": 0, "message": telemetry._response_message(response),
                         "finish_reason": response.finish_reason}],
            "usage": {"prompt_tokens": tokens(usage.prompt_tokens),
                      "completion_tokens": tokens(usage.completion_tokens), "total_tokens": tokens(usage.total_tokens)},
        }


def model_response(data: Any) -> Any:
    """A recorded response (a ChatCompletion's JSON, as :class:`ChatCompletionOf` stores it) as the
    ModelResponse AG2 1.x's client returned: message, tool calls, usage, model, finish reason."""
    from ag2.events import ModelMessage, ModelResponse, ToolCallEvent, ToolCallsEvent
    from ag2.events.types import Usage

    data = data if isinstance(data, dict) else {}
    choices = data.get("choices") or [{}]
    choice: dict[str, Any] = choices[0] if isinstance(choices, list) and isinstance(choices[0], dict) else {}
    message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    calls = [ToolCallEvent(c["function"]["name"], id=c.get("id") or "",
                           arguments=c["function"].get("arguments") or "{}")
             for c in message.get("tool_calls") or [] if isinstance(c, dict) and isinstance(c.get("function"), dict)]
    usage: dict[str, Any] = data["usage"] if isinstance(data.get("usage"), dict) else {}
    content = message.get("content")
    return ModelResponse(ModelMessage(content) if isinstance(content, str) else None, tool_calls=ToolCallsEvent(calls),
                         usage=Usage(prompt_tokens=usage.get("prompt_tokens"),
                                     completion_tokens=usage.get("completion_tokens"),
                                     total_tokens=usage.get("total_tokens")),
                         model=data.get("model"), provider=data.get("provider"),
                         finish_reason=choice.get("finish_reason"), response_id=data.get("id"))
