"""The main job: a real AG2 multi-agent run, captured, then shown as its event tree and capture stats.

    python -m cmbagent_events.demo [--mode planning_and_control|one_shot] [--db URL] [--work-dir DIR]

Offline by default: every agent runs real AG2 code (ConversableAgent, GroupChat, group patterns,
tool execution, LocalCommandLineCodeExecutor) and only the model is replaced, by the scripted client
(``integrations/scripted_client.py``). With ``OPENAI_API_KEY`` set (and the ``openai`` package
installed) the same agents talk to a real model instead (``CMBAGENT_EVENTS_DEMO_MODEL``, default
``gpt-4o-mini``); ``--offline`` forces the scripted client.

Modes, after CMBAgent's:

- ``one_shot``: an engineer and an executor in a round-robin GroupChat. The engineer calls the
  ``get_planck_parameters`` tool (run by the executor), writes Python code computing a toy CMB TT
  power spectrum, the executor runs it (the code writes ``cmb_tt_spectrum.csv``), the engineer ends.
- ``planning_and_control``: a planner writes a three-step plan, then each step runs under its own
  node/step context with :class:`~cmbagent_events.callbacks.WorkflowCallbacks` from
  :func:`~cmbagent_events.callbacks.create_callbacks_with_event_capture` reporting it:
  1. researcher / tool_runner / reviewer GroupChat with a custom speaker order and the parameter tool;
  2. the engineer/executor chat of ``one_shot`` (code that writes the CSV);
  3. a ``DefaultPattern`` group: the analyst measures the spectrum with a tool, then an OnCondition
     handoff passes control to the summarizer.

The capture goes to the CONTRACT's default database (``CMBAGENT_EVENTS_DB_URL`` or
``sqlite+aiosqlite:///cmbagent_events.db``) unless ``--db`` says otherwise. AG2's console output is
silenced (a discarding IOStream), so what is printed is the run read back from the database.
Exit status: 0 when the run completed, 1 when it failed (its tree is still printed), 2 for a bad
database URL or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import importlib.util
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager, UserProxyAgent, register_function
from autogen.agentchat import initiate_group_chat
from autogen.agentchat.group import AgentTarget, OnCondition, StringLLMCondition, TerminateTarget
from autogen.agentchat.group.patterns import DefaultPattern
from autogen.coding import LocalCommandLineCodeExecutor
from autogen.io.base import IOStream
from sqlalchemy.ext.asyncio import async_sessionmaker

from .callbacks import PlanInfo, StepInfo, StepStatus, WorkflowCallbacks, create_callbacks_with_event_capture
from .capture import EventCaptureManager
from .config import CaptureConfig, ConfigError
from .integrations.scripted_client import Script, ToolCall, register_scripted_client, scripted_llm_config
from .render import run_header, tree_lines
from .run import capture_run
from .store import DatabaseURLError, EventRepository, WorkflowRepository, make_engine

MODES = ("planning_and_control", "one_shot")
SPECTRUM_FILE = "cmb_tt_spectrum.csv"
SCRIPTED_PRICE = (0.00015, 0.0006)  # $ per 1k prompt / completion tokens, gpt-4o-mini's list price
DEFAULT_REAL_MODEL = "gpt-4o-mini"
TASKS = {
    "one_shot": "Compute a toy CMB TT power spectrum for the Planck 2018 base-LCDM parameters and save it "
                f"to {SPECTRUM_FILE}.",
    "planning_and_control": "Retrieve the Planck 2018 base-LCDM parameters, compute a toy CMB TT power spectrum "
                            f"from them into {SPECTRUM_FILE}, and report where its first acoustic peak lies.",
}

# Planck 2018 TT,TE,EE+lowE+lensing best fit (Planck Collaboration VI 2018, Table 2).
PLANCK_2018 = {"H0": 67.36, "ombh2": 0.02237, "omch2": 0.1200, "tau": 0.0544, "ns": 0.9649, "ln10^10As": 3.044}


def _is_termination(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, str) and "TERMINATE" in content


class NullIOStream:
    """An AG2 IOStream that discards everything AG2 would print (input answers empty)."""

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
        pass

    def send(self, message: Any) -> None:
        pass

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        return ""


class Models:
    """Where the agents' replies come from: a :class:`Script` offline, or a real model config.

    Chats script the replies they expect with :meth:`script` (ignored with a real model) and give
    their agents :meth:`config`; :meth:`activate` registers the scripted client on them.
    """

    def __init__(self, real_config: dict[str, Any] | None = None) -> None:
        self.real_config = real_config
        self._script = None if real_config else Script()

    @property
    def offline(self) -> bool:
        return self.real_config is None

    @property
    def model_name(self) -> str:
        return str(self.real_config["model"]) if self.real_config else "scripted"

    def config(self) -> dict[str, Any]:
        if self.real_config is not None:
            return dict(self.real_config)  # a fresh dict per agent: AG2 may mutate what it is given
        return scripted_llm_config(self._script, price=SCRIPTED_PRICE)

    def script(self, agent_name: str, *replies: Any) -> None:
        if self._script is not None:
            self._script.add(agent_name, *replies)

    def activate(self, *agents: Any) -> None:
        if self._script is not None:
            register_scripted_client(*agents)

    def close(self) -> None:
        """Forget the script (the scripted client keeps a process-wide registry of them)."""
        if self._script is not None:
            self._script.unregister()


def real_model_config(environ: Mapping[str, str] = os.environ) -> dict[str, Any] | None:
    """The real model's llm_config when ``OPENAI_API_KEY`` is set, else None (offline)."""
    key = environ.get("OPENAI_API_KEY", "").strip()
    if not key:
        return None
    return {"model": environ.get("CMBAGENT_EVENTS_DEMO_MODEL", "").strip() or DEFAULT_REAL_MODEL,
            "api_type": "openai", "api_key": key}


