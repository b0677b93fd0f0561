"""SQL storage: models, schema migration, batch sinks, read repositories."""

from .models import Base, ExecutionEvent, File, Message, WorkflowRun
from .repositories import EventRepository, WorkflowRepository
from .schema import DatabaseURLError, make_engine, migrate, parse_db_url

__all__ = [
    "Base", "DatabaseURLError", "EventRepository", "ExecutionEvent", "File", "Message", "WorkflowRepository",
    "WorkflowRun", "make_engine", "migrate", "parse_db_url",
]
