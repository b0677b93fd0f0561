"""The demo's real-model path: with ``openai`` installed, OPENAI_API_KEY set and OPENAI_BASE_URL at the
fake server, ``cmbagent-events demo`` runs through AG2's real OpenAI client and captures the run
(run by make test-clients in the MARS venv, which has ag2 0.14.0 with openai)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from client_checks import Served, StoredRun

from cmbagent_events.demo.models import PLANCK_2018, SPECTRUM_FILE, spectrum_code
from cmbagent_events.testing.fake_openai import FakeOpenAI, Reply


def _engineer(request: dict[str, Any]) -> Reply | None:
    """The engineer's turns: the parameter tool first (the fake's default), code once the tool has
    answered, the end once the code ran."""
    messages = request.get("messages") or []
    if not messages or "You write Python" not in str(messages[0].get("content")):
        return None
    texts = [str(m.get("content")) for m in messages]
    if any("exitcode: 0" in t for t in texts):
        return Reply(content=f"Done: the toy TT spectrum is in {SPECTRUM_FILE}. TERMINATE")
    if any(m.get("role") == "tool" for m in messages):
        return Reply(content=spectrum_code(PLANCK_2018))  # a python code block
    return None


def test_demo_runs_through_agents_real_openai_client(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    try:
        import openai  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"openai is not installed in the test-clients venv: {exc}")
    fake_openai.rules.insert(0, _engineer)
    db = tmp_path / "demo.db"
    first = len(fake_openai.requests)
    env = {**os.environ, "OPENAI_API_KEY": "sk-fake-demo", "OPENAI_BASE_URL": fake_openai.base_url}
    result = subprocess.run([sys.executable, "-m", "cmbagent_events.demo", "--mode", "one_shot",
                             "--db", f"sqlite+aiosqlite:///{db}", "--work-dir", str(tmp_path / "work")],
                            env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "model gpt-4o-mini" in result.stdout
    served = Served.between(fake_openai, first)
    assert served.calls >= 3 and served.tool_calls == 1  # tool call, code, end

    stored = StoredRun.read(db)
    assert (stored.run["status"], stored.run["model"], stored.run["meta"]["offline"]) == ("completed", "gpt-4o-mini",
                                                                                        False)
    llm = stored.of_type("llm_call")
    assert len(llm) == served.calls
    assert sum(e["outputs"]["usage"]["prompt_tokens"] for e in llm) == served.prompt_tokens
    assert sum(e["outputs"]["usage"]["completion_tokens"] for e in llm) == served.completion_tokens
    tools = stored.of_type("tool_call")
    assert [(t["inputs"]["tool_name"], t["status"]) for t in tools] == [("get_planck_parameters", "completed")]
    assert [e["event_subtype"] for e in stored.of_type("code_exec")] == ["complete"]
    # the data file and the code file
    assert sorted(Path(f["file_path"]).name for f in stored.files) == [SPECTRUM_FILE, "toy_tt_spectrum.py"]
    assert stored.run["meta"]["usage"]["calls"] == served.calls
