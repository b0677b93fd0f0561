"""One function per subcommand: ``args`` in, exit code out; failures raise :class:`CliError`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from .reading import (
    EXIT_FAIL,
    EXIT_OK,
    CliError,
    Progress,
    close_orphans_quietly,
    make_notifier,
    open_store,
    pages,
    resolve_run,
    spill_hint,
    with_reader,
    with_store,
)


def cmd_runs(args: argparse.Namespace) -> int:
    from ..render import runs_table

    async def body(reader) -> int:
        await close_orphans_quietly(reader)
        store = await open_store(args)
        try:
            runs = await store.runs(limit=args.limit, offset=args.offset, status=args.status, mode=args.mode,
                                    since=args.since, task_contains=args.task)
        finally:
            await store.aclose()
        if args.json:
            from ..live.wire import dumps, run_dict

            for r in runs:
                print(dumps(run_dict(r)))
        elif not runs:
            print("no runs yet" if not (args.status or args.mode or args.since or args.task or args.offset)
                  else "no runs match")
        else:
            print("\n".join(runs_table(runs)))
        return EXIT_OK

    return asyncio.run(with_reader(args, body))


SHOW_TREE_MAX = 20_000  # events shown as a tree (held whole); a bigger run is streamed in seq order


def cmd_show(args: argparse.Namespace) -> int:
    from ..render import describe, printable, run_header, traceback_lines, tree_lines

    async def body(reader) -> int:
        run_id = await resolve_run(reader, args.run_id)
        run = await reader.get_run(run_id)
        limit = args.limit
        wanted = run.total_events if limit is None else min(limit, run.total_events or limit)
        print(run_header(run))
        if run.task_description:
            print(f"task: {printable(run.task_description)}")
        progress = Progress("reading events", wanted or None)
        if wanted > SHOW_TREE_MAX:  # memory bounded: a page at a time, indented by depth, never the whole run
            print(f"({wanted} events: shown in seq order, indented by nesting depth; --limit for a tree of the first)")
            shown = 0
            async for page in pages(reader, run_id, progress):
                kept = page[:wanted - shown]
                for e in kept:
                    print(f"{'  ' * (e.depth or 0)}#{e.seq} {describe(e)}")
                    if args.full:
                        print("\n".join(f"{'  ' * (e.depth or 0)}   {printable(t)}" for t in traceback_lines(e)))
                shown += len(kept)
                if shown >= wanted:
                    break
            return EXIT_OK
        events = []
        async for page in pages(reader, run_id, progress):
            events.extend(page)
            if limit is not None and len(events) >= limit:
                events = events[:limit]
                break
        print("\n".join(tree_lines(events, full=args.full)) if events else "(no events)")
        if limit is not None and run.total_events > len(events):
            print(f"(first {len(events)} of {run.total_events} events: --limit)")
        return EXIT_OK

    return asyncio.run(with_reader(args, body))


def cmd_cost(args: argparse.Namespace) -> int:
    """``cost RUN_ID [--by agent|model|step|node] [--json]``: tokens, cost and time per group."""
    from ..read.rollup import total
    from ..render import cost_table, counted, duration, money

    async def body(store) -> int:
        run = await store.run(args.run_id)
        rows = await store.cost(run["id"], args.by)
        overall = total(rows)
        if args.json:
            from ..live.wire import dumps

            print(dumps({"run_id": run["id"], "by": args.by, "rows": rows, "total": overall}))
            return EXIT_OK
        print(f"run {run['id']} [{run['status']}]: {counted(overall['calls'], 'model call')}, "
              f"{counted(overall['total_tokens'], 'token')}, "
              f"{money(overall['cost'])}, {duration(overall['time_ms'])} in models, tools and code")
        print("\n".join(cost_table(rows, overall, args.by)))
        return EXIT_OK

    return asyncio.run(with_store(args, body))


def cmd_diff(args: argparse.Namespace) -> int:
    """``diff RUN_A RUN_B [--json]``: where run B first did something else than run A, and what changed."""
    from ..render import diff_lines

    async def body(store) -> int:
        result = await store.diff(args.run_a, args.run_b)
        if args.json:
            from ..live.wire import dumps

            print(dumps(result))
        else:
            print("\n".join(diff_lines(result)))
        return EXIT_OK

    return asyncio.run(with_store(args, body))


def cmd_replayable(args: argparse.Namespace) -> int:
    """``replayable RUN_ID [--json]``: which recorded model calls a replay can serve; exit 1 when some cannot."""
    from ..render import counted
    from ..replay import servable_calls

    async def body(store) -> int:
        run_id = await store.run_id(args.run_id)
        report = servable_calls(run_id, await store.llm_calls(run_id))
        if args.json:
            from ..live.wire import dumps

            print(dumps(report))
        else:
            print(f"run {run_id}: {report['servable']} of {counted(report['calls'], 'model call')} can be served "
                  "by a replay")
            for agent, calls in sorted(report["agents"].items()):
                print(f"  {agent}: {calls}")
            for call in report["not_servable"]:
                print(f"  cannot serve #{call['seq']} ({call['agent']}): {call['why'] or 'no response recorded'}")
        return EXIT_OK if report["calls"] and report["servable"] == report["calls"] else EXIT_FAIL

    return asyncio.run(with_store(args, body))


def cmd_export(args: argparse.Namespace) -> int:
    from ..render import event_json

    if args.otlp:
        return _export_otlp(args)

    async def body(reader) -> int:
        run_id = await resolve_run(reader, args.run_id)
        total = await reader.count_events(run_id)
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
        written = 0
        try:
            async for page in pages(reader, run_id, Progress(f"exporting {run_id}", total)):
                out.write("".join(event_json(e) + "\n" for e in page))
                written += len(page)
        finally:
            if out is not sys.stdout:
                out.close()
        where = f" to {args.output}" if args.output else ""
        print(f"exported {written} events of run {run_id}{where}", file=sys.stderr)
        return EXIT_OK

    return asyncio.run(with_reader(args, body))


def _export_otlp(args: argparse.Namespace) -> int:
    """``export RUN_ID --otlp URL``: the run as OpenTelemetry spans over OTLP/HTTP."""
    try:
        from ..export.otlp import (OtlpExportError, export_stored_run, make_exporter,  # noqa: I001
                                  parse_headers)
    except ImportError as exc:
        raise CliError(f"--otlp needs the [otel] extra: pip install 'cmbagent-events[otel]' ({exc})") from None
    try:
        exporter = make_exporter(args.otlp, parse_headers(args.header or []), args.otlp_timeout)
    except ValueError as exc:
        raise CliError(str(exc)) from None

    async def body(reader) -> int:
        run_id = await resolve_run(reader, args.run_id)
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

    return asyncio.run(with_reader(args, body))


def cmd_tail(args: argparse.Namespace) -> int:
    from ..live.feed import RunFeed
    from ..render import describe, run_header

    def line(e, prefix: str = "") -> str:
        return f"{'  ' * (e.depth or 0)}#{e.seq} {prefix}{describe(e)}"

    async def follow(reader) -> int:
        await close_orphans_quietly(reader)
        run_id = await resolve_run(reader, args.run_id)
        if args.after_seq is not None:
            after = args.after_seq
        elif args.from_start:
            after = -1
        else:
            after = max(-1, await reader.last_seq(run_id) - args.lines)
        feed_notifier = make_notifier(args.db, args.poll)
        await feed_notifier.start()
        try:
            async for item in RunFeed(reader, run_id, after, feed_notifier):
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
            await feed_notifier.stop()
        return EXIT_OK

    async def body(reader) -> int:
        try:
            return await asyncio.wait_for(follow(reader), args.timeout)
        except TimeoutError:
            print(f"-- stopped after {args.timeout:g}s --", file=sys.stderr)
            return EXIT_OK

    return asyncio.run(with_reader(args, body))


def cmd_migrate(args: argparse.Namespace) -> int:
    from ..store.database import parse_db_url
    from ..store.schema import migrate

    url = parse_db_url(args.db)
    shown = url.render_as_string(hide_password=True)
    placed = "" if args.placement.is_default else f" ({args.placement.describe()})"
    print(f"migrating {shown}{placed} ...", file=sys.stderr, flush=True)
    asyncio.run(migrate(url, args.placement))
    print(f"{shown}{placed}: schema is up to date")
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    from ..writer.spill import replay

    total = 0
    for path in args.files:
        if not os.path.isfile(path):
            raise CliError(f"no spill file {path!r} (`replay` stores a spill file; to replay a recorded run "
                           "offline, use cmbagent_events.replay in Python: docs/replay.md)")
        print(f"replaying {path} ...", file=sys.stderr, flush=True)
        written = asyncio.run(replay(path, args.db, args.placement))
        total += written
        print(f"{path}: {written} events written (file renamed to {path}.replayed)")
    return EXIT_OK


def cmd_close_orphans(args: argparse.Namespace) -> int:
    from ..store.orphans import DEFAULT_STALE_AFTER_S, close_orphans

    async def body(reader) -> int:
        stale = DEFAULT_STALE_AFTER_S if args.stale_after is None else args.stale_after
        closed = await close_orphans(reader.engine, stale_after_s=stale, dry_run=args.dry_run,
                                     placement=reader.placement)
        verb = "would close" if args.dry_run else "closed"
        for run in closed:
            print(f"{verb} {run.run_id} as abandoned ({run.reason}): {run.total_events} events, "
                  f"{run.dropped_events} never stored")
            hint = spill_hint(run.run_id)
            if hint:
                print(f"  {hint}")
        if not closed:
            print("no orphaned runs")
        return EXIT_OK

    return asyncio.run(with_reader(args, body))


def cmd_demo(args: argparse.Namespace) -> int:
    if args.db_given:  # the global options reach the demo through the environment it reads
        os.environ["CMBAGENT_EVENTS_DB_URL"] = args.db
    if args.table_prefix is not None:
        os.environ["CMBAGENT_EVENTS_TABLE_PREFIX"] = args.table_prefix
    if args.db_schema is not None:
        os.environ["CMBAGENT_EVENTS_DB_SCHEMA"] = args.db_schema
    from ..demo import main as demo_main  # imported here: the demo pulls in AG2

    result = demo_main(list(args.demo_args))
    return int(result or 0)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..errors import ServeError
    from ..live.server import serve_forever

    try:
        asyncio.run(serve_forever(args.db, args.host, args.port, args.token or None, poll_interval=args.poll,
                                  placement=args.placement))
    except ServeError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return EXIT_OK

