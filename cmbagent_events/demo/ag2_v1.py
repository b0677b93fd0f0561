"""The demo on AG2 1.x (``import ag2``): a three-agent hub workflow, captured like the classic one.

A lead opens a workflow channel on an in-process ``ag2.network.Hub`` and posts the task. The
planner answers and hands off to the engineer with a routing tool (an ``ag2.network.Handoff`` with
its reason); the engineer calls ``get_planck_parameters`` and runs Python code through AG2's
``SandboxCodeTool`` in a local sandbox (the code writes ``cmb_tt_spectrum.csv``); the channel's
graph then passes the turn to the reviewer, whose answer closes the channel.

Every model reply comes from ``ag2.testing.TestConfig`` (AG2 1.x's scripted model): this demo is
offline only. Everything else is AG2 1.x's own code: agents, tools, the code tool, the hub.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from ..capture import EventCaptureManager
from ..config import CaptureConfig
from ..errors import ConfigError, DatabaseURLError
from ..run import capture_run
from .models import PLANCK_2018, SPECTRUM_FILE, get_planck_parameters, spectrum_code
from .report import Outcome

TASK = "Compute a toy CMB TT power spectrum for the Planck 2018 base-LCDM parameters and save it as CSV."
CLOSE_TIMEOUT_S = 60.0


def _code_of(fenced: str) -> str:
    """The Python inside the classic demo's fenced code block."""
    return fenced.removeprefix("```python\n").removesuffix("```")


async def _workflow(work_dir: Path, progress: list[str]) -> None:
    from ag2 import Agent
    from ag2.events import ToolCallEvent
    from ag2.knowledge import MemoryKnowledgeStore
    from ag2.network import (
        EV_CHANNEL_CLOSED,
        WORKFLOW_TYPE,
        AgentTarget,
        FromSpeaker,
        Handoff,
        Hub,
        TerminateTarget,
        Transition,
        TransitionGraph,
    )
    from ag2.testing import TestConfig
    from ag2.tools import LocalEnvironment, SandboxCodeTool

    def assign_engineer(reason: str) -> Handoff:
        """Hand the task to the engineer, saying why."""
        return Handoff(target="engineer", reason=reason)

    code = _code_of(spectrum_code(PLANCK_2018))
    planner = Agent("planner", "You plan the work and assign it.", tools=[assign_engineer], config=TestConfig(
        ToolCallEvent(name="assign_engineer", arguments=json.dumps({"reason": "needs code that writes the CSV"})),
        "Plan: fetch the Planck 2018 parameters, compute the toy spectrum, save it. Engineer, please."))
    engineer = Agent(
        "engineer", "You write and run Python.",
        tools=[get_planck_parameters, SandboxCodeTool(LocalEnvironment(work_dir), languages=("python",))],
        config=TestConfig(
            ToolCallEvent(name="get_planck_parameters", arguments=json.dumps({"release": "2018"})),
            ToolCallEvent(name="run_code", arguments=json.dumps({"code": code, "language": "python"})),
            f"Done: the spectrum is in {SPECTRUM_FILE}."))
    reviewer = Agent("reviewer", "You check the result.", config=TestConfig(
        f"Reviewed {SPECTRUM_FILE}: 2499 multipoles, first peak near ell=220. Approved."))

    hub = await Hub.open(MemoryKnowledgeStore(), ttl_sweep_interval=0, expectation_sweep_interval=0)
    try:
        lead = await hub.register(Agent("lead", config=TestConfig()))
        clients = {a.name: await hub.register(a) for a in (planner, engineer, reviewer)}
        ids = {name: c.agent_id for name, c in clients.items()}
        graph = TransitionGraph(
            initial_speaker=lead.agent_id,
            transitions=[Transition(when=FromSpeaker(lead.agent_id), then=AgentTarget(ids["planner"])),
                         Transition(when=FromSpeaker(ids["engineer"]), then=AgentTarget(ids["reviewer"])),
                         Transition(when=FromSpeaker(ids["reviewer"]), then=TerminateTarget(reason="approved"))],
            default_target=TerminateTarget(reason="no_transition"), max_turns=8)
        channel = await lead.open(type=WORKFLOW_TYPE, target=list(ids.values()), knobs={"graph": graph.to_dict()})
        await channel.send(TASK)
        closed = await lead.wait_for_channel_event(channel_id=channel.channel_id, timeout=CLOSE_TIMEOUT_S,
                                                   predicate=lambda e: e.event_type == EV_CHANNEL_CLOSED)
    finally:
        await hub.close()
    reason = closed.event_data.get("reason")
    progress.append(f"channel closed: {reason}")
    csv_path = work_dir / SPECTRUM_FILE
    if reason != "approved" or not csv_path.is_file():
        made = "a" if csv_path.is_file() else "no"
        raise RuntimeError(f"the workflow ended with {reason!r} and {made} {SPECTRUM_FILE}")
    progress.append(f"engineer wrote {SPECTRUM_FILE} ({csv_path.stat().st_size} bytes)")


async def capture_demo(db_url: str, work_dir: Path, config: CaptureConfig | None = None) -> Outcome:
    """Run the AG2 1.x workflow under :func:`capture_run` (the hooks add the capture to every agent turn)."""
    outcome = Outcome(None, {}, [])
    run: EventCaptureManager | None = None
    try:
        async with capture_run(db_url, task_description=TASK, mode="ag2_v1_hub", agent="planner", model="scripted",
                               config=config, meta={"demo": True, "offline": True, "framework": "ag2",
                                                    "work_dir": str(work_dir)}) as run:
            outcome.run_id = run.run_id
            await _workflow(work_dir, outcome.progress)
    except (DatabaseURLError, ConfigError):
        raise
    except Exception as exc:
        outcome.error = exc
    if run is not None:
        outcome.stats = run.get_performance_stats()
    return outcome


def run(db_url: str, work_dir: Path, config: CaptureConfig | None = None) -> Outcome:
    """:func:`capture_demo` from synchronous code."""
    return asyncio.run(capture_demo(db_url, work_dir, config))


