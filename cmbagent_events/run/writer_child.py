"""The writer process's main: ``python -m cmbagent_events.run.writer_child`` (see writer_process.py).

Reads messages from its standard input (a thread of its own: the pipe is drained while a batch is
being written), runs one :class:`~cmbagent_events.writer.BatchWriter` per run on its event loop, and
answers on its standard output (moved away from ``sys.stdout``: nothing printed can break a frame).
At the end of its input (the capturing process exited, or was killed) it writes everything it was
handed, closes what the capturing process closed, and exits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO

from ..bus import EventBus
from ..config import CaptureConfig
from ..records import barrier
from ..store.database import resolve_db
from ..store.sink import Batch, open_sink
from ..writer import BatchWriter, FinishValues
from ..writer.handoff import frame, read_frame, unpack
from .session import remigrate
from .writer_process import HANDOFF_BATCH

log = logging.getLogger("cmbagent_events.writer")
STATS_EVERY_S = 0.25  # how often a run's counters are compared with those last sent


class ChildRun:
    """One run's writer in the child, and what the capturing process said of its end."""

    def __init__(self, child: Child, run_id: str, spec: dict[str, Any]) -> None:
        config: CaptureConfig = spec["config"]
        url = resolve_db(spec["db_url"])
        placement = config.placement
        self.child = child
        self.run_id = run_id
        self.listen = bool(spec.get("listen"))
        self.close_timeout_s = config.close_timeout_s
        self.reporter: asyncio.Task[None] | None = None
        self.parent_final: FinishValues | None = None
        # batches form as records arrive (HANDOFF_BATCH at a time): written while the chat runs
        self.bus = EventBus(config.queue_size, min(config.buffer_size, HANDOFF_BATCH), config.queue_max_bytes)
        self.writer = BatchWriter(self.bus, open_sink(url, placement), config, run_id, spec["session_id"],
                                  run_row=spec["run_row"], prepare=lambda: remigrate(url, placement),
                                  needs_prepare=spec["needs_prepare"], final_values=self._final_values)
        self.writer.spill_dir = Path(spec["spill_dir"])  # the capturing process's, as it was at the run's start
        self.writer.add_commit_listener(self._committed)

    def stats(self) -> dict[str, Any]:
        writer = self.writer
        return {"batches_written": writer.batches_written, "records_written": writer.records_written,
                "reconnects": writer.reconnects, "spilled": writer.spilled, "spill_path": writer.spill_path,
                "last_error": writer.last_error, "run_row_written": writer.run_row_written,
                "accounted": writer.events_written + writer.spilled + self.bus.dropped}

    async def report(self) -> None:
        """The writer's counters sent whenever they change (an outage's reconnects show without a commit)."""
        sent: dict[str, Any] = {}
        while True:
            stats = self.stats()
            if stats != sent:
                self.child.send("stats", self.run_id, stats)
                sent = stats
            await asyncio.sleep(STATS_EVERY_S)

    def _committed(self, batch: Batch | None) -> None:
        # (counters go with the reporter: a message per batch would wake the capturing process per batch)
        if batch is not None and self.listen:
            self.child.send("committed", self.run_id, batch)

    def _final_values(self) -> FinishValues:
        """The capturing process's closing values, with this side's drops and writes added."""
        assert self.parent_final is not None
        status, completed_ns, total, dropped, patch = self.parent_final
        meta = json.loads(patch) if isinstance(patch, str) else {}
        drops = meta.setdefault("drops", {})
        for cause, n in self.bus.drop_causes.items():
            drops[cause] = drops.get(cause, 0) + n
        capture = meta.setdefault("capture", {})
        capture["batches_written"] = self.writer.batches_written + bool(self.writer.closing_rows)  # + this one
        capture["writer"] = "process"
        if self.writer.last_error:
            capture["last_error"] = self.writer.last_error
        return status, completed_ns, total, dropped + self.bus.dropped, json.dumps(meta)


class Child:
    """The child's runs, its event loop and its answering pipe."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._send_lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.runs: dict[str, ChildRun] = {}
        self.closing: set[asyncio.Task[None]] = set()

    def send(self, *message: Any) -> None:
        head, data = frame(message)
        with self._send_lock:
            try:
                self._out.write(head)
                self._out.write(data)
                self._out.flush()
            except (OSError, ValueError):  # the capturing process is gone: nobody to tell
                pass

    def handle(self, message: tuple[Any, ...]) -> None:
        """One message, on the reader thread: records go straight into the run's bus (thread-safe),
        the rest is done on the loop."""
        kind, run_id = message[0], message[1]
        if kind == "records":
            run = self.runs.get(run_id)
            if run is None:  # cannot happen: a run is opened before its first records are sent
                log.error("cmbagent-events: records for run %s, which is not open here", run_id)
                return
            put = run.bus.put
            for record in unpack(message[2], message[3]):
                put(record)
            return
        if kind == "open":  # here, so that the records that follow find their bus
            opened = self.runs[run_id] = ChildRun(self, run_id, message[2])
            self.loop.call_soon_threadsafe(self._start, opened)
            return
        self.loop.call_soon_threadsafe(self._on_loop, message)

    def _start(self, run: ChildRun) -> None:
        run.writer.start()
        run.reporter = self.loop.create_task(run.report())

    def _on_loop(self, message: tuple[Any, ...]) -> None:
        kind, run_id = message[0], message[1]
        run = self.runs.get(run_id)
        if run is None:
            return
        if kind == "barrier":
            future: concurrent.futures.Future[bool] = concurrent.futures.Future()
            token = message[2]
            future.add_done_callback(lambda f: self.send("flushed", run_id, token, f.result(), run.stats()))
            run.bus.put_control(barrier(future))
        elif kind == "terminate":
            run.writer.terminating = True
            run.writer.request_flush()
        elif kind == "listen":
            run.listen = bool(message[2])
        elif kind == "close":
            run.parent_final = message[3]
            self._close(run, message[2])

    def _close(self, run: ChildRun, timeout: float) -> None:
        async def close() -> None:
            drained = await run.writer.aclose(timeout)
            if run.reporter is not None:
                run.reporter.cancel()
            self.runs.pop(run.run_id, None)
            self.send("closed", run.run_id, drained, run.stats(), dict(run.bus.drop_causes))

        task = self.loop.create_task(close())
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    async def finish(self) -> None:
        """The input ended: every run still open is written out (left open: its process is gone)."""
        for run in list(self.runs.values()):
            if run.parent_final is None:
                await run.writer.aclose(run.close_timeout_s, final=False)
        while self.closing:
            await asyncio.gather(*self.closing, return_exceptions=True)
        for run in self.runs.values():
            if run.reporter is not None:
                run.reporter.cancel()


def main() -> None:
    # the pipe to the capturing process is fd 1: nothing else may write there
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the capturing process decides when we stop
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    child = Child(out)
    stdin = sys.stdin.buffer
    ended = threading.Event()

    def read() -> None:
        try:
            while True:
                message = read_frame(stdin)
                if message is None:
                    break
                child.handle(message)
        except Exception:
            log.exception("cmbagent-events: the writer process could not read its input")
        finally:
            ended.set()

    threading.Thread(target=read, name="cmbagent-events-child-reader", daemon=True).start()

    async def serve() -> None:
        await asyncio.to_thread(ended.wait)
        await child.finish()

    asyncio.set_event_loop(child.loop)
    child.loop.run_until_complete(serve())


if __name__ == "__main__":
    main()
