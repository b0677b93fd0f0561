"""Parsing the command line and running a subcommand: every error one line with a hint, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from ..config import DEFAULT_DB_URL, env_db_url
from ..errors import ConfigError, DatabaseURLError
from .commands import (
    cmd_close_orphans,
    cmd_cost,
    cmd_demo,
    cmd_diff,
    cmd_export,
    cmd_migrate,
    cmd_replay,
    cmd_replayable,
    cmd_runs,
    cmd_serve,
    cmd_show,
    cmd_tail,
)
from .reading import EXIT_FAIL, EXIT_OK, CliError


def _placement(args: argparse.Namespace):
    """The placement of our tables: the options, else the environment (ConfigError when invalid)."""
    from ..store.placement import Placement

    env = Placement.from_env()
    prefix = env.prefix if args.table_prefix is None else args.table_prefix.strip()
    schema = env.schema if args.db_schema is None else (args.db_schema.strip() or None)
    return Placement(prefix, schema)



# -- parsing ---------------------------------------------------------------------------------------------
class CliParser(argparse.ArgumentParser):
    """argparse with the CLI's error shape: one line on stderr with a hint, exit status 1 (not usage + 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_FAIL, f"cmbagent-events: {message} (see {self.prog} --help)\n")


def _at_least(lowest: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``lowest`` (a negative --limit is a mistake, not a slice)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be {lowest} or more, got {value}")
        return value
    return parse


def _iso_time(text: str) -> str:
    """An argparse type: an ISO date or time, checked here (the read API parses it again)."""
    from datetime import datetime

    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {text!r} (e.g. 2026-12-01 or "
                                         "2026-12-01T09:00)") from None
    return text


def _check_demo_args(demo_args: list[str]) -> None:
    """The demo's own options, checked with the CLI's error shape before the demo starts (it parses them again)."""
    from importlib import import_module

    demo = import_module("..demo", __package__)  # here, not at load: the demo pulls in AG2

    demo_parser = getattr(demo, "build_parser", None)
    if demo_parser is None:  # a stand-in demo module (tests) checks its own arguments
        return
    parser = demo_parser()
    if type(parser) is argparse.ArgumentParser:
        parser.__class__ = CliParser
    parser.parse_args(demo_args)


def build_parser() -> argparse.ArgumentParser:
    db_help = "database URL (default: $CMBAGENT_EVENTS_DB_URL, else sqlite+aiosqlite:///cmbagent_events.db)"
    parser = CliParser(prog="cmbagent-events", description="Browse, follow and serve captured AG2 runs.")
    prefix_help = "our tables' name prefix (default: $CMBAGENT_EVENTS_TABLE_PREFIX, else none)"
    schema_help = "PostgreSQL schema of our tables (default: $CMBAGENT_EVENTS_DB_SCHEMA, else none)"
    parser.add_argument("--db", default=None, help=db_help)
    parser.add_argument("--table-prefix", default=None, help=prefix_help)
    parser.add_argument("--db-schema", default=None, help=schema_help)
    common = CliParser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS, help=db_help)
    common.add_argument("--table-prefix", default=argparse.SUPPRESS, help=prefix_help)
    common.add_argument("--db-schema", default=argparse.SUPPRESS, help=schema_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CliParser)
    _add_read_commands(sub, common)
    _add_live_commands(sub, common)
    _add_store_commands(sub, common)
    return parser


def _add_read_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """runs, show, cost, diff, replayable: answers from what is stored."""
    p = sub.add_parser("runs", parents=[common], help="list runs, newest first (duration, tokens, cost)")
    p.add_argument("--limit", type=_at_least(1), default=50, help="how many runs (default 50)")
    p.add_argument("--offset", type=_at_least(0), default=0, help="skip this many of the newest runs (paging)")
    p.add_argument("--status", choices=("running", "completed", "failed", "abandoned"),
                   help="only runs with this status")
    p.add_argument("--mode", help="only runs of this mode (e.g. one_shot)")
    p.add_argument("--since", metavar="DATE", type=_iso_time,
                   help="only runs started at or after DATE (ISO, e.g. 2026-12-01 or 2026-12-01T09:00; UTC unless "
                   "it has an offset, like every time shown)")
    p.add_argument("--task", metavar="TEXT", help="only runs whose task contains TEXT (any case)")
    p.add_argument("--json", action="store_true", help="one JSON object per run")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", parents=[common], help="a run's event tree")
    p.add_argument("run_id", metavar="RUN_ID", help="run id or a unique prefix of it")
    p.add_argument("--limit", type=_at_least(1), default=None, metavar="N", help="only the first N events (big runs)")
    p.add_argument("--full", action="store_true", help="also print each error's traceback")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("cost", parents=[common], help="a run's tokens, cost and time per agent, model, step or node")
    p.add_argument("run_id", metavar="RUN_ID", help="run id or a unique prefix of it")
    p.add_argument("--by", choices=("agent", "model", "step", "node"), default="agent",
                   help="group by (default agent)")
    p.add_argument("--json", action="store_true", help="the rows and the total as one JSON object")
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser("diff", parents=[common], help="compare two runs: the first divergence, then what changed")
    p.add_argument("run_a", metavar="RUN_A", help="the first run (id or unique prefix), e.g. yesterday's")
    p.add_argument("run_b", metavar="RUN_B", help="the run compared with it")
    p.add_argument("--json", action="store_true", help="the comparison as one JSON object (first_divergence: "
                   "null when the runs did the same)")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("replayable", parents=[common], help="which model calls of a run a replay can serve")
    p.add_argument("run_id", metavar="RUN_ID", help="run id or a unique prefix of it")
    p.add_argument("--json", action="store_true", help="the answer as one JSON object")
    p.set_defaults(func=cmd_replayable)


