"""AG2 1.x code execution and files: the sandbox code tool's runs and the files they create or change.

Code run by AG2 1.x's code tool (SandboxCodeTool -> CodeAdapter.run) is a code_exec event; files the
run creates or changes in a LocalSandbox's work dir are file_gen events linked to it. AG2 writes each
snippet to ag2_<32 hex>.<ext> in the work dir and removes it after: not the run's file.
"""

from __future__ import annotations

import contextvars
import os
import re
import time
from pathlib import Path
from typing import Any

from ...capture import EventCaptureManager
from ...current_run import get_event_captor
from ..files import file_type_for, snapshot
from ..patching import CallHook, PatchSet
from .common import CARRY_KEY, usable

_perf = time.perf_counter
_AG2_SNIPPET = re.compile(r"ag2_[0-9a-f]{32}\.\w+$")
_pending_files: contextvars.ContextVar[list[tuple[str, str, int, bool]] | None] = contextvars.ContextVar(
    "cmbagent_events_ag2_pending_files", default=None)


def _code_target(context: Any) -> tuple[EventCaptureManager | None, tuple[str, ...] | None]:
    """The run and nesting of code run from a tool: the calling turn's carry, else the current run."""
    deps = getattr(context, "dependencies", None)
    carry = deps.get(CARRY_KEY) if deps is not None else None
    if carry is not None:
        run = usable(carry.run())
        if run is not None:
            return run, carry.stack
    return usable(get_event_captor()), None


def _changed_files(before: dict[str, tuple[int, int]], work_dir: Any,
                   own_files: frozenset[str] = frozenset()) -> list[tuple[str, str, int, bool]]:
    """(path, file type, size, created) for files the command created or changed under ``work_dir``
    (``own_files``: the run's database files, which its writer changes meanwhile, left out)."""
    after = snapshot(work_dir) or {}
    root = Path(str(work_dir)).resolve()
    found = []
    for path, stamp in sorted(after.items()):
        if before.get(path) == stamp or _AG2_SNIPPET.search(os.path.basename(path)):
            continue
        resolved = Path(path).resolve()
        if root in resolved.parents and str(resolved) not in own_files:  # symlinked or escaping: not the run's
            found.append((str(resolved), file_type_for(path), stamp[1], path not in before))
    return found


def _emit_files(run: EventCaptureManager, agent_name: str | None, files: list[tuple[str, str, int, bool]],
                code_exec_id: str | None) -> None:
    for path, file_type, size, created in files:
        run.capture_file_generation(agent_name or "code_executor", path, file_type, size,
                                    {"created": created, "code_exec_id": code_exec_id, "framework": "ag2"})


class CodeRunHook(CallHook):
    """``CodeAdapter.run(self, code, language, *, context=None)``: a code_exec row, nested where the
    calling turn was; the files its sandbox commands change are collected meanwhile (ExecHook)."""

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        run, stack = _code_target(kwargs.get("context"))
        if run is None:
            return None
        files: list[tuple[str, str, int, bool]] = []
        token = _pending_files.set(files)
        previous = None
        if stack is not None and run.event_stack() != stack:
            previous = run.event_stack()
            run.adopt_stack(stack)
        agent_name = run.open_call_agent(run.current_parent())
        code = args[1] if len(args) > 1 else kwargs.get("code")
        language = args[2] if len(args) > 2 else kwargs.get("language")
        return run, type(args[0]).__name__, code, language, files, token, previous, agent_name, _perf()

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        run, executor, code, language, files, token, previous, agent_name, started = state
        _pending_files.reset(token)
        try:
            if isinstance(error, Exception):
                run.capture_exception(agent_name, error, "code_run", {"framework": "ag2"})
            elif error is None:
                event_id = run.capture_code_execution(
                    agent_name or "code_executor", code, str(language), getattr(result, "output", None),
                    getattr(result, "exit_code", None), (_perf() - started) * 1000.0,
                    {"executor": executor, "framework": "ag2"})
                _emit_files(run, agent_name, files, event_id)
        finally:
            if previous is not None:
                run.adopt_stack(previous)


class ExecHook(CallHook):
    """``LocalSandbox.exec``: files a command creates or changes in the sandbox's work dir, emitted
    after the code_exec they belong to (inside a code run) or on their own (a command run directly)."""

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        run = usable(get_event_captor())
        pending = _pending_files.get()
        if (run is None and pending is None) or (run is not None and not run.captures("file_gen")):
            return None
        root = args[0].host_workdir
        return run, pending, root, snapshot(root) or {}

    def end(self, state: Any, result: Any, error: BaseException | None, where: str) -> None:
        run, pending, root, before = state
        if error is not None:
            return
        changed = _changed_files(before, root, getattr(run or get_event_captor(), "own_files", frozenset()))
        if pending is not None:
            pending.extend(changed)  # emitted after the code_exec they belong to
        elif run is not None and changed:
            _emit_files(run, run.open_call_agent(run.current_parent()), changed, None)


def patch_code(patches: PatchSet, adapter_cls: Any, sandbox_cls: Any) -> None:
    patches.patch_call(adapter_cls, "run", CodeRunHook())
    patches.patch_call(sandbox_cls, "exec", ExecHook())
