"""A model call read back whole (``Store.llm_call``): its request and response rebuilt from
``llm_calls`` and the run's ``llm_contents``, in the OpenAI chat format they were captured in."""

from __future__ import annotations

from typing import Any

from ..store.columns import decode_json

FIRST_LLM_REVISION = "0003_llm_calls"  # databases older than this hold no requests or responses


def has_llm_tables(revision: str | None) -> bool:
    """Whether a database at ``revision`` (ours: "NNNN_name") has the llm tables."""
    return revision is not None and revision >= FIRST_LLM_REVISION


def assemble(event: dict[str, Any], call: Any, bodies: dict[int, str]) -> dict[str, Any]:
    """The call as ``{"request": {"model", "messages", "tools", "params"}, "response", "usage", "cost",
    "cost_source", "replayable", "note", ...}``. ``call``: its ``llm_calls`` row, or None when none was
    stored (captured before this existed, or with ``CMBAGENT_CAPTURE_LLM_MESSAGES=false``);
    ``bodies``: ordinal -> stored JSON of the contents it references."""
    outputs: dict[str, Any] = event["outputs"] if isinstance(event.get("outputs"), dict) else {}
    usage: dict[str, Any] = outputs["usage"] if isinstance(outputs.get("usage"), dict) else {}
    model = event["inputs"].get("model") if isinstance(event.get("inputs"), dict) else None
    out: dict[str, Any] = {
        "event_id": event["id"], "run_id": event["run_id"], "agent": event["agent_name"],
        "request": None, "response": None, "usage": usage, "cost": usage.get("cost"),
        "cost_source": outputs.get("cost_source", "unknown"), "duration_ms": event.get("duration_ms"),
        "replayable": False, "note": "request and response not recorded",
    }
    if call is None:
        out["request"] = {"model": model, "messages": None, "tools": None, "params": {}}
        return out
    refs = decode_json(call.messages) or []
    missing = [ref for ref in refs if ref not in bodies]
    out["request"] = {
        "model": call.model or model,
        "messages": [decode_json(bodies[ref]) if ref in bodies else None for ref in refs],
        "tools": decode_json(bodies[call.tools]) if call.tools in bodies else None,
        "params": decode_json(call.params) or {},
    }
    out["response"] = decode_json(bodies[call.response]) if call.response in bodies else None
    notes = [call.note] if call.note else []
    if missing:
        notes.append(f"{len(missing)} message(s) missing from llm_contents")
    out["replayable"] = bool(call.replayable) and not missing
    out["note"] = "; ".join(notes) or None
    return out


def raw_bodies(call: Any, bodies: dict[int, str]) -> dict[str, Any]:
    """The stored JSON text of a call's messages (None where missing) and of its tools."""
    return {"messages": [bodies.get(ref) for ref in decode_json(call.messages) or []],
            "tools": bodies.get(call.tools) if call.tools is not None else None}


def references(call: Any) -> list[int]:
    """The ``llm_contents`` ordinals an ``llm_calls`` row refers to."""
    refs = list(decode_json(call.messages) or [])
    return refs + [ref for ref in (call.tools, call.response) if ref is not None]

