"""Fixtures: a real SQLite file per test and one real PostgreSQL server per test session.

The PostgreSQL server is started from the PostgreSQL 15 binaries (initdb + pg_ctl) on a private
port and data directory, as the ``postgres`` user when the tests run as root (postgres refuses to
run as root), and stopped at the end. Tests on it are skipped, with the reason, only when the
binaries are truly absent.

A make target that runs on one classic AG2 flavour sets ``CMBAGENT_EVENTS_AG2`` to
``<distribution>==<version>`` (or ``none``): the session stops with an error when the venv holds
another flavour, and an ``ag2``-marked test that skips there counts as failed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cmbagent_events import CaptureConfig, make_engine
from cmbagent_events.testing import PostgresServer, find_pg_bin

FLAVOUR_ENV = "CMBAGENT_EVENTS_AG2"
CLASSIC_AG2_DISTRIBUTIONS = ("ag2", "autogen", "cmbagent-autogen", "pyautogen")  # all install `autogen/`


def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def flavour_problem(wanted: str) -> str | None:
    """Why this interpreter is not the classic AG2 flavour ``wanted`` (None when it is)."""
    found = {d: v for d in CLASSIC_AG2_DISTRIBUTIONS if (v := _installed(d)) is not None
             and not (d == "ag2" and int(v.split(".")[0]) >= 1)}  # ag2 1.x has no `autogen` package
    if wanted == "none":
        if importlib.util.find_spec("autogen") is not None:
            return f"expected no classic AG2, found `autogen` (distributions: {found or 'unknown'})"
        return None
    distribution, _, version = wanted.partition("==")
    if distribution not in found:
        return f"{distribution} is not installed (classic AG2 distributions found: {found or 'none'})"
    if version and found[distribution] != version:
        return f"{distribution} {found[distribution]} is installed, not {version}"
    others = sorted(set(found) - {distribution})
    if others:
        return f"{', '.join(others)} installed beside {distribution}: they overwrite each other's autogen/ files"
    try:
        import autogen  # noqa: F401
    except Exception as exc:
        return f"`import autogen` fails: {exc!r}"
    return None


def pytest_configure(config: pytest.Config) -> None:
    wanted = os.environ.get(FLAVOUR_ENV)
    if wanted:
        problem = flavour_problem(wanted)
        if problem is not None:
            raise pytest.UsageError(f"{FLAVOUR_ENV}={wanted}: {problem}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """In a flavour target an AG2 test never skips: a skip there is a failure, with its reason."""
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and not hasattr(report, "wasxfail") and os.environ.get(FLAVOUR_ENV)
            and item.get_closest_marker("ag2") is not None):
        report.outcome = "failed"
        report.longrepr = f"AG2 test skipped in the {os.environ[FLAVOUR_ENV]} target: {report.longrepr}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql-15 to run these tests")
    server = PostgresServer(bin_dir)
    try:
        server.start()
    except subprocess.CalledProcessError as exc:
        server.cleanup()
        pytest.fail(f"could not start PostgreSQL: {exc.stderr or exc.stdout}")
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def pg_url(pg_server: PostgresServer) -> str:
    return pg_server.create_database("cmbagent_events_test")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on a fresh SQLite file and on the shared PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"


async def _read_session(url: str) -> AsyncIterator[AsyncSession]:
    engine = make_engine(url)
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        yield session
    await engine.dispose()


@pytest.fixture
async def db_session(db_url: str) -> AsyncIterator[AsyncSession]:
    """A read session on the same database the test captures into."""
    async for session in _read_session(db_url):
        yield session


@pytest.fixture
async def db_session_sqlite(sqlite_url: str) -> AsyncIterator[AsyncSession]:
    """A read session on the test's SQLite file (for tests that only run on SQLite)."""
    async for session in _read_session(sqlite_url):
        yield session


@pytest.fixture
def config() -> CaptureConfig:
    """Defaults, independent of the caller's environment."""
    return CaptureConfig.from_env({})


@pytest.fixture
def session_id() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _spill_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spill files (kept when a database is unreachable) go to the test's tmp dir, never the repo."""
    monkeypatch.setenv("CMBAGENT_EVENTS_SPILL_DIR", str(tmp_path / "spill"))


@pytest.fixture
def chat_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test in its own working directory with a ``chats/`` folder: CMBAgent's fork of AG2 writes
    every group chat's messages to ``./chats/*.json``."""
    cwd = tmp_path / "cwd"
    (cwd / "chats").mkdir(parents=True)
    monkeypatch.chdir(cwd)
