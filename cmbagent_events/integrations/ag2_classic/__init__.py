"""Classic AG2 (``import autogen``: ag2 0.10.3 - 0.14, autogen 0.14.x, the cmbagent fork) hooks:
every agent call, message, tool call, code run, file, speaker change, group-pattern transition,
model call and error, captured automatically.

Where AG2 really does its work (see notes/ag2_hooks_survey.md, measured on both versions), and
the module that hooks it:

- agent calls (agents.py): ``ConversableAgent.generate_reply`` / ``a_generate_reply`` (one
  agent_call row each);
- messages (agents.py): ``send`` / ``a_send`` (the async path never calls the sync one); a manager's
  ``request_reply=False`` sends are broadcasts and are marked ``broadcast`` in meta;
- tools (agents.py): ``execute_function`` / ``a_execute_function``;
- code (code.py): a code executor's ``execute_code_blocks`` (new-style executors) and ``run_code``
  (legacy); files created or changed in the work_dir become file_gen events (``tmp_code_*`` excluded);
- speaker changes (groupchat.py): ``GroupChat.select_speaker`` / ``a_select_speaker``; events
  inside them (the "auto" method's hidden inner chat) are marked ``speaker_selection``;
- group-pattern transitions (groupchat.py; OnCondition, OnContextCondition, AfterWork,
  ReplyResult): AG2 sends them through ``IOStream.get_default().send``; the streams it hands out are instrumented once,
  and the transition becomes the reason of the next speaker change on that thread; on AG2 that
  sends none (the cmbagent fork) they are inferred from group state (inferred_transitions.py);
- model calls (llm.py): ``OpenAIWrapper.create(..., agent=...)``, with tokens and cost.

The hooks only patch classes (methods AG2 looks up at call time, so agents built before
installation are covered), keep ``functools.wraps`` names (0.14 pairs sync/async reply functions
by ``__name__``), never change arguments or results, and never raise into AG2: a capture failure is
swallowed and counted by the run. Errors AG2 raises are captured once (innermost) and
re-raised unchanged. Every wrapper comes from one generator (``integrations/patching.wrap_call``,
gated); installing and removing them is install.py's, through the patch set every flavour uses.

Thread hops: contextvars do not cross ``run()``, ``run_in_executor`` or ``_run_async_in_thread``.
Each agent remembers (weakly) the run it was last seen in, so work on AG2's own threads lands in
the right run; the agent's open call is adopted as parent where the hop lost the nesting.
"""

from .install import (
    HooksReport,
    acquire_hooks,
    hooks_installed,
    hooks_report,
    install_ag2_hooks,
    uninstall_ag2_hooks,
)

__all__ = ["HooksReport", "acquire_hooks", "hooks_installed", "hooks_report", "install_ag2_hooks",
           "uninstall_ag2_hooks"]
