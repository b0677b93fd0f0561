"""The ``cmbagent-events`` command: runs, show, tail, export, migrate, demo, serve.

Every subcommand takes ``--db URL`` (before or after its name); the default is
``CMBAGENT_EVENTS_DB_URL``, else ``sqlite+aiosqlite:///cmbagent_events.db``. ``--table-prefix`` and
``--db-schema`` (defaults ``CMBAGENT_EVENTS_TABLE_PREFIX`` / ``CMBAGENT_EVENTS_DB_SCHEMA``) find our
tables when they live beside another application's. Read commands never
create a database: a SQLite path that does not exist is an error, not an empty file. Run ids may
be abbreviated to any unique prefix. Long operations report progress on stderr when it is a
terminal. Exit codes: 0 done, 1 failed (message on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, Any

from .config import DEFAULT_DB_URL, ConfigError

EXIT_OK, EXIT_FAIL = 0, 1


class CliError(Exception):
    """A failure to report as one line on stderr (exit code 1)."""


def default_db_url() -> str:
    return os.environ.get("CMBAGENT_EVENTS_DB_URL", "").strip() or DEFAULT_DB_URL


def _placement(args: argparse.Namespace):
    """The placement of our tables: the options, else the environment (ConfigError when invalid)."""
    from .store.placement import Placement

    env = Placement.from_env()
    prefix = env.prefix if args.table_prefix is None else args.table_prefix.strip()
    schema = env.schema if args.db_schema is None else (args.db_schema.strip() or None)
    return Placement(prefix, schema)


class Progress:
    """``label: done/total`` on one stderr line, redrawn at most 10 times a second; silent when
    stderr is not a terminal."""

    def __init__(self, label: str, total: int | None, stream: IO[str] | None = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self._stream = stream or sys.stderr
        self._on = self._stream.isatty()
        self._last = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self._on and now - self._last >= 0.1:
            self._last = now
            of = f"/{self.total}" if self.total is not None else ""
            self._stream.write(f"\r{self.label}: {self.done}{of}")
            self._stream.flush()

    def finish(self) -> None:
        if self._on and self._last:
            self._stream.write("\r\033[K")
            self._stream.flush()


# -- database access --------------------------------------------------------------------------------
async def _open_reader(args: argparse.Namespace, create: bool = False):
    """A RunReader on ``args.db`` and ``args.placement`` (migrated); refuses a missing SQLite file
    unless ``create``."""
    from .store.reader import RunReader
    from .store.schema import make_engine, migrate, resolve_db

    db = resolve_db(args.db)
    if db.is_sqlite and not create and not Path(db.path or "").expanduser().exists():
        raise CliError(f"no database at {db.path!r}: capture a run first (cmbagent-events demo), "
                       "or pass --db URL / set CMBAGENT_EVENTS_DB_URL")
    await migrate(db, args.placement)
    return RunReader(make_engine(db, args.placement), args.placement)


async def _with_reader(args: argparse.Namespace, body: Callable[[Any], Awaitable[int]]) -> int:
    reader = await _open_reader(args)
    try:
        return await body(reader)
    finally:
        await reader.engine.dispose()


async def _resolve(reader, run_id: str | None) -> str:
    if run_id is None:
        run = await reader.latest_run()
        if run is None:
            raise CliError("no runs in this database yet")
        return run.id
    found = await reader.resolve_run_id(run_id)
    if found is None:
        raise CliError(f"no run {run_id!r} (or the prefix matches several runs): see cmbagent-events runs")
    return found


async def _close_orphans_quietly(reader) -> None:
    """Runs whose process died are shown (and stored) as abandoned, not as running forever."""
    from .store.orphans import close_orphans

    try:
        await close_orphans(reader.engine, placement=reader.placement)
    except Exception as exc:  # e.g. a read-only database: still list what is there
        print(f"cmbagent-events: could not close orphaned runs: {exc}", file=sys.stderr)


async def _pages(reader, run_id: str, progress: Progress, size: int = 2000) -> AsyncIterator[list]:
    """A run's events in seq order, a page at a time (keyset on seq), advancing ``progress``."""
    after = -1
    try:
        while True:
            page = await reader.events_after(run_id, after, size)
            if not page:
                return
            progress.advance(len(page))
            yield page
            after = page[-1].seq
    finally:
        progress.finish()


# -- subcommands ---------------------------------------------------------------------------------------
def cmd_runs(args: argparse.Namespace) -> int:
    from .render import runs_table

    async def body(reader) -> int:
        await _close_orphans_quietly(reader)
        runs = await reader.list_runs(limit=args.limit)
        if args.json:
            from .live.wire import dumps, run_dict

            for r in runs:
                print(dumps(run_dict(r)))
        elif not runs:
            print("no runs yet")
        else:
            print("\n".join(runs_table(runs)))
        return EXIT_OK

    return asyncio.run(_with_reader(args, body))


