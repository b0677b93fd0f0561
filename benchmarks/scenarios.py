"""The AG2 runs the overhead benchmark times: real agents, the shared scripted model client.

Each scenario's ``build()`` makes fresh agents and script (not timed) and returns a :class:`Chat`:
the coroutine factory that runs the conversation (timed) and the agents and group chat, so a
peer that instruments agent by agent (AG2's OpenTelemetry) can do so. All run through AG2's async
API, as an async user of ``capture_run`` would.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from autogen import ConversableAgent, GroupChat, GroupChatManager
from autogen.coding import LocalCommandLineCodeExecutor
from autogen.io.base import IOStream

from cmbagent_events.testing.script import Script
from cmbagent_events.testing.scripted_client import register_scripted_client, scripted_llm_config

logging.getLogger("autogen.oai.client").setLevel(logging.WARNING)

LATENCIES_MS = (0, 5, 30, 300)  # the model-latency sweep (overhead vs. latency chart)


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


def TERM(m: dict) -> bool:
    return "TERMINATE" in (m.get("content") or "")


@dataclass
class Chat:
    """One built conversation: ``run()`` plays it; ``agents`` / ``groupchat`` for instrumenting peers."""

    run: Callable[[], Awaitable[Any]]
    agents: list[Any]
    groupchat: Any = None


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    build: Callable[[], Chat]
    repetitions: tuple[int, int]  # (quick, full)
    # extra capture modes: suffix -> environment for CaptureConfig.from_env (e.g. broadcast folding)
    variants: dict[str, dict[str, str]] = field(default_factory=dict)
    warmups: int = 2
    skip_peers: tuple[str, ...] = ()  # peers too slow to run here (the reason is in the description)


def _group_chat(n_agents: int, rounds: int, latency: float) -> Chat:
    script = Script(fallback="Noted; the next agent should continue the analysis.")
    cfg = scripted_llm_config(script, latency=latency)
    names = ("planner", "engineer", "researcher", "critic") if n_agents == 4 else [f"agent_{i:02d}"
                                                                                   for i in range(n_agents)]
    agents = [ConversableAgent(name, llm_config=cfg, human_input_mode="NEVER", description=name) for name in names]
    register_scripted_client(*agents)
    chat = GroupChat(agents, messages=[], max_round=rounds, speaker_selection_method="round_robin")
    manager = GroupChatManager(chat, llm_config=False)
    return Chat(lambda: agents[0].a_initiate_chat(manager, message="Estimate the CMB power spectrum.", silent=True),
                [*agents, manager], chat)


CODE_BLOCK = """```python
import math
from pathlib import Path
ells = range(2, 200)
cls = [1e3 / (l * (l + 1)) * math.exp(-l / 150) for l in ells]
Path("spectrum_{i}.csv").write_text("\\n".join(f"{{l}},{{c:.6e}}" for l, c in zip(ells, cls)))
print("wrote", len(cls), "multipoles")
```"""


def _code_chat(blocks: int) -> Chat:
    work = tempfile.mkdtemp(prefix="cmbagent-bench-")
    replies: list[Any] = [CODE_BLOCK.format(i=i) for i in range(blocks)] + ["All spectra written. TERMINATE"]
    script = Script({"engineer": replies})
    engineer = ConversableAgent("engineer", llm_config=scripted_llm_config(script), human_input_mode="NEVER")
    executor = ConversableAgent("executor", llm_config=False, human_input_mode="NEVER", is_termination_msg=TERM,
                                code_execution_config={"executor": LocalCommandLineCodeExecutor(work_dir=work)})
    register_scripted_client(engineer)
    return Chat(lambda: executor.a_initiate_chat(engineer, message="Compute and save the spectra.",
                                                 max_turns=blocks + 1, silent=True), [engineer, executor])


BROADCASTS = {"each": {"CMBAGENT_CAPTURE_BROADCASTS": "each"}}  # the default folds (when supported)
# model calls without their request and response: what storing them whole costs, in the same run
NO_LLM_MESSAGES = {"nollm": {"CMBAGENT_CAPTURE_LLM_MESSAGES": "false"}}
# the writer in a process of its own (run/writer_process.py): the rows written on the other core
PROCESS_WRITER = {"proc": {"CMBAGENT_EVENT_WRITER": "process"}}
# ... and both: what storing model calls whole costs with the writer process
PROCESS_NO_LLM = {"proc-nollm": {**PROCESS_WRITER["proc"], **NO_LLM_MESSAGES["nollm"]}}


def scenarios(quick: bool) -> list[Scenario]:
    rounds = 40 if quick else 60
    return [
        Scenario("framework", f"group chat, 4 agents, {rounds} rounds, zero-latency model, no code: the worst case",
                 lambda: _group_chat(4, rounds, 0.0), (7, 31),
                 variants={**NO_LLM_MESSAGES, **PROCESS_WRITER, **PROCESS_NO_LLM}),
        Scenario("code_exec", "engineer + executor running 4 python blocks (LocalCommandLineCodeExecutor)",
                 # subprocess start-up makes single runs vary by ~+-5%
                 lambda: _code_chat(blocks=4), (3, 21), variants=PROCESS_WRITER),
        Scenario("model_latency", "group chat, 4 agents, 30 ms simulated model latency per call",
                 lambda: _group_chat(4, 12 if quick else 20, 0.030), (3, 7), variants=PROCESS_WRITER),
        Scenario("groupchat45", "group chat, 45 agents (CMBAgent's size), 90 rounds, zero-latency model; "
                 "manager relays folded (default) and each stored (/each); AG2 runtime_logging not run "
                 "(~190x slower here: ~50 s a trial)",
                 lambda: _group_chat(45, 45 if quick else 90, 0.0), (2, 11), variants={**BROADCASTS, **PROCESS_WRITER},
                 warmups=1, skip_peers=("peer",)),
    ]


def latency_sweep(quick: bool) -> list[Scenario]:
    """The same 4-agent group chat at each model latency in LATENCIES_MS (overhead vs. latency)."""
    rounds = 8 if quick else 12
    latencies = (5,) if quick else LATENCIES_MS
    return [Scenario(f"latency_{ms}ms", f"group chat, 4 agents, {rounds} rounds, {ms} ms per model call",
                     lambda ms=ms: _group_chat(4, rounds, ms / 1000.0),
                     (2, 15 if ms <= 5 else 7 if ms <= 30 else 5), warmups=1)
            for ms in latencies]
