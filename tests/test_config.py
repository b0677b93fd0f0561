"""CaptureConfig.from_env: every variable read, bad values rejected with the variable named."""

from __future__ import annotations

import pytest

from cmbagent_events import CaptureConfig, ConfigError
from cmbagent_events.config import DEFAULT_DB_URL


def test_defaults_without_environment() -> None:
    cfg = CaptureConfig.from_env({})
    assert cfg.enabled and cfg.track_perf and cfg.sample_rate == 1.0
    assert (cfg.max_input_size, cfg.max_output_size) == (10_000, 10_000)
    assert cfg.db_url == DEFAULT_DB_URL
    assert cfg.buffer_size == 500 and cfg.queue_size == 100_000 and cfg.flush_interval_ms == 200
    assert all((cfg.capture_agent_calls, cfg.capture_tool_calls, cfg.capture_code_exec, cfg.capture_file_gen,
                cfg.capture_handoffs, cfg.capture_messages))


def test_every_variable_is_read() -> None:
    env = {
        "CMBAGENT_ENABLE_EVENT_CAPTURE": "false", "CMBAGENT_EVENT_BUFFER_SIZE": "50",
        "CMBAGENT_EVENT_MAX_INPUT_SIZE": "100", "CMBAGENT_EVENT_MAX_OUTPUT_SIZE": "200",
        "CMBAGENT_CAPTURE_AGENT_CALLS": "0", "CMBAGENT_CAPTURE_TOOL_CALLS": "no", "CMBAGENT_CAPTURE_CODE_EXEC": "off",
        "CMBAGENT_CAPTURE_FILE_GEN": "FALSE", "CMBAGENT_CAPTURE_HANDOFFS": "False",
        "CMBAGENT_CAPTURE_MESSAGES": "false", "CMBAGENT_EVENT_SAMPLE_RATE": "0.25",
        "CMBAGENT_EVENT_TRACK_PERF": "false", "CMBAGENT_EVENTS_DB_URL": "postgresql+asyncpg://u@h/db",
        "CMBAGENT_EVENT_QUEUE_SIZE": "1000", "CMBAGENT_EVENT_FLUSH_INTERVAL_MS": "25",
    }
    cfg = CaptureConfig.from_env(env)
    assert not cfg.enabled and not cfg.track_perf
    assert (cfg.buffer_size, cfg.max_input_size, cfg.max_output_size) == (50, 100, 200)
    assert not any((cfg.capture_agent_calls, cfg.capture_tool_calls, cfg.capture_code_exec, cfg.capture_file_gen,
                    cfg.capture_handoffs, cfg.capture_messages))
    assert cfg.sample_rate == 0.25 and cfg.db_url == "postgresql+asyncpg://u@h/db"
    assert (cfg.queue_size, cfg.flush_interval_ms) == (1000, 25)


@pytest.mark.parametrize(("name", "value"), [
    ("CMBAGENT_ENABLE_EVENT_CAPTURE", "maybe"),
    ("CMBAGENT_EVENT_BUFFER_SIZE", "fifty"),
    ("CMBAGENT_EVENT_BUFFER_SIZE", "0"),
    ("CMBAGENT_EVENT_MAX_INPUT_SIZE", "-5"),
    ("CMBAGENT_EVENT_MAX_OUTPUT_SIZE", "1e3"),
    ("CMBAGENT_CAPTURE_MESSAGES", "2"),
    ("CMBAGENT_EVENT_SAMPLE_RATE", "1.5"),
    ("CMBAGENT_EVENT_SAMPLE_RATE", "nan"),
    ("CMBAGENT_EVENT_SAMPLE_RATE", "half"),
    ("CMBAGENT_EVENT_TRACK_PERF", "yes please"),
    ("CMBAGENT_EVENTS_DB_URL", "not a url"),
    ("CMBAGENT_EVENT_QUEUE_SIZE", "0"),
    ("CMBAGENT_EVENT_FLUSH_INTERVAL_MS", "soon"),
])
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        CaptureConfig.from_env({name: value})
    message = str(info.value)
    assert name in message and value in message


def test_settings_are_checked_against_each_other() -> None:
    with pytest.raises(ConfigError) as info:
        CaptureConfig.from_env({"CMBAGENT_EVENT_BUFFER_SIZE": "600", "CMBAGENT_EVENT_QUEUE_SIZE": "500"})
    message = str(info.value)
    assert "CMBAGENT_EVENT_BUFFER_SIZE (600)" in message and "CMBAGENT_EVENT_QUEUE_SIZE (500)" in message
    assert CaptureConfig(buffer_size=500, queue_size=500).buffer_size == 500  # equal is fine


def test_every_error_the_package_raises_on_purpose_is_a_capture_error() -> None:
    from cmbagent_events import errors
    from cmbagent_events.errors import DatabaseURLError, RunNotFound, ServeError

    for cls in (ConfigError, DatabaseURLError, ServeError, RunNotFound, errors.DatabaseUnavailable,
                errors.BatchRejected):
        assert issubclass(cls, errors.CaptureError), cls
    assert issubclass(ConfigError, ValueError) and issubclass(DatabaseURLError, ValueError)  # as before
