"""A real classic AG2 conversation around one tool call, scripted (no model, no network), for tests.

Needs classic AG2 (``import autogen``); it is imported when the pair is built.
"""

from __future__ import annotations

from typing import Any

from .script import Script, ToolCall
from .scripted_client import register_scripted_client, scripted_llm_config


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def adding_pair(a: int, b: int) -> tuple[Any, Any]:
    """``(user, assistant)``: the assistant's scripted model asks for ``add(a, b)``, the user runs it, the
    assistant answers ``The sum is <a+b>. TERMINATE`` and the user stops there. Start it with
    ``user.initiate_chat(assistant, message=..., max_turns=3)``: four turns, two model calls, one tool call."""
    from autogen import AssistantAgent, UserProxyAgent, register_function

    script = Script({"assistant": [ToolCall("add", {"a": a, "b": b}), f"The sum is {a + b}. TERMINATE"]})
    assistant = AssistantAgent("assistant", llm_config=scripted_llm_config(script))
    user = UserProxyAgent("user", human_input_mode="NEVER", code_execution_config=False,
                          is_termination_msg=lambda m: "TERMINATE" in (m.get("content") or ""))
    register_function(add, caller=assistant, executor=user, description="Add two integers.")
    register_scripted_client(assistant)
    return user, assistant