def cmd_show(args: argparse.Namespace) -> int:
    from .render import printable, run_header, tree_lines

    async def body(reader) -> int:
        run_id = await _resolve(reader, args.run_id)
        run = await reader.get_run(run_id)
        events = [e async for page in _pages(reader, run_id, Progress("reading events", run.total_events or None))
                  for e in page]
        print(run_header(run))
        if run.task_description:
            print(f"task: {printable(run.task_description)}")
        print("\n".join(tree_lines(events)) if events else "(no events)")
        return EXIT_OK

    return asyncio.run(_with_reader(args, body))


def cmd_export(args: argparse.Namespace) -> int:
    from .render import event_json

    if args.otlp:
        return _export_otlp(args)

    async def body(reader) -> int:
        run_id = await _resolve(reader, args.run_id)
        total = await reader.count_events(run_id)
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
        written = 0
        try:
            async for page in _pages(reader, run_id, Progress(f"exporting {run_id}", total)):
                out.write("".join(event_json(e) + "\n" for e in page))
                written += len(page)
        finally:
            if out is not sys.stdout:
                out.close()
        where = f" to {args.output}" if args.output else ""
        print(f"exported {written} events of run {run_id}{where}", file=sys.stderr)
        return EXIT_OK

    return asyncio.run(_with_reader(args, body))


def _export_otlp(args: argparse.Namespace) -> int:
    """``export RUN_ID --otlp URL``: the run as OpenTelemetry spans over OTLP/HTTP."""
    try:
        from .export.otlp import (OtlpExportError, export_stored_run, make_exporter,  # noqa: I001
                                  parse_headers)
    except ImportError as exc:
        raise CliError(f"--otlp needs the [otel] extra: pip install 'cmbagent-events[otel]' ({exc})") from None
    try:
        exporter = make_exporter(args.otlp, parse_headers(args.header or []), args.otlp_timeout)
    except ValueError as exc:
        raise CliError(str(exc)) from None

    async def body(reader) -> int:
        run_id = await _resolve(reader, args.run_id)
        progress = Progress(f"exporting {run_id}", await reader.count_events(run_id))
        try:
            summary = await export_stored_run(reader, run_id, exporter, on_page=progress.advance)
        except OtlpExportError as exc:
            raise CliError(f"{args.otlp}: {exc}") from None
        finally:
            progress.finish()
            exporter.shutdown()
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(summary.span_counts.items()))
        print(f"exported run {run_id} as {summary.spans} spans ({kinds}) to {args.otlp} "
              f"in {summary.seconds:.2f}s ({summary.spans_per_second:.0f} spans/s)", file=sys.stderr)
        return EXIT_OK

    return asyncio.run(_with_reader(args, body))


def cmd_tail(args: argparse.Namespace) -> int:
    from .live.feed import RunFeed
    from .render import describe, run_header

    def line(e, prefix: str = "") -> str:
        return f"{'  ' * (e.depth or 0)}#{e.seq} {prefix}{describe(e)}"

    async def follow(reader) -> int:
        await _close_orphans_quietly(reader)
        run_id = await _resolve(reader, args.run_id)
        if args.after_seq is not None:
            after = args.after_seq
        elif args.from_start:
            after = -1
        else:
            after = max(-1, await reader.last_seq(run_id) - args.lines)
        notifier = _notifier(args.db, args.poll)
        await notifier.start()
        try:
            async for item in RunFeed(reader, run_id, after, notifier):
                if item.kind == "run" and item.run is not None:
                    print(run_header(item.run), flush=True)
                elif item.kind == "events":
                    print("\n".join(line(e) for e in item.events), flush=True)
                elif item.kind == "updates":
                    print("\n".join(line(e, "completed: ") for e in item.events), flush=True)
                elif item.kind == "gap":
                    print(f"! seq {item.first}..{item.last} never stored (dropped at capture)", flush=True)
                elif item.kind == "replayed":
                    if args.once:
                        return EXIT_OK
                    if item.last_seq >= 0:
                        print("-- following (Ctrl-C to stop) --", file=sys.stderr, flush=True)
                elif item.kind == "end":
                    print(f"-- run ended: {item.run.status if item.run else 'unknown'} --", flush=True)
        finally:
            await notifier.stop()
        return EXIT_OK

    async def body(reader) -> int:
        try:
            return await asyncio.wait_for(follow(reader), args.timeout)
        except TimeoutError:
            print(f"-- stopped after {args.timeout:g}s --", file=sys.stderr)
            return EXIT_OK

    return asyncio.run(_with_reader(args, body))


