"""The demo's AG2 chats: planner, researcher group, engineer/executor, handoff pattern."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from autogen import (
    Agent,
    ConversableAgent,
    GroupChat,
    GroupChatManager,
    UserProxyAgent,
    register_function,
)
from autogen.agentchat import initiate_group_chat
from autogen.agentchat.group import (
    AgentTarget,
    OnCondition,
    StringLLMCondition,
    TerminateTarget,
)
from autogen.agentchat.group.patterns import DefaultPattern
from autogen.coding import LocalCommandLineCodeExecutor

from ..testing.script import ToolCall
from .models import (
    PLANCK_2018,
    SPECTRUM_FILE,
    Models,
    parameter_tool,
    spectrum_code,
    spectrum_tool,
)


def is_termination(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, str) and "TERMINATE" in content


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
    manager = GroupChatManager(groupchat, llm_config=False, is_termination_msg=is_termination)
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
    manager = GroupChatManager(groupchat, llm_config=False, is_termination_msg=is_termination)
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
                             group_manager_args={"is_termination_msg": is_termination})
    result, _context, last = initiate_group_chat(pattern=pattern, messages=message, max_rounds=10)
    if getattr(last, "name", None) != "summarizer":
        raise RuntimeError(f"the chat ended with {getattr(last, 'name', last)!r}, not the summarizer")
    return str(result.summary or "")