# -- tools -------------------------------------------------------------------------------------------
def get_planck_parameters(release: str = "2018") -> dict[str, float]:
    """Base-LCDM best-fit cosmological parameters from a Planck data release (only 2018 is known)."""
    if release.strip() != "2018":
        raise ValueError(f"unknown Planck release {release!r}; known: 2018")
    return dict(PLANCK_2018)


def parameter_tool(into: dict[str, float]) -> Callable[[str], dict[str, float]]:
    """``get_planck_parameters`` that also keeps what it returned in ``into`` (for the next step)."""

    def fetch(release: str = "2018") -> dict[str, float]:
        into.update(get_planck_parameters(release))
        return dict(into)

    fetch.__name__, fetch.__doc__ = get_planck_parameters.__name__, get_planck_parameters.__doc__
    return fetch


def spectrum_code(params: dict[str, float]) -> str:
    """The engineer's code: a toy TT spectrum (acoustic peaks on a tilted plateau), written as CSV."""
    body = """\
# filename: toy_tt_spectrum.py
# Toy CMB TT power spectrum for base-LCDM: acoustic oscillations on a tilted Sachs-Wolfe plateau,
# damped at high ell. Not a Boltzmann code; shapes and peak positions are only indicative.
import csv, math

ns, ombh2 = __NS__, __OMBH2__
ell_acoustic = 301.0                       # peak spacing, ~ pi / theta_*
baryon_boost = 1.0 + 8.0 * (ombh2 - 0.022)  # more baryons, higher odd peaks
rows = []
for ell in range(2, 2501):
    plateau = 1100.0 * (ell / 10.0) ** (ns - 1.0)
    phase = 2.0 * math.pi * (ell - 220.0) / ell_acoustic
    acoustic = 4600.0 * baryon_boost * math.exp(-((ell - 220.0) / 900.0) ** 2) * (0.55 + 0.45 * math.cos(phase))
    rows.append((ell, round((plateau + acoustic) * math.exp(-(ell / 1500.0) ** 2), 3)))
with open("__FILE__", "w", newline="") as f:
    out = csv.writer(f)
    out.writerow(["ell", "D_ell_uK2"])
    out.writerows(rows)
peak = max(rows[:600], key=lambda r: r[1])
print(f"wrote {len(rows)} multipoles to __FILE__; first acoustic peak at ell={peak[0]}, D_ell={peak[1]} uK^2")
"""
    body = body.replace("__NS__", repr(params["ns"])).replace("__OMBH2__", repr(params["ombh2"]))
    return "```python\n" + body.replace("__FILE__", SPECTRUM_FILE) + "```"


