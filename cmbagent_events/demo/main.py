"""The demo's command line: run a workflow, print its event tree and capture stats."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from ..config import CaptureConfig
from ..errors import ConfigError, DatabaseURLError
from ..integrations import flavours
from ..store.database import check_writable
from .models import (
    MODES,
    Models,
    real_model_config,
)
from .report import Outcome, report_lines, stats_lines

FLAVOURS = ("classic", "v1")


def default_flavour() -> str:
    """Classic AG2 when ``autogen`` is installed, else AG2 1.x when it is (classic otherwise, to say so)."""
    return "v1" if not flavours.classic_installed() and flavours.v1_installed() else "classic"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmbagent-events demo",
        description="Run a captured AG2 multi-agent workflow (offline unless OPENAI_API_KEY is set) and print "
                    "its event tree and capture stats.")
    parser.add_argument("--mode", choices=MODES, default="planning_and_control",
                        help="workflow to run (default: planning_and_control)")
    parser.add_argument("--db", metavar="URL", default=None,
                        help="database URL (default: $CMBAGENT_EVENTS_DB_URL or sqlite+aiosqlite:///cmbagent_events.db)")
    parser.add_argument("--work-dir", metavar="DIR", type=Path, default=None,
                        help="where the agents' code runs and writes its files (default: a new temporary dir)")
    parser.add_argument("--all", action="store_true", dest="broadcasts",
                        help="also show the GroupChatManager's broadcast copies of each message in the tree")
    parser.add_argument("--offline", action="store_true",
                        help="use the scripted model client even when OPENAI_API_KEY is set")
    parser.add_argument("--flavour", choices=FLAVOURS, default=None,
                        help="AG2 to run: classic (import autogen) or v1 (AG2 1.x, import ag2; a hub workflow, "
                             "offline only); default: classic when installed, else v1")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    out, err = sys.stdout, sys.stderr
    try:
        config = CaptureConfig.from_env()
    except ConfigError as exc:
        print(f"cmbagent-events demo: {exc}", file=err)
        return 2
    db_url = args.db or config.db_url
    work_dir = (args.work_dir or Path(tempfile.mkdtemp(prefix="cmbagent-events-demo-"))).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    if (args.flavour or default_flavour()) == "v1":
        from . import ag2_v1

        print("cmbagent-events demo: AG2 1.x hub workflow (offline, ag2.testing.TestConfig)", file=out)
        print(f"database: {db_url}\nwork dir: {work_dir}", file=out)
        return _report(lambda: ag2_v1.capture_demo(db_url, work_dir, config), db_url, args.broadcasts)
    from .workflow import capture_demo, quiet_ag2

    quiet_ag2()
    real = None if args.offline else real_model_config()
    if real is not None and importlib.util.find_spec("openai") is None:
        print("cmbagent-events demo: OPENAI_API_KEY is set but the 'openai' package is not installed "
              "(pip install 'ag2[openai]'); running offline with the scripted model client", file=err)
        real = None
    models = Models(real)
    source = "offline, scripted model client" if models.offline else f"model {models.model_name}"
    print(f"cmbagent-events demo: {args.mode} ({source})", file=out)
    print(f"database: {db_url}\nwork dir: {work_dir}", file=out)
    return _report(lambda: capture_demo(db_url, args.mode, models, work_dir, config), db_url, args.broadcasts)


def _report(capture: Callable[[], Coroutine[Any, Any, Outcome]], db_url: str, broadcasts: bool) -> int:
    """Run the captured workflow, then print what the database holds of it."""
    out, err = sys.stdout, sys.stderr
    try:
        # A capture into a read-only file would be an outage the run outlives (retries, then a spill
        # file); for the demo, whose point is the stored run, that is an error to report at once.
        check_writable(db_url)
        outcome = asyncio.run(capture())
        lines = (asyncio.run(report_lines(db_url, outcome.run_id, broadcasts=broadcasts))
                 if outcome.run_id else [])
    except (DatabaseURLError, ConfigError) as exc:
        print(f"cmbagent-events demo: {exc}", file=err)
        return 2
    for line in outcome.progress:
        print(f"  {line}", file=out)
    print(file=out)
    print("\n".join(lines), file=out)
    print(file=out)
    print("\n".join(stats_lines(outcome.stats)), file=out)
    if outcome.error is not None:
        print(f"cmbagent-events demo: the run failed: {type(outcome.error).__name__}: {outcome.error}", file=err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
