"""The read commands (runs, show, export, tail) on a database in a read-only place, as another user.

The database is one a real capture produced (the offline AG2 demo, in a process of its own: SQLite
in WAL mode, checkpointed into the main file), copied into a root-owned directory of mode 0555
with the file at 0444. Root may write anywhere, so the commands
run as the ``postgres`` user through ``runuser``: for that user any write there (a migrate lock
file, SQLite's ``-wal`` / ``-shm`` files, an orphaned run closed) fails. Each command must exit 0,
say nothing on stderr (a swallowed write failure is reported there), and leave the directory
byte for byte as it was. Without ``runuser`` (or root) these tests fail: they never skip.

The interpreter: the venv's own when that user can run it, else the system's of the same version
(``/root``'s pyenv is closed to other users), started with ``-S``. What it imports is copied first
into a directory any user may read (``_reader_site``): this package (its migrations mapped in, as an
install does) and the installed distributions it depends on. The checkout and its venv may then live
in a folder only root can enter (a 0700 CI clone) and the reader still runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

READER = "postgres"  # an unprivileged user every machine with the PostgreSQL server package has
# python -S -c CODE SITE_DIRS ARGS...: the given site dirs only (their .pth files included), then CODE's work.
_SITE = "import site, sys; [site.addsitedir(p) for p in sys.argv.pop(1).split(':')]; "
CLI = _SITE + "from cmbagent_events.cli import main; sys.exit(main(sys.argv[1:]))"
IMPORTS = _SITE + "import cmbagent_events.cli"


@dataclass(frozen=True)
class Place:
    directory: Path
    url: str
    python: str
    run_id: str  # what the database holds, read with sqlite3 before it was moved there
    task: str
    total_events: int
    event_types: frozenset[str]

    def listing(self) -> dict[str, tuple[int, str]]:
        """Every file in the directory: its mode and a hash of its bytes."""
        return {p.name: (stat.S_IMODE(p.stat().st_mode), hashlib.sha256(p.read_bytes()).hexdigest())
                for p in sorted(self.directory.iterdir())}


def _captured_database(work: Path) -> Path:
    """A database the offline AG2 demo captured, everything checkpointed into its main file."""
    source = work / "events.db"
    subprocess.run([sys.executable, "-m", "cmbagent_events.cli", "demo", "--offline", "--db",
                    f"sqlite+aiosqlite:///{source}", "--work-dir", str(work / "demo")],
                   check=True, capture_output=True, timeout=300, cwd=work)
    con = sqlite3.connect(source)
    try:
        busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        con.close()
    assert busy == 0
    assert source.read_bytes()[18:20] == b"\x02\x02"  # WAL mode: readers need -shm unless opened immutable
    return source


def _runner() -> str:
    """``runuser``, or a failure saying why these tests cannot run here."""
    path = shutil.which("runuser")
    if path is None:
        pytest.fail("runuser (util-linux) not found: the read-only tests run the CLI as another user")
    if os.geteuid() != 0:
        pytest.fail("the read-only tests need root, to run the CLI as another user with runuser")
    try:
        pwd.getpwnam(READER)
    except KeyError:
        pytest.fail(f"no user {READER!r} to run the CLI as (it comes with the PostgreSQL server package)")
    return path


def _as_reader(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CMBAGENT_EVENTS_", "PYTHON"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run([_runner(), "-u", READER, "--", *argv], check=False, capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env)


CHECKOUT = Path(__file__).resolve().parent.parent


def _copy_distribution(requirement: str, target: Path, seen: set[str]) -> None:
    """``requirement``'s installed files, and those of what it requires (markers honoured), into ``target``."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    wanted = Requirement(requirement)
    key = canonicalize_name(wanted.name)
    if key in seen:
        return
    seen.add(key)
    dist = metadata.distribution(wanted.name)
    for file in dist.files or ():
        source = Path(str(dist.locate_file(file)))
        if file.parts[0] == ".." or "__pycache__" in file.parts or not source.is_file():
            continue
        (target / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / file)
    for text in dist.requires or ():
        needed = Requirement(text)
        if needed.marker is None or any(needed.marker.evaluate({"extra": extra}) for extra in wanted.extras or {""}):
            _copy_distribution(str(needed).split(";")[0], target, seen)


