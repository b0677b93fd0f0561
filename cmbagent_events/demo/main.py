"""The demo's command line: run a workflow, print its event tree and capture stats."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import CaptureConfig, ConfigError
from ..store import DatabaseURLError
from .models import (
    MODES,
    Models,
    real_model_config,
)
from .workflow import (
    quiet_ag2,
    capture_demo,
    report_lines,
)


def stats_lines(stats: dict[str, Any]) -> list[str]:
    width = max((len(k) for k in stats), default=0)
    lines = ["capture stats:"]
    for key, value in stats.items():
        shown = f"{value:.3f}" if isinstance(value, float) else value
        lines.append(f"  {key:<{width}}  {shown}")
    return lines


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
    quiet_ag2()
    real = None if args.offline else real_model_config()
    if real is not None and importlib.util.find_spec("openai") is None:
        print("cmbagent-events demo: OPENAI_API_KEY is set but the 'openai' package is not installed "
              "(pip install 'ag2[openai]'); running offline with the scripted model client", file=err)
        real = None
    models = Models(real)
    work_dir = (args.work_dir or Path(tempfile.mkdtemp(prefix="cmbagent-events-demo-"))).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    source = "offline, scripted model client" if models.offline else f"model {models.model_name}"
    print(f"cmbagent-events demo: {args.mode} ({source})", file=out)
    print(f"database: {db_url}\nwork dir: {work_dir}", file=out)
    try:
        outcome = asyncio.run(capture_demo(db_url, args.mode, models, work_dir, config))
        lines = (asyncio.run(report_lines(db_url, outcome.run_id, broadcasts=args.broadcasts))
                 if outcome.run_id else [])
    except (DatabaseURLError, ConfigError) as exc:
        print(f"cmbagent-events demo: {exc}", file=err)
        return 2
    for line in outcome.progress:
        print(f"  {line}", file=out)
    print("", file=out)
    print("\n".join(lines), file=out)
    print("", file=out)
    print("\n".join(stats_lines(outcome.stats)), file=out)
    if outcome.error is not None:
        print(f"cmbagent-events demo: the run failed: {type(outcome.error).__name__}: {outcome.error}", file=err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
