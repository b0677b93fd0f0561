"""The AG2 runs the overhead benchmark times: real agents, the shared scripted model client.

Each scenario's ``build()`` makes fresh agents and script (not timed) and returns the coroutine
factory that runs the conversation (timed). All run through AG2's async API, as an async user of
``capture_run`` would.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from autogen import ConversableAgent, GroupChat, GroupChatManager
from autogen.coding import LocalCommandLineCodeExecutor
from autogen.io.base import IOStream

from cmbagent_events.testing.scripted_client import Script, register_scripted_client, scripted_llm_config

logging.getLogger("autogen.oai.client").setLevel(logging.WARNING)


class NullIO:
    """An IOStream that discards AG2's console output (printing would dominate the timings)."""

    def print(self, *args: Any, **kwargs: Any) -> None:
        pass

    def send(self, *args: Any, **kwargs: Any) -> None:
        pass

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        return ""


def silence_ag2() -> None:
    IOStream.set_global_default(NullIO())


def TERM(m: dict) -> bool:  # noqa: N802 - AG2 style predicate
    return "TERMINATE" in (m.get("content") or "")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    build: Callable[[], Callable[[], Awaitable[Any]]]


def _group_chat(rounds: int, latency: float) -> Callable[[], Awaitable[Any]]:
    script = Script(fallback="Noted; the next agent should continue the analysis.")
    cfg = scripted_llm_config(script, latency=latency)
    agents = [ConversableAgent(name, llm_config=cfg, human_input_mode="NEVER", description=name)
              for name in ("planner", "engineer", "researcher", "critic")]
    register_scripted_client(*agents)
    chat = GroupChat(agents, messages=[], max_round=rounds, speaker_selection_method="round_robin")
    manager = GroupChatManager(chat, llm_config=False)
    return lambda: agents[0].a_initiate_chat(manager, message="Estimate the CMB power spectrum.", silent=True)


CODE_BLOCK = """```python
import math
from pathlib import Path
ells = range(2, 200)
cls = [1e3 / (l * (l + 1)) * math.exp(-l / 150) for l in ells]
Path("spectrum_{i}.csv").write_text("\\n".join(f"{{l}},{{c:.6e}}" for l, c in zip(ells, cls)))
print("wrote", len(cls), "multipoles")
```"""


def _code_chat(blocks: int) -> Callable[[], Awaitable[Any]]:
    work = tempfile.mkdtemp(prefix="cmbagent-bench-")
    replies: list[Any] = [CODE_BLOCK.format(i=i) for i in range(blocks)] + ["All spectra written. TERMINATE"]
    script = Script({"engineer": replies})
    engineer = ConversableAgent("engineer", llm_config=scripted_llm_config(script), human_input_mode="NEVER")
    executor = ConversableAgent("executor", llm_config=False, human_input_mode="NEVER", is_termination_msg=TERM,
                                code_execution_config={"executor": LocalCommandLineCodeExecutor(work_dir=work)})
    register_scripted_client(engineer)
    return lambda: executor.a_initiate_chat(engineer, message="Compute and save the spectra.",
                                            max_turns=blocks + 1, silent=True)


def scenarios(quick: bool) -> list[Scenario]:
    return [
        Scenario("framework", "group chat, 4 agents, zero-latency model, no code: the worst case",
                 lambda: _group_chat(rounds=40 if quick else 60, latency=0.0)),
        Scenario("code_exec", "engineer + executor running 4 python blocks (LocalCommandLineCodeExecutor)",
                 lambda: _code_chat(blocks=4)),
        Scenario("model_latency", "group chat, 4 agents, 30 ms simulated model latency per call",
                 lambda: _group_chat(rounds=12 if quick else 20, latency=0.030)),
    ]
