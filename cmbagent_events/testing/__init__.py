"""Helpers for tests, benchmarks and the demo (never used by capture itself).

- :mod:`.postgres`: throwaway PostgreSQL servers (``PostgresServer``, ``postgres_url``);
- :mod:`.scripted_client`: an offline AG2 model client that replays scripted replies;
- :mod:`.otlp_receiver`: an OTLP/HTTP traces receiver on 127.0.0.1 (needs the ``[otel]`` extra);
- :mod:`.fake_openai`: an OpenAI-compatible chat-completions server on 127.0.0.1 for real clients;
- :mod:`.stored`: a run's stored row and event seqs, read back (``stored_run``);
- :mod:`.foreign_patch`: another library's patches over ours (``ForeignPatch``), for coexistence tests;
- :mod:`.tool_chat`: a scripted classic AG2 pair around one tool call (``adding_pair``).
"""

from .fake_openai import FakeOpenAI
from .postgres import PostgresServer, find_pg_bin, postgres_url

__all__ = ["FakeOpenAI", "PostgresServer", "find_pg_bin", "postgres_url"]
