"""The main job: a real AG2 multi-agent run, captured, then shown as its event tree and capture stats.

    python -m cmbagent_events.demo [--mode planning_and_control|one_shot] [--db URL] [--work-dir DIR]

Offline by default: every agent runs real AG2 code (ConversableAgent, GroupChat, group patterns,
tool execution, LocalCommandLineCodeExecutor) and only the model is replaced, by the scripted client
(``testing/scripted_client.py``). With ``OPENAI_API_KEY`` set (and the ``openai`` package
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

With only AG2 1.x installed (``import ag2``, no ``autogen``), or with ``--flavour v1``, the demo runs
an AG2 1.x hub workflow instead (``demo/ag2_v1.py``): planner, engineer and reviewer on a workflow
channel, with a routing-tool hand-off, a tool call and code that writes the CSV (offline only).

The capture goes to the default database (``CMBAGENT_EVENTS_DB_URL`` or
``sqlite+aiosqlite:///cmbagent_events.db``) unless ``--db`` says otherwise. AG2's console output is
silenced (a discarding IOStream), so what is printed is the run read back from the database.
Exit status: 0 when the run completed, 1 when it failed (its tree is still printed), 2 for a bad
database URL or configuration.
"""

import importlib
from typing import Any

from .main import build_parser, main
from .models import MODES, SPECTRUM_FILE, TASKS, Models, NullIOStream, real_model_config
from .report import Outcome, report_lines, stats_lines

__all__ = ["MODES", "SPECTRUM_FILE", "TASKS", "Models", "NullIOStream", "Outcome", "build_parser", "capture_demo",
           "main", "real_model_config", "report_lines", "stats_lines"]

_CLASSIC = {"capture_demo": "workflow", "workflow": None, "chats": None}  # these import autogen


def __getattr__(name: str) -> Any:
    """The classic workflow's names and modules, imported on first use: importing this package
    never imports an AG2 flavour (AG2 1.x users have no ``autogen``)."""
    if name not in _CLASSIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f".{_CLASSIC[name] or name}", __name__)
    return module if _CLASSIC[name] is None else getattr(module, name)