def _add_live_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """tail, export, demo, serve: following, sending and showing runs."""
    p = sub.add_parser("tail", parents=[common], help="follow a run live (the latest when RUN_ID is omitted)")
    p.add_argument("run_id", metavar="RUN_ID", nargs="?", help="run id or prefix (default: the latest run)")
    p.add_argument("-n", "--lines", type=_at_least(0), default=20, help="stored events to show first (default 20)")
    p.add_argument("--from-start", action="store_true", help="show every stored event first")
    p.add_argument("--after-seq", type=int, default=None, help="start after this seq (resume)")
    p.add_argument("--once", action="store_true", help="print what is stored and exit, do not follow")
    p.add_argument("--timeout", type=float, default=None, help="stop following after this many seconds")
    p.add_argument("--poll", type=float, default=0.25, help="SQLite polling interval in seconds (default 0.25)")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("export", parents=[common], help="a run's events as JSON lines, in seq order")
    p.add_argument("run_id", metavar="RUN_ID", help="run id or a unique prefix of it")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument("--otlp", metavar="URL", help="send the run as OpenTelemetry GenAI spans over OTLP/HTTP "
                   "instead (e.g. http://127.0.0.1:6006 for Phoenix, http://127.0.0.1:4318 for a collector)")
    p.add_argument("--header", action="append", metavar="NAME=VALUE",
                   help="HTTP header for --otlp (repeatable), e.g. authorization=Bearer...; "
                        "default: $OTEL_EXPORTER_OTLP_HEADERS")
    p.add_argument("--otlp-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long one --otlp request may take, retries included (default 60: a busy "
                        "receiver, e.g. Phoenix at capacity, answers 503 until it has caught up)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="run the offline AG2 demo and print its trace (arguments go to the demo)",
                       add_help=False)
    p.set_defaults(func=cmd_demo, demo_args=[])

    p = sub.add_parser("serve", parents=[common], help="the live web viewer (HTTP + WebSocket)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; any other needs --token)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--token", default=os.environ.get("CMBAGENT_EVENTS_SERVE_TOKEN"),
                   help="secret clients must present (default $CMBAGENT_EVENTS_SERVE_TOKEN); "
                        "required when --host is not loopback")
    p.add_argument("--poll", type=float, default=0.25, help="SQLite polling interval in seconds (default 0.25)")
    p.set_defaults(func=cmd_serve)


def _add_store_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """migrate, replay (spill files), close-orphans: looking after the database."""
    p = sub.add_parser("migrate", parents=[common], help="create or upgrade the schema")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("replay", parents=[common],
                       help="write spill files (kept when a run's database was unreachable) into the database")
    p.add_argument("files", nargs="+", metavar="FILE", help="spill file(s), e.g. cmbagent_events_spill/RUN_ID.jsonl")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("close-orphans", parents=[common],
                       help="close runs whose process died (still 'running') as 'abandoned'")
    p.add_argument("--stale-after", type=float, default=None, metavar="SECONDS",
                   help="a run on another host is orphaned after this long without a heartbeat or event "
                        "(default 120); on this host a run whose process is gone is closed at once")
    p.add_argument("--dry-run", action="store_true", help="only list what would be closed")
    p.set_defaults(func=cmd_close_orphans)


_GLOBAL_OPTIONS = ("--db", "--table-prefix", "--db-schema")


def _split_demo(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``[global options] demo ARGS...`` -> (head, ARGS): everything after ``demo`` is the demo's."""
    i = 0
    while i < len(argv):
        if argv[i] in _GLOBAL_OPTIONS:
            i += 2
        elif argv[i].split("=", 1)[0] in _GLOBAL_OPTIONS:
            i += 1
        else:
            break
    if i < len(argv) and argv[i] == "demo":
        return argv[: i + 1], argv[i + 1:]
    return argv, None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cmbagent-events``; returns the exit code."""
    parser = build_parser()
    head, demo_args = _split_demo(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(head)  # a usage error: one line with a hint, exit 1 (CliParser.error)
    if demo_args is not None:
        _check_demo_args(demo_args)
        args.demo_args = demo_args
    args.db_given = args.db is not None
    if args.db is None:
        args.db = env_db_url()
    try:
        args.placement = _placement(args)
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `export ... | head`
        try:
            sys.stdout = open(os.devnull, "w")  # keep Python quiet at exit
        except OSError:
            pass
        return EXIT_OK
    except (CliError, ConfigError) as exc:
        print(f"cmbagent-events: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except Exception as exc:  # one line with a hint, never a traceback (unless asked for)
        if os.environ.get("CMBAGENT_EVENTS_DEBUG"):
            raise
        from ..errors import one_line

        if isinstance(exc, OSError) and exc.filename is not None:  # a file the command reads or writes
            print(f"cmbagent-events: cannot use {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAIL
        from_env = not args.db_given and isinstance(exc, DatabaseURLError) and args.db != DEFAULT_DB_URL
        print(f"cmbagent-events: {one_line(exc)}{' (from CMBAGENT_EVENTS_DB_URL)' if from_env else ''}",
              file=sys.stderr)
        return EXIT_FAIL

