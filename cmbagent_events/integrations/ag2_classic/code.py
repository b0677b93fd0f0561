"""Code runs (a code executor's ``execute_code_blocks``, the legacy ``run_code``) and the files they
create or change in the work_dir (``tmp_code_*`` excluded), as code_exec and file_gen events."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...capture import EventCaptureManager
from ...current_run import run_for
from ..files import file_type_for, snapshot
from ..patching import CallHook, PatchSet, point_name
from .common import perf


def capture_files(run: EventCaptureManager, agent_name: str | None, before: dict[str, tuple[int, int]] | None,
                  work_dir: Any, parent: str | None) -> None:
    """file_gen events for files the code created or changed (the executor's own tmp_code_* excluded)."""
    if before is None:
        return
    after = snapshot(work_dir) or {}
    root = Path(str(work_dir)).resolve()
    for path, stamp in sorted(after.items()):
        if before.get(path) == stamp or os.path.basename(path).startswith("tmp_code_"):
            continue
        resolved = Path(path).resolve()
        if root not in resolved.parents:  # symlinked or escaping paths are not the run's files
            continue
        if str(resolved) in run.own_files:  # our own database, written meanwhile by the writer thread
            continue
        run.capture_file_generation(agent_name or "code_executor", str(resolved), file_type_for(path),
                                    stamp[1], {"created": path not in before, "code_exec_id": parent})


def _before(run: EventCaptureManager, work_dir: Any) -> dict[str, tuple[int, int]] | None:
    try:
        return snapshot(work_dir) if run.captures("file_gen") else None
    except Exception:
        return None


def _code_of(code_blocks: Any) -> tuple[str, str]:
    try:
        blocks = list(code_blocks)
        code = "\n\n".join(getattr(b, "code", str(b)) for b in blocks)
        language = getattr(blocks[0], "language", "python") if blocks else "python"
        return code, language
    except Exception:
        return repr(code_blocks), "unknown"


class ExecuteCodeBlocksHook(CallHook):
    """New-style executors: the code_exec belongs to the agent whose open call runs the code."""

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        run = run_for(None)
        if run is None:
            return None
        obj = args[0]
        agent_name = run.open_call_agent(run.current_parent())
        work_dir = getattr(obj, "work_dir", None)
        code_blocks = args[1] if len(args) > 1 else kwargs.get("code_blocks")
        return run, obj, agent_name, work_dir, code_blocks, _before(run, work_dir), perf()

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        run, executor, agent_name, work_dir, code_blocks, before, started = state
        if error is not None:
            run.capture_exception(agent_name, error, where)
            return
        code, language = _code_of(code_blocks)
        event_id = run.capture_code_execution(
            agent_name or "code_executor", code, language, getattr(result, "output", None),
            getattr(result, "exit_code", None), (perf() - started) * 1000.0,
            {"executor": type(executor).__name__, "code_file": getattr(result, "code_file", None),
             "blocks": len(code_blocks) if hasattr(code_blocks, "__len__") else None})
        capture_files(run, agent_name, before, work_dir, event_id)


class RunCodeHook(CallHook):
    """The legacy ``ConversableAgent.run_code`` path."""

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        obj = args[0]
        run = run_for(obj)
        if run is None:
            return None
        config = getattr(obj, "_code_execution_config", None)
        work_dir = kwargs.get("work_dir") or (config.get("work_dir") if isinstance(config, dict) else None)
        code = args[1] if len(args) > 1 else kwargs.get("code")
        return run, obj, code, kwargs.get("lang"), work_dir, _before(run, work_dir), perf()

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        run, agent, code, lang, work_dir, before, started = state
        if error is not None:
            run.capture_exception(agent.name, error, where)
            return
        exit_code, logs = (result[0], result[1]) if isinstance(result, tuple) else (None, result)
        event_id = run.capture_code_execution(agent.name, code, lang or "python", logs, exit_code,
                                              (perf() - started) * 1000.0, {"executor": "legacy run_code"})
        capture_files(run, agent.name, before, work_dir, event_id)


def patch_code(patches: PatchSet, agent_cls: type, executor_classes: list[type]) -> None:
    """Hook the legacy ``run_code`` and each executor class that defines ``execute_code_blocks``."""
    patches.patch_call(agent_cls, "run_code", RunCodeHook())
    for executor_cls in executor_classes:
        if "execute_code_blocks" in executor_cls.__dict__:
            patches.patch_call(executor_cls, "execute_code_blocks", ExecuteCodeBlocksHook())
        else:
            patches.unavailable.append(point_name(executor_cls, "execute_code_blocks"))