def spectrum_tool(work_dir: Path, into: list[str]) -> Callable[[str], str]:
    """``summarize_spectrum`` over CSVs in ``work_dir``; each report is also appended to ``into``."""

    def summarize_spectrum(file_name: str) -> str:
        """Read a power spectrum CSV (columns ell, D_ell_uK2) from the work dir and report its first peak."""
        path = (work_dir / file_name).resolve()
        if work_dir.resolve() not in path.parents:
            raise ValueError(f"{file_name!r} is outside the work dir")
        with path.open(newline="") as f:
            rows = [(int(r["ell"]), float(r["D_ell_uK2"])) for r in csv.DictReader(f)]
        ell, value = max((r for r in rows if r[0] < 600), key=lambda r: r[1])
        into.append(f"{len(rows)} multipoles (ell {rows[0][0]}-{rows[-1][0]}); first acoustic peak at ell={ell}, "
                    f"D_ell={value:.1f} uK^2")
        return into[-1]

    return summarize_spectrum


# -- the chats ----------------------------------------------------------------------------------------
def plan_chat(models: Models, task: str) -> tuple[str, list[dict[str, Any]], bool]:
    """The planner's plan: (text, steps, parsed). Steps fall back to the demo's own when unparsable."""
    default = [
        {"step": 1, "agent": "researcher", "task": "Retrieve the Planck 2018 parameters with the parameter tool "
                                                   "and have the reviewer check them."},
        {"step": 2, "agent": "engineer", "task": f"Write and run Python code that computes a toy CMB TT power "
                                                 f"spectrum from those parameters and saves it to {SPECTRUM_FILE}."},
        {"step": 3, "agent": "analyst", "task": "Measure the first acoustic peak from the CSV, then hand off to "
                                                "the summarizer for the final report."},
    ]
    models.script("planner", "Plan:\n" + "\n".join(f"{s['step']}. {s['agent']}: {s['task']}" for s in default))
    planner = ConversableAgent(
        "planner", llm_config=models.config(), human_input_mode="NEVER",
        system_message="You plan CMB analysis workflows. Reply with exactly three numbered lines formatted "
                       "'N. agent: task', using the agents researcher, engineer and analyst in that order.")
    admin = ConversableAgent("admin", llm_config=False, human_input_mode="NEVER")
    models.activate(planner)
    result = admin.initiate_chat(planner, message=task, max_turns=1, silent=True)
    text = str(result.summary or "")
    parsed = [{"step": int(n), "agent": agent, "task": desc.strip()}
              for n, agent, desc in re.findall(r"^\s*(\d+)[.)]\s*(\w+)\s*:\s*(.+)$", text, re.MULTILINE)]
    if [s["agent"] for s in parsed] == [s["agent"] for s in default]:
        return text, parsed, True
    return text, default, False


def parameter_chat(models: Models, message: str) -> dict[str, float]:
    """GroupChat: the researcher calls the parameter tool (tool_runner executes), the reviewer checks."""
    fetched: dict[str, float] = {}
    fetch = parameter_tool(fetched)
    models.script("researcher", ToolCall("get_planck_parameters", {"release": "2018"}),
                  lambda msgs: "Planck 2018 base-LCDM: " + ", ".join(f"{k}={v}" for k, v in fetched.items()))
    models.script("reviewer", "These match Planck 2018 TT,TE,EE+lowE+lensing (Table 2). Approved. TERMINATE")
    researcher = ConversableAgent(
        "researcher", llm_config=models.config(), human_input_mode="NEVER",
        system_message="Call get_planck_parameters for release 2018, then list the values in one sentence.")
    reviewer = ConversableAgent(
        "reviewer", llm_config=models.config(), human_input_mode="NEVER",
        system_message="Check the parameters the researcher reported against Planck 2018 in one sentence, "
                       "then write TERMINATE.")
    tool_runner = UserProxyAgent("tool_runner", human_input_mode="NEVER", code_execution_config=False)
    register_function(fetch, caller=researcher, executor=tool_runner, description=fetch.__doc__)
    models.activate(researcher, reviewer)

    def speaker_order(last: Agent, groupchat: GroupChat) -> Agent:
        """Tool calls go to the tool runner; results back to the researcher; its report to the reviewer."""
        if groupchat.messages and groupchat.messages[-1].get("tool_calls"):
            return tool_runner
        return reviewer if last is researcher else researcher

    groupchat = GroupChat([researcher, tool_runner, reviewer], messages=[], max_round=8,
                          speaker_selection_method=speaker_order)
    manager = GroupChatManager(groupchat, llm_config=False, is_termination_msg=_is_termination)
    tool_runner.initiate_chat(manager, message=message, silent=True)
    if not fetched:
        raise RuntimeError("the researcher never called get_planck_parameters")
    return dict(fetched)


