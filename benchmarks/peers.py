"""The peers the overhead benchmark runs on the same conversations: AG2's own instrumentation.

- ``otel``: AG2's OpenTelemetry instrumentation (``autogen.opentelemetry``: ``instrument_agent`` on
  every agent and the manager, ``instrument_groupchat``, ``instrument_llm_wrapper``) into an OTel SDK
  ``TracerProvider`` with a ``BatchSpanProcessor`` and an in-memory exporter; the trial ends after
  ``force_flush`` (the peer's equivalent of our final drain). One provider per process, as an
  application would have; instrumenting the run's agents is inside the timed trial, as our hook
  installation is.
- ``openinference``: OpenInference's AG2 instrumentor (``openinference-instrumentation-ag2``:
  ``AG2Instrumentor().instrument(tracer_provider=...)``, which wraps ``ConversableAgent``'s chat,
  reply and tool methods with wrapt) into the same provider; instrumenting and uninstrumenting are
  inside the trial, then ``force_flush``.
- ``peer``: AG2's ``runtime_logging`` SQLite logger, started and stopped around the chat.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .scenarios import Chat

_otel: dict[str, Any] = {}


def _otel_provider() -> tuple[Any, Any]:
    if not _otel:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(exporter))
        _otel.update(provider=provider, exporter=exporter)
    return _otel["provider"], _otel["exporter"]


def otel_available() -> bool:
    try:
        import autogen.opentelemetry  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def otel_traced(chat: Chat) -> Iterator[None]:
    """AG2's OpenTelemetry instrumentation on ``chat`` for the duration of the block."""
    from autogen.oai import client as oai_client
    from autogen.opentelemetry import instrument_agent, instrument_llm_wrapper
    from autogen.opentelemetry.instrumentators.pattern import instrument_groupchat

    provider, exporter = _otel_provider()
    original_create = oai_client.OpenAIWrapper.create
    instrument_llm_wrapper(tracer_provider=provider)  # patches the class: undone below
    try:
        for agent in chat.agents:
            instrument_agent(agent, tracer_provider=provider)
        if chat.groupchat is not None:
            instrument_groupchat(chat.groupchat, tracer_provider=provider)
        yield
        provider.force_flush()
    finally:
        oai_client.OpenAIWrapper.create = original_create
    spans = len(exporter.get_finished_spans())
    exporter.clear()
    if not spans:
        raise RuntimeError("AG2 OpenTelemetry peer recorded no spans: the instrumentation did not apply")


def openinference_available() -> bool:
    try:
        import openinference.instrumentation.ag2  # noqa: F401
    except ImportError:
        return False
    return otel_available()


@contextlib.contextmanager
def openinference_traced() -> Iterator[None]:
    """OpenInference's AG2 instrumentor for the duration of the block."""
    from openinference.instrumentation.ag2 import AG2Instrumentor

    provider, exporter = _otel_provider()
    instrumentor = AG2Instrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield
        provider.force_flush()
    finally:
        instrumentor.uninstrument()
    spans = len(exporter.get_finished_spans())
    exporter.clear()
    if not spans:
        raise RuntimeError("OpenInference peer recorded no spans: the instrumentation did not apply")


@contextlib.contextmanager
def runtime_logged(db_path: Path) -> Iterator[None]:
    """AG2's runtime_logging (SQLite) for the duration of the block."""
    import autogen.runtime_logging as runtime_logging

    runtime_logging.start(logger_type="sqlite", config={"dbname": str(db_path)})
    try:
        yield
    finally:
        runtime_logging.stop()
