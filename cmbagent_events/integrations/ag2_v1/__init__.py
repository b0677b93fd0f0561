"""AG2 1.x (the ``ag2`` package, ``import ag2``, ``ag2>=1,<2``): capture through its middleware and hub listeners.

AG2 1.x has no ``autogen`` module and no class-level reply machinery to patch: every turn of an
``ag2.Agent`` (``ask``, ``run`` / ``AgentRun``, ``resume``, continuations, sub-tasks, agents used as
tools, hub turns) goes through ``Agent._drive_scope``, which instantiates the turn's middleware. We
add one middleware there; its hooks are AG2's own, awaited in order on the turn's tasks:

- ``on_turn``: an ``agent_call`` row (start, then complete or error), nested under the caller's
  open call (an agent used as a tool or a sub-task nests under the agent that called it);
- ``on_llm_call``: an ``llm_call`` row (model, provider, tokens from ``Usage``, cost when the
  response carries one, duration); a failing call is an ``error`` event;
- ``on_tool_execution``: a ``tool_call`` row (arguments, result, duration; a tool that raised is a
  failed row with the error);
- ``on_human_input``: a ``human_input`` row (prompt, answer, how long the human took).

Observers are not used: sync observer callbacks run on worker threads and arrive out of order.

Hubs (``ag2.network``): a listener turns each substantive envelope (text or packet) into a
``message`` and, when the channel names the next speaker, a ``handoff`` whose reason is the
packet's routing reason (a ``Handoff`` return or a routing tool) or the channel's transition.
Turn failures the hub reports become ``error`` events unless the turn already recorded them.

Attaching: inside ``capture_run(hooks=True)`` the patches on ``Agent._drive_scope``, ``Hub._fan_out``,
``CodeAdapter.run`` and ``LocalSandbox.exec`` are installed, reference counted across runs and
removed exactly on the last release. Without hooks, ``capture_middleware()`` goes in an agent's
``middleware=[...]`` and ``capture_hub(hub)`` registers the listener on one hub.

Which run: each middleware instance holds the run it was built for: the one passed explicitly, else
the calling turn's (carried in ``context.dependencies``, which AG2 copies into sub-tasks and agents
used as tools), else ``run_for(agent)`` (the context's run, else the run the agent was last seen
in, else the process-wide one). Its nesting is carried the same way, so a turn whose task lost the
contextvars still lands under its caller in its own run.
"""

from .common import CARRY_KEY
from .hubs import CaptureHubListener, capture_hub
from .install import (
    PATCHES,
    acquire_hooks,
    hooks_installed,
    install_hooks,
    patch_points,
    uninstall_hooks,
    version,
)
from .middleware import CaptureMiddlewareFactory, capture_middleware

__all__ = ["CARRY_KEY", "PATCHES", "CaptureHubListener", "CaptureMiddlewareFactory", "acquire_hooks", "capture_hub",
           "capture_middleware", "hooks_installed", "install_hooks", "patch_points", "uninstall_hooks", "version"]