def spectrum_chat(models: Models, work_dir: Path, message: str,
                  params: dict[str, float] | None = None) -> dict[str, Any]:
    """Round-robin GroupChat of engineer and executor: (parameter tool call,) code that writes the CSV.

    Without ``params`` the engineer fetches them itself with the tool first (one_shot).
    """
    known = dict(params or {})
    replies: list[Any] = []
    if params is None:
        replies.append(ToolCall("get_planck_parameters", {"release": "2018"}))
    replies.append(lambda msgs: spectrum_code(known or PLANCK_2018))
    replies.append(lambda msgs: f"Done: the toy TT spectrum is in {SPECTRUM_FILE}. TERMINATE")
    models.script("engineer", *replies)
    engineer = ConversableAgent(
        "engineer", llm_config=models.config(), human_input_mode="NEVER",
        system_message="You write Python. " + ("Get the cosmological parameters with get_planck_parameters "
                                               "first. " if params is None else "") +
                       f"Then reply with one python code block, standard library only, that computes a toy CMB "
                       f"TT power spectrum D_ell for ell=2..2500 and writes it to {SPECTRUM_FILE} (columns ell, "
                       f"D_ell_uK2) in the current directory. After it ran successfully reply with one line "
                       f"ending in TERMINATE.")
    executor = ConversableAgent(
        "executor", llm_config=False, human_input_mode="NEVER",
        code_execution_config={"executor": LocalCommandLineCodeExecutor(work_dir=work_dir, timeout=60)})
    fetch = parameter_tool(known)
    register_function(fetch, caller=engineer, executor=executor, description=fetch.__doc__)
    models.activate(engineer)
    groupchat = GroupChat([engineer, executor], messages=[], max_round=8, speaker_selection_method="round_robin")
    manager = GroupChatManager(groupchat, llm_config=False, is_termination_msg=_is_termination)
    executor.initiate_chat(manager, message=message, silent=True)
    path = work_dir / SPECTRUM_FILE
    if not path.is_file():
        raise RuntimeError(f"the engineer's code did not write {SPECTRUM_FILE}")
    ran = [m.get("content") for m in groupchat.messages if m.get("name") == "executor"]
    return {"file": str(path.resolve()), "size_bytes": path.stat().st_size,
            "output": next((c for c in reversed(ran) if isinstance(c, str) and "exitcode" in c), None)}


def handoff_chat(models: Models, work_dir: Path, message: str) -> str:
    """DefaultPattern group: the analyst measures the CSV (tool), then an OnCondition handoff to the summarizer."""
    measured: list[str] = []
    models.script("analyst", ToolCall("summarize_spectrum", {"file_name": SPECTRUM_FILE}),
                  ToolCall("transfer_to_summarizer_1"))
    models.script("summarizer", lambda msgs: "Summary: from the Planck 2018 parameters the toy TT spectrum has "
                                             f"{measured[-1] if measured else 'no measurement'}. TERMINATE")
    analyst = ConversableAgent(
        "analyst", llm_config=models.config(), human_input_mode="NEVER", functions=[spectrum_tool(work_dir, measured)],
        system_message=f"Call summarize_spectrum on {SPECTRUM_FILE}, then hand off to the summarizer.")
    summarizer = ConversableAgent(
        "summarizer", llm_config=models.config(), human_input_mode="NEVER",
        system_message="Summarise the workflow's result in two sentences, then write TERMINATE.")
    analyst.handoffs.add_llm_condition(OnCondition(
        target=AgentTarget(summarizer),
        condition=StringLLMCondition("The spectrum has been measured: hand off for the final report.")))
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER")
    models.activate(analyst, summarizer)
    # Ends on the summarizer's TERMINATE; the group's TerminateTarget is the fallback.
    pattern = DefaultPattern(initial_agent=analyst, agents=[analyst, summarizer], user_agent=user,
                             group_after_work=TerminateTarget(),
                             group_manager_args={"is_termination_msg": _is_termination})
    result, _context, last = initiate_group_chat(pattern=pattern, messages=message, max_rounds=10)
    if getattr(last, "name", None) != "summarizer":
        raise RuntimeError(f"the chat ended with {getattr(last, 'name', last)!r}, not the summarizer")
    return str(result.summary or "")


# -- the workflows ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Step:
    number: int
    agent: str
    description: str
    run: Callable[[], Any]


