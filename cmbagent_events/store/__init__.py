"""SQL storage: models, placement, schema migration, batch sinks, read repositories.

Names are loaded on first use: the capture path needs only ``schema``/``sink`` (no SQLAlchemy),
while ``models``, ``repositories`` and ``make_engine``'s engines bring SQLAlchemy in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # "X as X": re-exported names (the lazy __getattr__ below loads them at run time)
    from .models import Base as Base
    from .models import ExecutionEvent as ExecutionEvent
    from .models import File as File
    from .models import Message as Message
    from .models import WorkflowRun as WorkflowRun
    from .models import models_for as models_for
    from .placement import Placement as Placement
    from .repositories import EventRepository as EventRepository
    from .repositories import WorkflowRepository as WorkflowRepository
    from .schema import DatabaseURLError as DatabaseURLError
    from .schema import SchemaConflictError as SchemaConflictError
    from .schema import make_engine as make_engine
    from .schema import migrate as migrate
    from .schema import parse_db_url as parse_db_url

_WHERE = {
    "Base": "models", "ExecutionEvent": "models", "File": "models", "Message": "models", "WorkflowRun": "models",
    "models_for": "models", "Placement": "placement", "EventRepository": "repositories",
    "WorkflowRepository": "repositories", "DatabaseURLError": "schema", "SchemaConflictError": "schema",
    "make_engine": "schema", "migrate": "schema", "parse_db_url": "schema",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
