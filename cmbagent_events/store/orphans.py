"""Runs whose process died (SIGKILL, power loss, OOM): found and closed as ``abandoned``.

A live run shows signs of life: its process (``meta.process``: host, pid, and where that pid means
something: the boot, the PID namespace and the process's start time) is still running, and its
writer, on a thread of its own, stamps ``meta.heartbeat`` every 15 s while the run is open. A run
still ``running`` is an orphan when its process is provably gone (same host, same boot, same PID
namespace, and no process with that pid and start time), or when nothing (heartbeat, started_at, its
newest event) happened for ``stale_after_s`` seconds. A closer in another PID namespace (a viewer
sidecar in the same pod: same hostname, its own pids) cannot see the process, so only staleness counts.

Closing one is a conditional update (``WHERE status = 'running'``, so a run finishing at that
moment wins): status ``abandoned``, ``completed_at`` = the last sign of life, ``total_events`` =
max seq + 1 and ``dropped_events`` = the seqs in that range never stored (what the dead process
still held), with ``meta.abandoned`` saying why, and ``meta.usage`` (tokens and cost, which a run's
close writes) summed from its stored model calls.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..records import USAGE_FIELDS
from .placement import Placement

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

DEFAULT_STALE_AFTER_S = 120.0  # well above the writer's heartbeat interval


def process_identity() -> dict[str, Any]:
    """What a run records about its process, so that another process can tell whether it is alive."""
    identity: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    where = _namespace()
    if where is not None:
        identity.update(where)
        start = _start_ticks(os.getpid())
        if start is not None:
            identity["start"] = start
    return identity


def _namespace() -> dict[str, str] | None:
    """This boot's id and this process's PID namespace (Linux), or None where /proc does not say."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            boot = handle.read().strip()
        return {"boot": boot, "pid_ns": os.readlink("/proc/self/ns/pid")}
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (tells a reused pid from the original)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return int(handle.read().rsplit(")", 1)[-1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _process_gone(meta: Any) -> bool:
    """True only when the run's process is provably gone: recorded on this host, in this boot and this
    PID namespace (when recorded: runs of earlier versions carry host and pid only), and no process with
    that pid and start time exists."""
    proc = meta.get("process") if isinstance(meta, dict) else None
    if not isinstance(proc, dict) or proc.get("host") != socket.gethostname():
        return False
    pid = proc.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if "pid_ns" in proc or "boot" in proc:
        here = _namespace()
        if here is None or proc.get("pid_ns") != here["pid_ns"] or proc.get("boot") != here["boot"]:
            return False  # another namespace or boot: its pids are not ours to look up
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        pass
    if isinstance(proc.get("start"), int) and _start_ticks(pid) not in (None, proc["start"]):
        return True  # the pid was reused by another process
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed child its parent has not reaped yet is dead for our purpose."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def stored_usage(outputs: Any) -> dict[str, Any]:
    """A run's usage totals (as its close writes them in ``meta.usage``) summed from its stored
    llm_call events' outputs (``{"usage": {...}}``)."""
    totals: dict[str, Any] = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost": 0.0}
    for output in outputs:
        totals["calls"] += 1
        usage = output.get("usage") if isinstance(output, dict) else None
        if not isinstance(usage, dict):
            continue
        for name in USAGE_FIELDS:
            value = usage.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                totals[name] = totals.get(name, 0) + value
    return totals


@dataclass(frozen=True)
class ClosedRun:
    run_id: str
    reason: str
    total_events: int
    dropped_events: int


def _heartbeat(meta: Any) -> datetime | None:
    stamp = meta.get("heartbeat") if isinstance(meta, dict) else None
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp)
    except ValueError:
        return None


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def close_orphans(engine: AsyncEngine, *, stale_after_s: float = DEFAULT_STALE_AFTER_S,
                        dry_run: bool = False, placement: Placement | None = None) -> list[ClosedRun]:
    """Close every orphaned run of the database (in ``placement``'s tables, default from the
    environment); returns what was (or, ``dry_run``, would be) closed."""
    from sqlalchemy import func, select, update  # not at import: run.py takes process_identity from here
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from .models import models_for

    models = models_for(Placement.from_env() if placement is None else placement)
    WorkflowRun: Any = models.WorkflowRun
    ExecutionEvent: Any = models.ExecutionEvent
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    now = datetime.now(UTC)
    closed: list[ClosedRun] = []
    async with sessions() as session:
        running = (await session.scalars(select(WorkflowRun).where(WorkflowRun.status == "running"))).all()
        for run in running:
            stats = (await session.execute(
                select(func.max(ExecutionEvent.seq), func.count(), func.max(ExecutionEvent.timestamp),
                       func.max(ExecutionEvent.completed_at))
                .where(ExecutionEvent.run_id == run.id))).one()
            max_seq, count, last_event, last_completion = stats
            seen = [aware for aware in map(_aware, (run.started_at, _heartbeat(run.meta), last_event,
                                                    last_completion)) if aware is not None]
            last_seen = max(seen) if seen else None
            if _process_gone(run.meta):
                reason = "process gone"
            elif last_seen is None or now - last_seen > timedelta(seconds=stale_after_s):
                reason = f"no sign of life for {stale_after_s:g}s"
            else:
                continue
            total = -1 if max_seq is None else int(max_seq)
            total += 1
            dropped = total - int(count)
            closed.append(ClosedRun(run.id, reason, total, dropped))
            if dry_run:
                continue
            meta = dict(run.meta) if isinstance(run.meta, dict) else {}
            meta["abandoned"] = {"reason": reason, "closed_at": now.isoformat(), "never_stored": dropped}
            if not isinstance(meta.get("usage"), dict):  # (the run's close writes it: it never came)
                outputs = (await session.scalars(select(ExecutionEvent.outputs).where(
                    ExecutionEvent.run_id == run.id, ExecutionEvent.event_type == "llm_call"))).all()
                meta["usage"] = stored_usage(outputs)
            await session.execute(
                update(WorkflowRun).where(WorkflowRun.id == run.id, WorkflowRun.status == "running")
                .values(status="abandoned", completed_at=last_seen or now, total_events=total,
                        dropped_events=dropped, meta=meta))
        await session.commit()
    return closed
