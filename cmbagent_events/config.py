"""Capture configuration, read from ``CMBAGENT_*`` environment variables.

The seed's variables keep their names and defaults; the added ones size the queue and
bound how long an event may wait before its batch is written. Every value is validated
once, at construction, so a typo fails loudly at ``capture_run`` entry instead of
silently capturing nothing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .redaction import DEFAULT_SECRET_KEYS

if TYPE_CHECKING:
    from .store.placement import Placement

DEFAULT_DB_URL = "sqlite+aiosqlite:///cmbagent_events.db"


def env_db_url(environ: Mapping[str, str] = os.environ) -> str:
    """``$CMBAGENT_EVENTS_DB_URL`` when set (not blank), else the default SQLite file."""
    return environ.get("CMBAGENT_EVENTS_DB_URL", "").strip() or DEFAULT_DB_URL
BROADCAST_MODES = ("fold", "each")  # CMBAGENT_CAPTURE_BROADCASTS
WRITERS = ("thread", "process")  # CMBAGENT_EVENT_WRITER: where a run's writer runs

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    """What to capture and how to batch it. Build with :meth:`from_env` or directly."""

    enabled: bool = True
    buffer_size: int = 500  # events per batch write; 500 is the measured knee (docs/architecture.md)
    max_input_size: int = 10_000  # chars kept per string in inputs
    max_output_size: int = 10_000  # chars kept per string in outputs
    capture_agent_calls: bool = True
    capture_tool_calls: bool = True
    capture_code_exec: bool = True
    capture_file_gen: bool = True
    capture_handoffs: bool = True
    capture_messages: bool = True
    sample_rate: float = 1.0  # fraction of runs captured, decided once per run
    track_perf: bool = True
    db_url: str = DEFAULT_DB_URL
    queue_size: int = 100_000  # bound of the in-memory queue; beyond it events are dropped and counted
    queue_max_bytes: int = 256 << 20  # the queue's bound in estimated payload bytes (bus.py), as queue_size
    flush_interval_ms: int = 200  # longest an event waits before its batch is written
    close_timeout_s: float = 30.0  # longest capture_run's exit waits for the final drain
    outage_close_s: float = 2.0  # at the close, how long a down database is retried before spilling
    user_code_timeout_s: float = 5.0  # longest the writer waits for a value's own __repr__/model_dump
    table_prefix: str = ""  # our tables' name prefix, to live beside another application's tables
    db_schema: str | None = None  # PostgreSQL schema for our tables (created when missing)
    broadcasts: str = "fold"  # a manager's relay of one message to N members: "fold" (one event) or "each"
    secret_keys: tuple[str, ...] = DEFAULT_SECRET_KEYS  # see redaction.py for the rules beyond these names
    otlp_endpoint: str | None = None  # also send each run live as OTLP spans here (needs the [otel] extra)
    handle_sigterm: bool = True  # SIGTERM drains open runs (run/signals.py); False leaves SIGTERM alone
    capture_llm_messages: bool = True  # model calls stored with their whole request and response (llm_calls)
    max_llm_message_size: int = 1_000_000  # bytes kept of one stored model message; beyond: cut, not replayable
    writer: str = "thread"  # "process": rows written by a writer process, beside the run (run/writer_process.py)

    def __post_init__(self) -> None:
        if self.broadcasts not in BROADCAST_MODES:
            raise ConfigError(f"CMBAGENT_CAPTURE_BROADCASTS must be one of {', '.join(BROADCAST_MODES)}, "
                              f"got {self.broadcasts!r}")
        if self.writer not in WRITERS:
            raise ConfigError(f"CMBAGENT_EVENT_WRITER must be one of {', '.join(WRITERS)}, got {self.writer!r}")
        _check_range("CMBAGENT_EVENT_BUFFER_SIZE", self.buffer_size, 1, 1_000_000)
        _check_range("CMBAGENT_EVENT_MAX_INPUT_SIZE", self.max_input_size, 16, 1 << 30)
        _check_range("CMBAGENT_EVENT_MAX_OUTPUT_SIZE", self.max_output_size, 16, 1 << 30)
        _check_range("CMBAGENT_EVENT_QUEUE_SIZE", self.queue_size, 1, 1 << 30)
        _check_range("CMBAGENT_EVENT_QUEUE_MAX_BYTES", self.queue_max_bytes, 1, 1 << 50)
        _check_range("CMBAGENT_EVENT_FLUSH_INTERVAL_MS", self.flush_interval_ms, 1, 3_600_000)
        _check_range("CMBAGENT_EVENT_MAX_LLM_MESSAGE_SIZE", self.max_llm_message_size, 1024, 1 << 30)
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ConfigError(f"CMBAGENT_EVENT_SAMPLE_RATE must be between 0.0 and 1.0, got {self.sample_rate!r}")
        if self.close_timeout_s <= 0:
            raise ConfigError(f"close_timeout_s must be positive, got {self.close_timeout_s!r}")
        if not 0 < self.user_code_timeout_s <= 3600:
            raise ConfigError(f"CMBAGENT_EVENT_USER_CODE_TIMEOUT_S must be in (0, 3600] seconds, "
                              f"got {self.user_code_timeout_s!r}")
        if not 0 <= self.outage_close_s <= 3600:
            raise ConfigError(f"CMBAGENT_EVENT_OUTAGE_CLOSE_S must be between 0 and 3600 (seconds), "
                              f"got {self.outage_close_s!r}")
        if not self.db_url or "://" not in self.db_url:
            raise ConfigError(f"CMBAGENT_EVENTS_DB_URL must be a database URL, got {self.db_url!r}")
        if self.otlp_endpoint is not None and not _is_http_url(self.otlp_endpoint):
            raise ConfigError(f"CMBAGENT_EVENTS_OTLP_ENDPOINT must be an http(s) URL, got {self.otlp_endpoint!r}")
        # Settings checked against each other: a batch larger than the queue could never fill.
        if self.buffer_size > self.queue_size:
            raise ConfigError(f"CMBAGENT_EVENT_BUFFER_SIZE ({self.buffer_size}) must not exceed "
                              f"CMBAGENT_EVENT_QUEUE_SIZE ({self.queue_size})")
        self.placement  # validates the prefix and schema  # noqa: B018

    @property
    def placement(self) -> Placement:
        """Where our tables live (prefix, schema); see :mod:`cmbagent_events.store.placement`."""
        from .store.placement import Placement

        return Placement(self.table_prefix, self.db_schema)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> CaptureConfig:
        """Read every ``CMBAGENT_*`` capture variable; unset ones keep their defaults.

        Raises:
            ConfigError: naming the variable and its value when one cannot be parsed.
        """
        d = cls()
        return cls(
            enabled=_bool(environ, "CMBAGENT_ENABLE_EVENT_CAPTURE", d.enabled),
            buffer_size=_int(environ, "CMBAGENT_EVENT_BUFFER_SIZE", d.buffer_size),
            max_input_size=_int(environ, "CMBAGENT_EVENT_MAX_INPUT_SIZE", d.max_input_size),
            max_output_size=_int(environ, "CMBAGENT_EVENT_MAX_OUTPUT_SIZE", d.max_output_size),
            capture_agent_calls=_bool(environ, "CMBAGENT_CAPTURE_AGENT_CALLS", d.capture_agent_calls),
            capture_tool_calls=_bool(environ, "CMBAGENT_CAPTURE_TOOL_CALLS", d.capture_tool_calls),
            capture_code_exec=_bool(environ, "CMBAGENT_CAPTURE_CODE_EXEC", d.capture_code_exec),
            capture_file_gen=_bool(environ, "CMBAGENT_CAPTURE_FILE_GEN", d.capture_file_gen),
            capture_handoffs=_bool(environ, "CMBAGENT_CAPTURE_HANDOFFS", d.capture_handoffs),
            capture_messages=_bool(environ, "CMBAGENT_CAPTURE_MESSAGES", d.capture_messages),
            sample_rate=_float(environ, "CMBAGENT_EVENT_SAMPLE_RATE", d.sample_rate),
            track_perf=_bool(environ, "CMBAGENT_EVENT_TRACK_PERF", d.track_perf),
            db_url=env_db_url(environ),
            queue_size=_int(environ, "CMBAGENT_EVENT_QUEUE_SIZE", d.queue_size),
            queue_max_bytes=_int(environ, "CMBAGENT_EVENT_QUEUE_MAX_BYTES", d.queue_max_bytes),
            flush_interval_ms=_int(environ, "CMBAGENT_EVENT_FLUSH_INTERVAL_MS", d.flush_interval_ms),
            outage_close_s=_float(environ, "CMBAGENT_EVENT_OUTAGE_CLOSE_S", d.outage_close_s),
            user_code_timeout_s=_float(environ, "CMBAGENT_EVENT_USER_CODE_TIMEOUT_S", d.user_code_timeout_s),
            broadcasts=(_raw(environ, "CMBAGENT_CAPTURE_BROADCASTS") or d.broadcasts).lower(),
            table_prefix=environ.get("CMBAGENT_EVENTS_TABLE_PREFIX", "").strip(),
            db_schema=environ.get("CMBAGENT_EVENTS_DB_SCHEMA", "").strip() or None,
            otlp_endpoint=_raw(environ, "CMBAGENT_EVENTS_OTLP_ENDPOINT"),
            handle_sigterm=_bool(environ, "CMBAGENT_EVENTS_HANDLE_SIGTERM", d.handle_sigterm),
            capture_llm_messages=_bool(environ, "CMBAGENT_CAPTURE_LLM_MESSAGES", d.capture_llm_messages),
            max_llm_message_size=_int(environ, "CMBAGENT_EVENT_MAX_LLM_MESSAGE_SIZE", d.max_llm_message_size),
            writer=(_raw(environ, "CMBAGENT_EVENT_WRITER") or d.writer).lower(),
        )

    def replace(self, **changes: Any) -> CaptureConfig:
        """A copy with some fields changed (validated like the original)."""
        return dataclasses.replace(self, **changes)


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _raw(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = _raw(environ, name)
    if value is None:
        return default
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    value = _raw(environ, name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    value = _raw(environ, name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if number != number:  # NaN
        raise ConfigError(f"{name} must be a number, got {value!r}")
    return number


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