def run_steps(run: EventCaptureManager, callbacks: WorkflowCallbacks, steps: Sequence[Step]) -> list[Any]:
    """Each step under its own node/step context, reported through the callbacks."""
    results = []
    for step in steps:
        run.set_context(node_id=f"node_{step.number}", step_id=f"step_{step.number}")
        info = StepInfo(step.number, step.agent, step.description, StepStatus.RUNNING, started_at=time.time())
        callbacks.invoke_step_start(info)
        started = time.perf_counter()
        try:
            result = step.run()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            callbacks.invoke_step_failed(dataclasses.replace(
                info, status=StepStatus.FAILED, error=error, execution_time=time.perf_counter() - started))
            callbacks.invoke_workflow_failed(error, step.number)
            raise
        callbacks.invoke_step_complete(dataclasses.replace(
            info, status=StepStatus.COMPLETED, result=result, execution_time=time.perf_counter() - started))
        results.append(result)
    return results


def planning_and_control(run: EventCaptureManager, models: Models, work_dir: Path, task: str,
                         progress: list[str]) -> None:
    def note(kind: str) -> Callable[[StepInfo], None]:
        return lambda step: progress.append(f"step {step.step_number} ({step.agent}) {kind}")

    callbacks = create_callbacks_with_event_capture(
        run, on_step_complete=note("completed"), on_step_failed=note("failed"),
        on_planning_complete=lambda plan: progress.append(f"plan: {plan.num_steps} steps"))
    began = time.perf_counter()
    callbacks.invoke_workflow_start(task, {"mode": "planning_and_control", "model": models.model_name})
    run.set_context(node_id="planning", step_id="planning")
    callbacks.invoke_planning_start(task, {"planner": "planner", "model": models.model_name})
    text, plan, parsed = plan_chat(models, task)
    callbacks.invoke_planning_complete(PlanInfo(task, plan, "planning_and_control",
                                                {"parsed": parsed, "plan_text": text}))
    params: dict[str, float] = {}

    def step_parameters() -> dict[str, float]:
        params.update(parameter_chat(models, plan[0]["task"]))
        return params

    def step_spectrum() -> dict[str, Any]:
        values = ", ".join(f"{k}={v}" for k, v in params.items())
        return spectrum_chat(models, work_dir, f"{plan[1]['task']}\nParameters: {values}", params)

    steps = [Step(1, plan[0]["agent"], plan[0]["task"], step_parameters),
             Step(2, plan[1]["agent"], plan[1]["task"], step_spectrum),
             Step(3, plan[2]["agent"], plan[2]["task"], lambda: handoff_chat(models, work_dir, plan[2]["task"]))]
    results = run_steps(run, callbacks, steps)
    callbacks.invoke_workflow_complete({"summary": results[-1], "work_dir": str(work_dir)},
                                       time.perf_counter() - began)


def one_shot(run: EventCaptureManager, models: Models, work_dir: Path, task: str, progress: list[str]) -> None:
    run.set_context(node_id="one_shot", step_id="engineer")
    result = spectrum_chat(models, work_dir, task)
    progress.append(f"engineer wrote {Path(result['file']).name} ({result['size_bytes']} bytes)")


# -- capture and report -------------------------------------------------------------------------------
@dataclasses.dataclass
class Outcome:
    run_id: str | None
    stats: dict[str, Any]
    progress: list[str]
    error: BaseException | None = None


