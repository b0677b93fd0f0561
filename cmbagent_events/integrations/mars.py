"""MARS (``mars-cmbagent``): capture a workflow through MARS's own ``WorkflowCallbacks``.

    from cmbagent.workflows import one_shot
    from cmbagent_events.integrations.mars import capture_callbacks

    one_shot(task, ..., callbacks=capture_callbacks())            # or merge_callbacks(mine, capture_callbacks())

MARS 2.2 reports a workflow's start, completion and failure to its callbacks (``one_shot``,
``deep_research``; its phases report their own start and end the same way), and declares callbacks
for plans, steps, phases and costs. The callbacks returned here:

- open a run (:func:`~cmbagent_events.run.start_run_sync`, AG2 hooks installed) at the first
  workflow start; a workflow start while the run is open is a phase of it (a ``phase`` event, its
  ``phase_id`` as node);
- record plans, steps, phase changes and cost updates (:class:`~cmbagent_events.workflow_capture.WorkflowCapture`,
  which reads MARS's ``StepInfo`` / ``PlanInfo`` by field name and tolerates missing ones);
- close the run ``completed`` on the outermost completion, ``failed`` on its failure (one ``error``
  event: ``workflow_failure``, never a second one for the run);
- never answer ``should_continue`` / ``on_pause_check``: those stay None, so in ``merge_callbacks``
  the other callbacks alone decide whether MARS stops or pauses.

Everything AG2 does inside (agent calls, messages, tools, code, files, handoffs, model calls with
tokens) is captured by the AG2 hooks while the run is open. MARS's per-agent callbacks
(``on_agent_message``, ``on_tool_call``, ...) are left unset: the hooks already record those.
MARS is imported only when :func:`capture_callbacks` is called.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..config import CaptureConfig
from ..run import SyncRunHandle, start_run_sync
from ..store.database import parse_db_url
from ..workflow_capture import WorkflowCapture, field_of

log = logging.getLogger("cmbagent_events.mars")

__all__ = ["MarsRunCapture", "capture_callbacks"]


def _client_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("mars-cmbagent")
    except Exception:  # another distribution of the cmbagent package, or none
        return None


class MarsRunCapture:
    """One MARS workflow's capture: the run handle and the callback handlers (thread-safe)."""

    def __init__(self, db_url: str | None = None, **run_options: Any) -> None:
        self.config: CaptureConfig = run_options.pop("config", None) or CaptureConfig.from_env()
        self.db_url = db_url or self.config.db_url
        parse_db_url(self.db_url)  # a bad URL fails here, in the caller's code, not silently inside MARS
        self.run_options = run_options
        self.handle: SyncRunHandle | None = None
        self.workflow: WorkflowCapture | None = None
        self._depth = 0  # open workflow starts: 1 = the run, more = phases reporting as workflows
        self._lock = threading.RLock()

    # -- the run -------------------------------------------------------------------------------
    def _run_options(self, task: str, config: dict[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {
            "task_description": str(task or ""),
            "mode": field_of(config, "mode", "phase_type") or "mars_workflow",
            "agent": field_of(config, "agent"),
            "model": next((m for m in (field_of(config, "engineer_model", "default_llm_model"),) if isinstance(m, str)),
                          None),
            "meta": {"client": "mars-cmbagent", "client_version": _client_version(), "workflow_config": config},
            "config": self.config,
        }
        options.update(self.run_options)
        return options

    def workflow_start(self, task: str, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        with self._lock:
            if self.handle is not None:  # a phase of the open run
                self._depth += 1
                phase = field_of(config, "phase_id", "phase_type") or f"phase_{self._depth}"
                self.handle.run.set_context(node_id=str(phase))
                self.handle.run.capture_event("phase", "start", "workflow", {"task": task, "config": config})
                return
            self.handle = start_run_sync(self.db_url, **self._run_options(task, config))
            self.workflow = WorkflowCapture(self.handle.run)
            self._depth = 1
        self.workflow.workflow_start(task, config)

    def _outermost(self, phase_end: Callable[[SyncRunHandle], object]) -> tuple[SyncRunHandle, WorkflowCapture] | None:
        """The run and its capture when the outermost workflow ends (they are released); a phase's end
        is handed to ``phase_end`` instead (None then); None without an open run."""
        with self._lock:
            handle, workflow = self.handle, self.workflow
            if handle is None or workflow is None:
                return None
            if self._depth > 1:
                self._depth -= 1
                phase_end(handle)
                return None
            self.handle, self.workflow, self._depth = None, None, 0
        return handle, workflow

    def workflow_complete(self, final_context: Any = None, total_time: float | None = None) -> None:
        duration = total_time * 1000.0 if isinstance(total_time, (int, float)) else None
        ended = self._outermost(lambda h: h.run.capture_event("phase", "complete", "workflow", None, None, duration))
        if ended is not None:
            handle, workflow = ended
            workflow.workflow_complete(final_context, total_time)
            workflow.close_open_steps("workflow completed while step {} was still open")
            handle.finish("completed")

    def workflow_failed(self, error: str, step_number: int | None = None) -> None:
        ended = self._outermost(lambda h: h.run.capture_error("workflow", str(error), "phase_failure",
                                                              {"step_number": step_number}))
        if ended is not None:
            handle, workflow = ended
            workflow.workflow_failed(error, step_number)  # the run's one error event
            handle.finish("failed")

    # -- everything else: recorded on the open run, ignored without one ---------------------------
    def _forward(self, name: str) -> Callable[..., None]:
        def handler(*args: Any) -> None:
            workflow = self.workflow
            if workflow is not None:
                getattr(workflow, name)(*args)

        handler.__name__ = name
        return handler

    def handlers(self) -> dict[str, Callable[..., None]]:
        """Handlers by MARS callback field name (never ``should_continue`` / ``on_pause_check``)."""
        forwarded = {
            "on_planning_start": "planning_start", "on_planning_complete": "planning_complete",
            "on_step_start": "step_start", "on_step_complete": "step_complete", "on_step_failed": "step_failed",
            "on_phase_change": "phase_change", "on_cost_update": "cost_update",
        }
        handlers: dict[str, Callable[..., None]] = {
            "on_workflow_start": self.workflow_start,
            "on_workflow_complete": self.workflow_complete,
            "on_workflow_failed": self.workflow_failed,
        }
        handlers.update({field: self._forward(method) for field, method in forwarded.items()})
        return handlers


def capture_callbacks(db_url: str | None = None, **run_options: Any) -> Any:
    """MARS's own ``cmbagent.callbacks.WorkflowCallbacks`` that capture the workflow into a run.

    Args:
        db_url: database URL (default: ``CMBAGENT_EVENTS_DB_URL`` or the SQLite default).
        run_options: as for :func:`~cmbagent_events.capture_run` (``task_description``, ``mode``,
            ``agent``, ``model``, ``session_id``, ``config``, ``hooks``, ``meta``); by default taken
            from the workflow: its task, its ``mode`` (else ``mars_workflow``), ``agent`` and model.

    Returns:
        A ``WorkflowCallbacks`` instance; its ``event_capture`` attribute is the
        :class:`MarsRunCapture` (``.handle.run`` is the open run while the workflow runs).

    Raises:
        ImportError: MARS (the ``cmbagent`` package with ``cmbagent.callbacks``) is not installed.
        DatabaseURLError, ConfigError: for a URL or configuration that cannot work.
    """
    try:
        from cmbagent.callbacks import WorkflowCallbacks
    except ImportError as exc:
        raise ImportError("capture_callbacks needs MARS: pip install mars-cmbagent (cmbagent.callbacks "
                          f"not importable: {exc})") from exc
    capture = MarsRunCapture(db_url, **run_options)
    fields = {f.name for f in dataclasses.fields(WorkflowCallbacks)} if dataclasses.is_dataclass(WorkflowCallbacks) \
        else set(capture.handlers())
    callbacks = WorkflowCallbacks(**{name: fn for name, fn in capture.handlers().items() if name in fields})
    try:
        callbacks.event_capture = capture  # for the caller's tests and tools; MARS ignores it
    except AttributeError:  # a slotted class: the capture still works, it is just not reachable
        pass
    return callbacks