def _reader_site(root: Path) -> Path:
    """This package and its core dependencies, copied into ``root`` (mode 0755): a site directory the
    reader can import from wherever the checkout lives."""
    root.mkdir(mode=0o755)
    shutil.copytree(CHECKOUT / "cmbagent_events", root / "cmbagent_events",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(CHECKOUT / "migrations", root / "cmbagent_events" / "migrations",
                    ignore=shutil.ignore_patterns("__pycache__"))
    import tomllib

    with (CHECKOUT / "pyproject.toml").open("rb") as handle:  # the core dependencies, as declared
        core = tomllib.load(handle)["project"]["dependencies"]
    seen: set[str] = set()
    for requirement in core:
        _copy_distribution(requirement, root, seen)
    for path in (root, *root.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


_site: list[Path] = []  # the reader's site directory, made once per test session (module fixture below)


def _site_dirs() -> str:
    return str(_site[0])


def _interpreter() -> str:
    """A Python of this version that the reader may run, with this venv's packages importable."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    tried = []
    for candidate in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if not os.path.exists(candidate):
            continue
        check = _as_reader(candidate, "-S", "-c", IMPORTS, _site_dirs())
        if check.returncode == 0:
            return candidate
        tried.append(f"{candidate}: {check.stderr.strip().splitlines()[-1:] or check.returncode}")
    pytest.fail(f"no Python {version} that user {READER!r} can run with this checkout importable "
                f"(the checkout and its venv must be readable by other users): {tried}")


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Place]:
    """A captured run's database in a root-owned 0555 directory, the file 0444."""
    _runner()
    source = _captured_database(tmp_path_factory.mktemp("capture"))
    shared = Path(tempfile.mkdtemp(prefix="cmbagent-events-site-"))  # under /tmp: other users may reach it
    shared.chmod(0o755)
    _site[:] = [_reader_site(shared / "site")]
    con = sqlite3.connect(source)
    try:
        [(run_id, task, total)] = con.execute("SELECT id, task_description, total_events FROM workflow_runs")
        types = frozenset(r[0] for r in con.execute("SELECT DISTINCT event_type FROM execution_events"))
    finally:
        con.close()
    directory = Path(tempfile.mkdtemp(prefix="cmbagent-events-ro-"))  # under /tmp: other users may reach it
    try:
        shutil.copyfile(source, directory / "events.db")
        (directory / "events.db").chmod(0o444)
        directory.chmod(0o555)
        yield Place(directory, f"sqlite+aiosqlite:///{directory / 'events.db'}", _interpreter(), run_id, task, total,
                    types)
    finally:
        directory.chmod(0o755)
        shutil.rmtree(directory)
        shutil.rmtree(shared)


def _cli(place: Place, *argv: str) -> subprocess.CompletedProcess[str]:
    """The command as the reader, from inside the read-only directory; the directory must not change."""
    before = place.listing()
    assert before == {"events.db": (0o444, before["events.db"][1])} and stat.S_IMODE(
        place.directory.stat().st_mode) == 0o555
    done = _as_reader(place.python, "-S", "-c", CLI, _site_dirs(), "--db", place.url, *argv, cwd=place.directory)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}: {done.stderr}"
    assert place.listing() == before, f"{argv} changed the read-only directory"
    return done


def test_the_reader_cannot_write_there(place: Place) -> None:
    """The premise: as the reader, creating a file in the directory fails (as root it would not)."""
    done = _as_reader(place.python, "-S", "-c", f"open({str(place.directory / 'probe')!r}, 'w')")
    assert done.returncode != 0 and "PermissionError" in done.stderr
    assert not (place.directory / "probe").exists()


def test_runs(place: Place) -> None:
    done = _cli(place, "runs")
    assert done.stderr == ""
    assert place.run_id[:8] in done.stdout and "completed" in done.stdout


def test_runs_json(place: Place) -> None:
    done = _cli(place, "runs", "--json")
    assert done.stderr == ""
    runs = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["id"], r["status"], r["total_events"]) for r in runs] == [(place.run_id, "completed",
                                                                          place.total_events)]


def test_show(place: Place) -> None:
    done = _cli(place, "show", place.run_id[:12])
    assert done.stderr == ""
    assert place.task[:40] in done.stdout
    assert {"agent_call", "tool_call", "code_exec", "handoff", "file_gen"} <= place.event_types
    for kind in place.event_types:
        assert kind in done.stdout, kind


def test_cost_and_diff(place: Place) -> None:
    done = _cli(place, "cost", place.run_id, "--json")
    assert done.stderr == ""
    cost = json.loads(done.stdout)
    assert cost["run_id"] == place.run_id and cost["total"]["events"] == place.total_events
    done = _cli(place, "diff", place.run_id, place.run_id[:13])
    assert done.stderr == "" and "no divergence" in done.stdout


def test_export(place: Place) -> None:
    done = _cli(place, "export", place.run_id)
    assert done.stderr.strip() == f"exported {place.total_events} events of run {place.run_id}"
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(place.total_events))
    assert {e["run_id"] for e in events} == {place.run_id}


@pytest.mark.parametrize("argv", [["tail", "--once", "--from-start"], ["tail", "{run_id}", "--once", "--from-start"]])
def test_tail_once(place: Place, argv: list[str]) -> None:
    done = _cli(place, *(a.format(run_id=place.run_id) for a in argv))
    assert done.stderr == ""
    shown = [line for line in done.stdout.splitlines() if line.lstrip().startswith("#") and "completed:" not in line]
    assert [int(line.split()[0][1:]) for line in shown] == list(range(place.total_events))