def _quiet_ag2() -> None:
    for name in ("autogen.oai.client", "autogen.oai", "autogen.agentchat", "autogen.coding"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _workflow(run: EventCaptureManager, mode: str, models: Models, work_dir: Path, task: str,
              progress: list[str]) -> None:
    with IOStream.set_default(NullIOStream()):  # context-local: this thread's AG2 prints nothing
        try:
            if mode == "one_shot":
                one_shot(run, models, work_dir, task, progress)
            else:
                planning_and_control(run, models, work_dir, task, progress)
        finally:
            models.close()


async def capture_demo(db_url: str, mode: str, models: Models, work_dir: Path,
                       config: CaptureConfig | None = None) -> Outcome:
    """Run the demo workflow under :func:`capture_run`; AG2 runs on a worker thread so the writer keeps
    draining on this loop while the agents talk (``to_thread`` carries the run's context along)."""
    task = TASKS[mode]
    outcome = Outcome(None, {}, [])
    agent = "planner" if mode == "planning_and_control" else "engineer"
    run: EventCaptureManager | None = None
    try:
        async with capture_run(db_url, task_description=task, mode=mode, agent=agent, model=models.model_name,
                               config=config, meta={"demo": True, "offline": models.offline,
                                                    "work_dir": str(work_dir)}) as run:
            outcome.run_id = run.run_id
            await asyncio.to_thread(_workflow, run, mode, models, work_dir, task, outcome.progress)
    except (DatabaseURLError, ConfigError):
        raise
    except Exception as exc:  # the run is stored as failed; the report still shows what happened
        outcome.error = exc
    if run is not None:
        outcome.stats = run.get_performance_stats()  # after the exit: the final drain is counted
    return outcome


async def report_lines(db_url: str, run_id: str, session_id: str = "default", *,
                       broadcasts: bool = False) -> list[str]:
    """The stored run: header, event tree and files, read back from the database.

    A GroupChatManager re-sends every message to each other member; those broadcast rows (meta
    ``broadcast``) are left out of the tree unless ``broadcasts`` (the header still counts them).
    """
    engine = make_engine(db_url)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            row = await WorkflowRepository(session, session_id).get_run(run_id)
            repo = EventRepository(session, session_id)
            events = list(await repo.list_events(run_id))
            files = await repo.list_files(run_id)
    finally:
        await engine.dispose()
    hidden = 0
    if not broadcasts:
        shown = [e for e in events if not (isinstance(e.meta, dict) and e.meta.get("broadcast"))]
        hidden, events = len(events) - len(shown), shown
    lines = [run_header(row) if row is not None else f"run {run_id} (not found)", *tree_lines(events)]
    if hidden:
        lines.append(f"({hidden} manager broadcast messages not shown; --all shows them)")
    if files:
        lines.append("files:")
        lines.extend(f"  {f.file_path} ({f.file_type}, {f.size_bytes} bytes)" for f in files)
    return lines


def stats_lines(stats: dict[str, Any]) -> list[str]:
    width = max((len(k) for k in stats), default=0)
    lines = ["capture stats:"]
    for key, value in stats.items():
        shown = f"{value:.3f}" if isinstance(value, float) else value
        lines.append(f"  {key:<{width}}  {shown}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmbagent-events demo",
        description="Run a captured AG2 multi-agent workflow (offline unless OPENAI_API_KEY is set) and print "
                    "its event tree and capture stats.")
    parser.add_argument("--mode", choices=MODES, default="planning_and_control",
                        help="workflow to run (default: planning_and_control)")
    parser.add_argument("--db", metavar="URL", default=None,
                        help="database URL (default: $CMBAGENT_EVENTS_DB_URL or sqlite+aiosqlite:///cmbagent_events.db)")
    parser.add_argument("--work-dir", metavar="DIR", type=Path, default=None,
                        help="where the agents' code runs and writes its files (default: a new temporary dir)")
    parser.add_argument("--all", action="store_true", dest="broadcasts",
                        help="also show the GroupChatManager's broadcast copies of each message in the tree")
    parser.add_argument("--offline", action="store_true",
                        help="use the scripted model client even when OPENAI_API_KEY is set")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    out, err = sys.stdout, sys.stderr
    try:
        config = CaptureConfig.from_env()
    except ConfigError as exc:
        print(f"cmbagent-events demo: {exc}", file=err)
        return 2
    db_url = args.db or config.db_url
    _quiet_ag2()
    real = None if args.offline else real_model_config()
    if real is not None and importlib.util.find_spec("openai") is None:
        print("cmbagent-events demo: OPENAI_API_KEY is set but the 'openai' package is not installed "
              "(pip install 'ag2[openai]'); running offline with the scripted model client", file=err)
        real = None
    models = Models(real)
    work_dir = (args.work_dir or Path(tempfile.mkdtemp(prefix="cmbagent-events-demo-"))).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    source = "offline, scripted model client" if models.offline else f"model {models.model_name}"
    print(f"cmbagent-events demo: {args.mode} ({source})", file=out)
    print(f"database: {db_url}\nwork dir: {work_dir}", file=out)
    try:
        outcome = asyncio.run(capture_demo(db_url, args.mode, models, work_dir, config))
        lines = (asyncio.run(report_lines(db_url, outcome.run_id, broadcasts=args.broadcasts))
                 if outcome.run_id else [])
    except (DatabaseURLError, ConfigError) as exc:
        print(f"cmbagent-events demo: {exc}", file=err)
        return 2
    for line in outcome.progress:
        print(f"  {line}", file=out)
    print("", file=out)
    print("\n".join(lines), file=out)
    print("", file=out)
    print("\n".join(stats_lines(outcome.stats)), file=out)
    if outcome.error is not None:
        print(f"cmbagent-events demo: the run failed: {type(outcome.error).__name__}: {outcome.error}", file=err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
