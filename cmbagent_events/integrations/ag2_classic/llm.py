"""Model calls: ``OpenAIWrapper.create(..., agent=...)``, with tokens, cost and its source, and the
request and response whole.

The request stored is the one the model client was called with: ``create`` merges the agent's
``llm_config`` entry into its arguments (model, temperature, tools...) and fills message templates in
``_construct_create_params``, whose result is the client's ``params``; that hook hands it to the
``create`` in progress on this thread (a ContextVar: ``create`` is synchronous, AG2's async agents
run it on a worker thread).
"""

from __future__ import annotations

import contextvars
from typing import Any

from ...current_run import run_for
from ..patching import CallHook, PatchSet
from .common import adopt_hop_parent, in_selection, perf, record_hop_error

# the params of the create in progress here: [] while one runs, then [params] once constructed
_sent: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("cmbagent_events_llm_params",
                                                                        default=None)


class CreateHook(CallHook):
    """One llm_call row per model call, nested under the calling agent's open call (even on AG2's
    own threads, where the context is lost)."""

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        agent = kwargs.get("agent")
        run = run_for(agent)
        if run is None:
            return None
        sent: list[Any] = []
        return run, agent, perf(), sent, _sent.set(sent)

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        run, agent, started, sent, token = state
        _sent.reset(token)
        if error is not None:
            record_hop_error(run, agent, error, "llm_create")
            return
        usage = getattr(result, "usage", None)
        model = getattr(result, "model", None)
        cost, source = cost_of(result, usage)
        meta = {"model": model, "cached": getattr(result, "cost", None) is not None and usage is None}
        if in_selection.get():
            meta["speaker_selection"] = True
        adopted = adopt_hop_parent(run, agent)
        run.capture_llm_call(
            getattr(agent, "name", None), model, getattr(usage, "prompt_tokens", None),
            getattr(usage, "completion_tokens", None), getattr(usage, "total_tokens", None),
            cost, (perf() - started) * 1000.0, meta, request=sent[-1] if sent else None, response=result,
            cached_tokens=getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", None),
            reasoning_tokens=getattr(getattr(usage, "completion_tokens_details", None), "reasoning_tokens", None),
            cost_source=source)
        if adopted:
            run.adopt_stack(())


def cost_of(response: Any, usage: Any) -> tuple[Any, str]:
    """The call's cost and where it comes from: the API's own figure when the usage carries one
    (``reported``: OpenRouter and other gateways), else AG2's (``ag2_price_table``: its price table, or
    the ``price`` of the config entry), else ``unknown`` (AG2 knows no price for the model: it says 0)."""
    reported = getattr(usage, "cost", None)
    if isinstance(reported, (int, float)) and not isinstance(reported, bool):
        return reported, "reported"
    cost = getattr(response, "cost", None)
    if isinstance(cost, (int, float)) and not isinstance(cost, bool) and cost > 0:
        return cost, "ag2_price_table"
    return cost, "unknown"


class ParamsHook(CallHook):
    """Hands the constructed params to the ``create`` in progress on this thread."""

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return _sent.get()  # None (no capturing create here): the original alone

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        if error is None:
            state.append(result)


def patch_llm(patches: PatchSet, wrapper_cls: type) -> None:
    patches.patch_call(wrapper_cls, "create", CreateHook())
    if hasattr(wrapper_cls, "_construct_create_params"):  # every supported version has it
        patches.patch_call(wrapper_cls, "_construct_create_params", ParamsHook())