def _notifier(db_url: str, poll: float):
    from .live.notify import PgNotifier, PollNotifier
    from .store.schema import resolve_db

    db = resolve_db(db_url)
    return PollNotifier(poll) if db.is_sqlite else PgNotifier(db.dsn or "")


def cmd_migrate(args: argparse.Namespace) -> int:
    from .store.schema import migrate, parse_db_url

    url = parse_db_url(args.db)
    shown = url.render_as_string(hide_password=True)
    placed = "" if args.placement.is_default else f" ({args.placement.describe()})"
    print(f"migrating {shown}{placed} ...", file=sys.stderr, flush=True)
    asyncio.run(migrate(url, args.placement))
    print(f"{shown}{placed}: schema is up to date")
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    from .writer.spill import replay

    total = 0
    for path in args.files:
        print(f"replaying {path} ...", file=sys.stderr, flush=True)
        written = asyncio.run(replay(path, args.db, args.placement))
        total += written
        print(f"{path}: {written} events written (file renamed to {path}.replayed)")
    return EXIT_OK


def cmd_close_orphans(args: argparse.Namespace) -> int:
    from .store.orphans import DEFAULT_STALE_AFTER_S, close_orphans

    async def body(reader) -> int:
        stale = DEFAULT_STALE_AFTER_S if args.stale_after is None else args.stale_after
        closed = await close_orphans(reader.engine, stale_after_s=stale, dry_run=args.dry_run,
                                     placement=reader.placement)
        verb = "would close" if args.dry_run else "closed"
        for run in closed:
            print(f"{verb} {run.run_id} as abandoned ({run.reason}): {run.total_events} events, "
                  f"{run.dropped_events} never stored")
        if not closed:
            print("no orphaned runs")
        return EXIT_OK

    return asyncio.run(_with_reader(args, body))


def cmd_demo(args: argparse.Namespace) -> int:
    if args.db_given:  # the global options reach the demo through the environment it reads
        os.environ["CMBAGENT_EVENTS_DB_URL"] = args.db
    if args.table_prefix is not None:
        os.environ["CMBAGENT_EVENTS_TABLE_PREFIX"] = args.table_prefix
    if args.db_schema is not None:
        os.environ["CMBAGENT_EVENTS_DB_SCHEMA"] = args.db_schema
    from .demo import main as demo_main  # imported here: the demo pulls in AG2

    result = demo_main(list(args.demo_args))
    return int(result or 0)


def cmd_serve(args: argparse.Namespace) -> int:
    from .live.security import ServeError
    from .live.server import serve_forever

    try:
        asyncio.run(serve_forever(args.db, args.host, args.port, args.token or None, poll_interval=args.poll,
                                  placement=args.placement))
    except ServeError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return EXIT_OK


# -- parsing ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    db_help = "database URL (default: $CMBAGENT_EVENTS_DB_URL, else sqlite+aiosqlite:///cmbagent_events.db)"
    parser = argparse.ArgumentParser(prog="cmbagent-events", description="Browse, follow and serve captured AG2 runs.")
    prefix_help = "our tables' name prefix (default: $CMBAGENT_EVENTS_TABLE_PREFIX, else none)"
    schema_help = "PostgreSQL schema of our tables (default: $CMBAGENT_EVENTS_DB_SCHEMA, else none)"
    parser.add_argument("--db", default=None, help=db_help)
    parser.add_argument("--table-prefix", default=None, help=prefix_help)
    parser.add_argument("--db-schema", default=None, help=schema_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS, help=db_help)
    common.add_argument("--table-prefix", default=argparse.SUPPRESS, help=prefix_help)
    common.add_argument("--db-schema", default=argparse.SUPPRESS, help=schema_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("runs", parents=[common], help="list runs, newest first")
    p.add_argument("--limit", type=int, default=50, help="how many runs (default 50)")
    p.add_argument("--json", action="store_true", help="one JSON object per run")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", parents=[common], help="a run's event tree")
    p.add_argument("run_id", metavar="RUN_ID", help="run id or a unique prefix of it")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("tail", parents=[common], help="follow a run live (the latest when RUN_ID is omitted)")
    p.add_argument("run_id", metavar="RUN_ID", nargs="?", help="run id or prefix (default: the latest run)")
    p.add_argument("-n", "--lines", type=int, default=20, help="stored events to show first (default 20)")
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
    return parser


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
    args = parser.parse_args(head)
    if demo_args is not None:
        args.demo_args = demo_args
    args.db_given = args.db is not None
    if args.db is None:
        args.db = default_db_url()
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
        from .errors import one_line

        print(f"cmbagent-events: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
