"""The demo run in Arize Phoenix: a real Phoenix server (its own venv, ``make test-phoenix``) on
127.0.0.1 with a free port and a temporary working directory, offline; spans sent live while the
demo runs and again from the database, checked through Phoenix's REST API; a screenshot of the
trace in Phoenix's UI, taken in headless Chromium, saved under ``test-artifacts/``."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cmbagent_events import demo
from cmbagent_events.cli import main
from cmbagent_events.export.otlp import make_exporter
from cmbagent_events.export.span_mapping import RunInfo
from cmbagent_events.export.spans import TraceBuilder

pytestmark = pytest.mark.phoenix

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PROJECT = "cmbagent-events"  # the resource's openinference.project.name
START_TIMEOUT_S = 300.0  # Phoenix migrates its database and builds its app at start: ~1 min on a busy machine
OFFLINE_ENV = {  # no telemetry, no external resources, no agent features reaching out
    "PHOENIX_TELEMETRY_ENABLED": "false", "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
    "PHOENIX_DISABLE_AGENT_ASSISTANT": "true", "PHOENIX_AGENTS_DISABLE_BASH": "true",
    "PHOENIX_AGENTS_DISABLE_WEB_ACCESS": "true", "PHOENIX_AGENTS_DISABLE_GITHUB": "true",
    "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
            is_json = response.headers.get_content_type() == "application/json"
            return response.status, json.loads(body) if is_json else body
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None


class Phoenix:
    def __init__(self, executable: str, work_dir: Path) -> None:
        port, grpc_port = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = work_dir / "phoenix.log"
        env = {**os.environ, **OFFLINE_ENV, "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(port),
               "PHOENIX_GRPC_PORT": str(grpc_port), "PHOENIX_WORKING_DIR": str(work_dir)}
        env.pop("PHOENIX_SQL_DATABASE_URL", None)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([executable, "serve"], cwd=work_dir, env=env, stdout=log,
                                            stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"Phoenix exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            if _get(self.url + "/healthz")[0] == 200:
                return
            time.sleep(0.5)  # polling a server that is starting, not synchronising with our own code
        pytest.fail(f"Phoenix not ready after {START_TIMEOUT_S:.0f}s:\n{self.log.read_text()[-3000:]}")

    def spans(self, trace_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = ""
        while True:
            status, body = _get(f"{self.url}/v1/projects/{PROJECT}/spans?limit=1000&trace_id={trace_id}{cursor}")
            if status == 404:  # the project appears with its first span
                return []
            assert status == 200, status
            out.extend(body["data"])
            if not body.get("next_cursor"):
                return out
            cursor = f"&cursor={body['next_cursor']}"

    def wait_spans(self, trace_id: str, count: int, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Phoenix inserts received spans in the background: poll until ``count`` are queryable."""
        deadline = time.monotonic() + timeout
        spans = self.spans(trace_id)
        while len(spans) < count and time.monotonic() < deadline:
            time.sleep(0.25)
            spans = self.spans(trace_id)
        return spans

    def barrier(self) -> None:
        """Return once Phoenix has stored everything sent before: a marker trace sent now shows up
        after them (its span inserter works through what it received in order)."""
        marker = str(uuid.uuid4())
        exporter = make_exporter(self.url)
        assert exporter.export(TraceBuilder(marker).finish(RunInfo(marker, status="completed"))).name == "SUCCESS"
        exporter.shutdown()
        assert self.wait_spans(uuid.UUID(marker).hex, 1), "the marker trace never appeared"

    def project_id(self) -> str:
        status, body = _get(self.url + "/v1/projects")
        assert status == 200
        return next(p["id"] for p in body["data"] if p["name"] == PROJECT)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    executable = os.environ.get("CMBAGENT_EVENTS_PHOENIX", "")
    if not executable or not os.access(executable, os.X_OK):
        pytest.fail("set CMBAGENT_EVENTS_PHOENIX to a Phoenix executable: run these tests with `make test-phoenix`, "
                    "which installs arize-phoenix into .venv-phoenix")
    server = Phoenix(executable, tmp_path_factory.mktemp("phoenix"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def demo_run(phoenix: Phoenix, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The offline demo, captured into SQLite and forwarded live to Phoenix as it runs."""
    tmp = tmp_path_factory.mktemp("demo")
    db = tmp / "demo.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CMBAGENT_EVENTS_OTLP_ENDPOINT", phoenix.url)
        assert demo.main(["--db", f"sqlite+aiosqlite:///{db}", "--work-dir", str(tmp / "work"), "--offline"]) == 0
    with sqlite3.connect(db) as conn:
        [(run_id,)] = conn.execute("SELECT id FROM workflow_runs").fetchall()
    return run_id, db


def _expected(db: Path, run_id: str) -> Counter[str]:
    """The span kinds the stored run must give (see export/spans.py)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT event_type, event_subtype FROM execution_events WHERE run_id = ?",
                            (run_id,)).fetchall()
    kinds: Counter[str] = Counter({"CHAIN": 1})
    for kind, sub in rows:
        if kind == "agent_call" and sub != "message":
            kinds["AGENT"] += 1
        elif kind == "llm_call":
            kinds["LLM"] += 1
        elif kind in ("tool_call", "code_exec"):
            kinds["TOOL"] += 1
    return kinds


def test_demo_run_reaches_phoenix_live_and_again_from_the_database(phoenix: Phoenix, demo_run, capsys) -> None:
    run_id, db = demo_run
    trace_id = run_id.replace("-", "")
    expected = _expected(db, run_id)
    total = sum(expected.values())
    live = phoenix.wait_spans(trace_id, total)
    assert Counter(s["span_kind"] for s in live) == expected
    by_id = {s["context"]["span_id"]: s for s in live}
    assert len(by_id) == total
    [root] = [s for s in live if s["parent_id"] is None]
    assert root["name"] == "invoke_workflow planning_and_control" and root["status_code"] == "OK"
    assert all(s["parent_id"] in by_id for s in live if s is not root)  # every parent is in the trace
    agents = [s for s in live if s["span_kind"] == "AGENT"]
    assert all(s["end_time"] >= s["start_time"] and "input.value" in s["attributes"] for s in agents)
    replies = [s for s in agents if s["name"] != "invoke_agent chat_manager"]  # a manager's reply is empty
    assert replies and all(s["attributes"]["output.value"] for s in replies)
    llm = [s for s in live if s["span_kind"] == "LLM"]
    assert all(by_id[s["parent_id"]]["span_kind"] == "AGENT" for s in llm)
    assert all(s["attributes"]["llm.token_count.prompt"] > 0 and s["attributes"]["gen_ai.request.model"] == "scripted"
               for s in llm)
    for span in llm:  # the conversation sent and the completion, as Phoenix shows them
        attributes = span["attributes"]
        sent = json.loads(attributes["gen_ai.input.messages"])
        assert sent and all(m["role"] in ("system", "user", "assistant", "tool") for m in sent)
        assert any(key.startswith("llm.input_messages") for key in attributes)
        assert any(key.startswith("llm.output_messages") for key in attributes)
    [code] = [s for s in live if s["name"] == "execute_code python"]
    assert code["attributes"]["process.exit.code"] == 0 and by_id[code["parent_id"]]["span_kind"] == "AGENT"
    tools = {s["attributes"].get("tool.name") for s in live if s["span_kind"] == "TOOL"}
    assert {"get_planck_parameters", "code_execution"} <= tools
    handoffs = [e for s in live for e in s["events"] if e["name"] == "handoff"]
    assert handoffs and all(e["attributes"]["handoff.to_agent"] for e in handoffs)

    # the stored run, exported again: the same span ids, so Phoenix still holds one copy of each
    code_ = main(["--db", f"sqlite+aiosqlite:///{db}", "export", run_id, "--otlp", phoenix.url])
    assert code_ == 0 and f"as {total} spans" in capsys.readouterr().err
    phoenix.barrier()
    again = phoenix.spans(trace_id)
    assert sorted(s["context"]["span_id"] for s in again) == sorted(by_id)


async def test_screenshot_of_the_demo_trace_in_phoenix(phoenix: Phoenix, demo_run) -> None:
    from playwright.async_api import async_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} absent: apt-get install chromium (.ci/run does)")
    run_id, db = demo_run
    trace_id = run_id.replace("-", "")
    assert phoenix.wait_spans(trace_id, sum(_expected(db, run_id).values()))
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / "phoenix-demo-trace.png"
    target.unlink(missing_ok=True)
    hosts: set[str] = set()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 1000})
            page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
            await page.goto(f"{phoenix.url}/projects/{phoenix.project_id()}/traces/{trace_id}", timeout=120_000)
            # the trace tree, drawn from our spans: the code execution is nested deep inside it
            await page.get_by_text("execute_code python").first.wait_for(timeout=120_000)
            await page.get_by_text("invoke_workflow planning_and_control").first.wait_for(timeout=30_000)
            # and the root span's details: the run's task as its input
            await page.get_by_text("Retrieve the Planck 2018 base-LCDM parameters").first.wait_for(timeout=60_000)
            await page.screenshot(path=str(target))
        finally:
            await browser.close()
    assert target.stat().st_size > 10_000
    assert hosts == {phoenix.url.split("/")[2]}, f"the UI reached beyond Phoenix: {hosts}"
