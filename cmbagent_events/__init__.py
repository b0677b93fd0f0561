"""cmbagent-events: complete, nested, low-overhead event capture for AG2 multi-agent runs.

    async with capture_run(task_description="...") as run:
        ...  # AG2 code; every agent call, message, tool call, code run, file and handoff is captured
"""

from .callbacks import PlanInfo, StepInfo, StepStatus, WorkflowCallbacks, create_callbacks_with_event_capture
from .captor import get_event_captor, set_event_captor
from .capture import EventCaptureManager
from .config import CaptureConfig, ConfigError
from .integrations.ag2_classic import install_ag2_hooks, uninstall_ag2_hooks
from .run import RunHandle, SyncRunHandle, capture_run, capture_run_sync, start_run, start_run_sync
from .store import (
    DatabaseURLError,
    EventRepository,
    ExecutionEvent,
    File,
    Message,
    WorkflowRepository,
    WorkflowRun,
    make_engine,
    migrate,
)

__version__ = "0.1.0"

__all__ = [
    "CaptureConfig", "ConfigError", "DatabaseURLError", "EventCaptureManager", "EventRepository",
    "ExecutionEvent", "File", "Message", "PlanInfo", "RunHandle", "StepInfo", "StepStatus", "SyncRunHandle",
    "WorkflowCallbacks",
    "WorkflowRepository", "WorkflowRun", "capture_run", "capture_run_sync", "create_callbacks_with_event_capture",
    "get_event_captor", "install_ag2_hooks", "make_engine", "migrate", "set_event_captor", "start_run", "start_run_sync",
    "uninstall_ag2_hooks",
]
