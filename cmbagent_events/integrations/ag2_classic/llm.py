"""Model calls: ``OpenAIWrapper.create(..., agent=...)``, with tokens and cost."""

from __future__ import annotations

from typing import Any

from ...captor import captor_for
from ..patching import CallHook, PatchSet
from .common import adopt_hop_parent, in_selection, name_of, perf, record_hop_error


class CreateHook(CallHook):
    """One llm_call row per model call, nested under the calling agent's open call (even on AG2's
    own threads, where the context is lost)."""

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        agent = kwargs.get("agent")
        captor = captor_for(agent)
        if captor is None:
            return None
        return captor, agent, perf()

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        captor, agent, started = state
        if error is not None:
            record_hop_error(captor, agent, error, "llm_create")
            return
        usage = getattr(result, "usage", None)
        meta = {"model": getattr(result, "model", None),
                "cached": getattr(result, "cost", None) is not None and usage is None}
        if in_selection.get():
            meta["speaker_selection"] = True
        adopted = adopt_hop_parent(captor, agent)
        captor.capture_llm_call(
            name_of(agent), getattr(result, "model", None), getattr(usage, "prompt_tokens", None),
            getattr(usage, "completion_tokens", None), getattr(usage, "total_tokens", None),
            getattr(result, "cost", None), (perf() - started) * 1000.0, meta)
        if adopted:
            captor.adopt_stack(())


def patch_llm(patches: PatchSet, wrapper_cls: type) -> None:
    patches.patch_call(wrapper_cls, "create", CreateHook())
