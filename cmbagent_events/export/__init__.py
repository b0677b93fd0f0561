"""Exports of captured runs to other tools (needs the ``[otel]`` extra): OpenTelemetry spans over
OTLP/HTTP, for Arize Phoenix, Langfuse, Jaeger, Grafana Tempo or an OpenTelemetry Collector.

- :mod:`.spans`: the mapping from stored events to spans (GenAI conventions, OpenInference kinds);
- :mod:`.otlp`: sending a stored run, or forwarding a live one, to an OTLP endpoint.
"""
