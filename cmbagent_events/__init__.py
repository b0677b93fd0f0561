"""cmbagent-events: complete, nested, low-overhead event capture for AG2 multi-agent runs.

    async with capture_run(task_description="...") as run:
        ...  # AG2 code; every agent call, message, tool call, code run, file and handoff is captured

Importing the package is cheap: the storage and read-side names (SQLAlchemy models, repositories,
engines), the AG2 hooks and the MARS callback types load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .capture import EventCaptureManager
from .config import CaptureConfig
from .current_run import get_event_captor, set_event_captor
from .errors import ConfigError, DatabaseURLError, ReplayDivergence, SchemaConflictError
from .replay import replay, replayable
from .run import RunHandle, SyncRunHandle, capture_run, capture_run_sync, start_run, start_run_sync
from .store.schema import migrate

if TYPE_CHECKING:
    from .callbacks import PlanInfo, StepInfo, StepStatus, WorkflowCallbacks, create_callbacks_with_event_capture
    from .integrations.ag2_classic import HooksReport, hooks_report, install_ag2_hooks, uninstall_ag2_hooks
    from .store.database import make_engine
    from .store.models import ExecutionEvent, File, Message, WorkflowRun
    from .store.placement import Placement
    from .store.repositories import EventRepository, WorkflowRepository

__version__ = "0.1.0"

_LAZY = {
    "PlanInfo": "callbacks", "StepInfo": "callbacks", "StepStatus": "callbacks", "WorkflowCallbacks": "callbacks",
    "create_callbacks_with_event_capture": "callbacks", "ExecutionEvent": "store.models", "File": "store.models",
    "Message": "store.models", "WorkflowRun": "store.models", "Placement": "store.placement",
    "EventRepository": "store.repositories", "WorkflowRepository": "store.repositories",
    "make_engine": "store.database", "install_ag2_hooks": "integrations.ag2_classic",
    "uninstall_ag2_hooks": "integrations.ag2_classic", "hooks_report": "integrations.ag2_classic",
    "HooksReport": "integrations.ag2_classic",
}

__all__ = [
    "CaptureConfig", "ConfigError", "DatabaseURLError", "EventCaptureManager", "EventRepository",
    "ExecutionEvent", "File", "HooksReport", "Message", "Placement", "PlanInfo", "ReplayDivergence", "RunHandle",
    "SchemaConflictError",
    "StepInfo", "StepStatus", "SyncRunHandle", "WorkflowCallbacks", "WorkflowRepository", "WorkflowRun", "capture_run",
    "capture_run_sync", "create_callbacks_with_event_capture", "get_event_captor", "hooks_report", "install_ag2_hooks",
    "make_engine", "migrate", "replay", "replayable", "set_event_captor", "start_run", "start_run_sync",
    "uninstall_ag2_hooks",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
