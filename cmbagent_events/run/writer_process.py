"""The writer in a process of its own (``CMBAGENT_EVENT_WRITER=process``): the capturing process only
hands batches over.

Everything after the bus (rows, encoding, redaction, the transaction) competes with the caller's
Python for one GIL when it runs on a thread: beside a CPU-bound chat both get slower. Here a child
process (``python -m cmbagent_events.run.writer_child``, one per capturing process, started by its
first run in process mode, serving all its runs) runs the very same :class:`~cmbagent_events.writer.
BatchWriter` per run, on the other core; the capturing process's part, the *courier*, takes small
batches from the run's bus on the writer loop and pickles them in one C call each (handoff.py).

What each guarantee becomes:
- bounded memory: the run's bus bounds what waits here; the child's own bus bounds what waits there;
  drops on either side are counted by cause, and the child's are added to the run's at the close;
- flush barriers: a barrier travels with the batches and comes back once the child committed it;
- outage retry, spill, SIGTERM drain: the child's writer does them; SIGTERM here is sent on to it
  (the child is in a session of its own: a signal to this process group does not reach it);
- subscribers and OTLP after commit: the child sends committed batches back while anyone listens;
- SIGKILL of this process: the child reads the end of its pipe and writes everything it was handed
  (the run is then left ``running``, for ``close-orphans`` to mark abandoned);
- the child dies: what it held and had not reported committed is counted (``writer process died``)
  and the run goes on with a writer thread in this process (the fallback).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..bus import WRITER_ERROR, EventBus
from ..config import CaptureConfig
from ..records import BARRIER, EventRecord
from ..store.database import Database
from ..writer import BatchWriter, FinishValues
from ..writer.fallbacks import resolve
from ..writer.handoff import describe, frame, given_up, pack, read_frame
from ..writer.listeners import CommitListener, CommitListeners
from ..writer.spill import spill_dir
from ..writer.task import DrainTask

log = logging.getLogger("cmbagent_events.writer")

HANDOFF_BATCH = 64  # records per handoff: small, so the child writes while the chat runs
HANDOFF_BYTES = 4 << 20  # ... and at most this heavy (bus weights): the pickled copy is transient memory
WRITER_DIED = "writer process died"  # drop cause: handed to a child that died before committing them
_tokens = itertools.count(1)


class WriterProcess:
    """The child process and the two ends of its pipes; one per capturing process."""

    def __init__(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (package_root, env.get("PYTHONPATH"))))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "cmbagent_events.run.writer_child"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env, close_fds=True, start_new_session=True)
        self.pid = self._proc.pid
        assert self._proc.stdin is not None
        self._stdin_fd = self._proc.stdin.fileno()  # written with os.writev: one system call per message
        self._send_lock = threading.Lock()
        self._runs: dict[str, ProcessWriter] = {}
        self.alive = True
        self._reader = threading.Thread(target=self._read, name="cmbagent-events-writer-process", daemon=True)
        self._reader.start()

    def attach(self, writer: ProcessWriter) -> None:
        self._runs[writer.run_id] = writer

    def detach(self, run_id: str) -> None:
        self._runs.pop(run_id, None)

    def send(self, *message: Any) -> bool:
        """One message to the child (from any thread); False once it is gone."""
        head, data = frame(message)
        with self._send_lock:
            if not self.alive:
                return False
            try:
                _write_all(self._stdin_fd, head, data)
            except (OSError, ValueError):  # a broken pipe: the child died (the reader sees it too)
                self.alive = False
                return False
        return True

    def _read(self) -> None:
        stdout: Any = self._proc.stdout
        assert stdout is not None
        try:
            while True:
                message = read_frame(stdout)
                if message is None:
                    break
                writer = self._runs.get(message[1])
                if writer is not None:
                    writer.on_message(message)
        except Exception:
            log.exception("cmbagent-events: reading the writer process failed")
        with self._send_lock:
            self.alive = False
        code = self._proc.wait()
        runs = list(self._runs.values())
        self._runs.clear()
        if runs:
            log.error("cmbagent-events: the writer process (pid %d) exited with %s while %d run(s) were open; "
                      "they go on with a writer thread", self.pid, code, len(runs))
        for writer in runs:
            writer.on_process_died()
        with _shared_lock:
            if _shared and _shared[0] is self:
                _shared.clear()

    def leave_pipes(self) -> None:
        """In a forked copy of this process: the pipes' descriptors replaced by /dev/null."""
        try:
            null = os.open(os.devnull, os.O_RDWR)
        except OSError:
            return
        try:
            for stream in (self._proc.stdin, self._proc.stdout):
                if stream is not None:
                    os.dup2(null, stream.fileno())
        except (OSError, ValueError):
            pass
        finally:
            os.close(null)

    def close(self) -> None:
        """End the child's input (it finishes what it holds, then exits) and wait for it (bounded)."""
        with self._send_lock:
            self.alive = False
            try:
                if self._proc.stdin is not None:
                    self._proc.stdin.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout=30.0)
        except subprocess.TimeoutExpired:
            log.error("cmbagent-events: the writer process (pid %d) did not exit", self.pid)


def _give_up(records: list[EventRecord]) -> int:
    """Records that will not be handed over: their barriers failed; the number of events among them."""
    events = 0
    for record in records:
        if record.kind == BARRIER:
            resolve(record.extra, False)
        elif record.seq >= 0:
            events += 1
    return events


def _write_all(fd: int, head: bytes, data: bytes) -> None:
    """``head`` then ``data`` into the pipe ``fd``, in one ``writev`` when the pipe takes it all at once
    (each system call gives the GIL away, and taking it back waits for the caller's thread)."""
    written = os.writev(fd, [head, data])
    # (rarely short: a signal; a cut through the length costs a copy)
    rest = memoryview(data)[written - len(head):] if written >= len(head) else memoryview(head[written:] + data)
    while rest:
        rest = rest[os.write(fd, rest):]


_shared: list[WriterProcess] = []
_shared_lock = threading.Lock()


def writer_process() -> WriterProcess:
    """The process's writer process, started on first use (again after it died, or in a forked child)."""
    with _shared_lock:
        if not _shared:
            _shared.append(WriterProcess())
        return _shared[0]


def writer_process_pid() -> int | None:
    """The pid of this process's writer process, if one is running (benchmarks add its CPU time)."""
    with _shared_lock:
        return _shared[0].pid if _shared and _shared[0].alive else None


def stop_writer_process() -> None:
    """Let the writer process finish and exit (at interpreter exit, after the runs closed)."""
    with _shared_lock:
        process, _shared[:] = (_shared[0] if _shared else None), []
    if process is not None:
        process.close()


def _forget_after_fork() -> None:
    """A forked child neither uses its parent's writer process nor keeps its pipe open (the writer
    process reads the end of its input as its parent's end): its copies of the pipes are pointed at
    /dev/null, so that nothing of the parent's is closed or flushed from here."""
    global _shared_lock
    for process in _shared:
        process.alive = False
        process.leave_pipes()
    _shared.clear()
    _shared_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class ProcessWriter(CommitListeners, DrainTask):
    """A run's writer as the capturing process sees it: the courier of its batches to the writer
    process, with :class:`~cmbagent_events.writer.BatchWriter`'s interface (start, flush, close,
    stats, commit listeners)."""

    def __init__(self, bus: EventBus, config: CaptureConfig, run_id: str, session_id: str, *,
                 db_url: Database, run_row: tuple[Any, ...] | None, needs_prepare: bool,
                 final_values: Callable[[], FinishValues], fallback: Callable[[tuple[Any, ...] | None], BatchWriter]
                 ) -> None:
        """``fallback(run_row)``: a writer thread for the run (``run_row``: None when the child had
        written it), for when the writer process dies."""
        CommitListeners.__init__(self)
        DrainTask.__init__(self, bus)
        self._config = config
        self.run_id = run_id
        self._open = {"db_url": db_url, "config": config, "session_id": session_id, "run_row": run_row,
                      "needs_prepare": needs_prepare, "spill_dir": str(spill_dir().resolve())}
        self._run_row = run_row
        self._final_values = final_values
        self._fallback_factory = fallback
        self._fallback: BatchWriter | None = None
        self._process: WriterProcess | None = None
        self._closing = False
        self._closed: concurrent.futures.Future[bool] = concurrent.futures.Future()
        self._barriers: dict[int, concurrent.futures.Future[bool]] = {}
        self._terminating = False
        self._error_logged = False
        self._limit = max(config.max_input_size, config.max_output_size, config.max_llm_message_size)
        self.handed_over = 0  # events sent to the child
        self.accounted = 0  # ... of which the child reported committed, spilled or counted as dropped
        self._unsent = 0  # events taken from the bus and lost with a send that failed
        self.batches_written = 0
        self.records_written = 0
        self.queue_high_water = 0
        self.last_error: str | None = None
        self.reconnects = 0
        self.spilled = 0
        self.spill_path: str | None = None

    # -- the interface the run uses ----------------------------------------------------------------
    def start(self) -> None:
        """Start the courier on the running loop (the writer loop), the child if need be."""
        self._start_task(self._run(), f"cmbagent-events-courier-{self.run_id}")
        try:
            process = self._process = writer_process()
        except Exception as exc:  # no process could be started (fork or exec refused): a writer thread
            log.error("cmbagent-events: could not start the writer process (%r); run %s uses a writer thread",
                      exc, self.run_id)
            self.on_process_died()
            return
        process.attach(self)
        if not process.send("open", self.run_id, {**self._open, "listen": bool(self._listeners)}):
            self.on_process_died()

    @property
    def terminating(self) -> bool:
        return self._terminating

    @terminating.setter
    def terminating(self, value: bool) -> None:
        """SIGTERM: the child spills what the database will not take at once (sent from this loop)."""
        self._terminating = value
        if self._fallback is not None:
            self._fallback.terminating = value
        elif value and self._loop is not None and self._process is not None:
            self._loop.call_soon_threadsafe(self._process.send, "terminate", self.run_id)

    def request_flush(self) -> concurrent.futures.Future[bool]:
        """Queue a barrier; the future is True once everything queued before it is committed."""
        if self._fallback is not None:
            return self._fallback.request_flush()
        return super().request_flush()

    def add_commit_listener(self, listener: CommitListener) -> bool:
        if self._fallback is not None:
            return self._fallback.add_commit_listener(listener)
        added = super().add_commit_listener(listener)
        if added and self._process is not None:
            self._process.send("listen", self.run_id, True)
        return added

    async def aclose(self, timeout: float) -> bool:
        """Hand everything over, then close the run in the child (its drain bounded by ``timeout``)."""
        if self._fallback is not None:
            return await self._fallback.aclose(timeout)
        deadline = time.monotonic() + timeout
        self._closing = True
        self.wake()
        if self._task is not None:  # (cancelled when the fallback took over; never cancelled by a timeout)
            await asyncio.wait({self._task}, timeout=timeout)
        if self._fallback is not None:  # the child died meanwhile
            return await self._fallback.aclose(max(deadline - time.monotonic(), 0.1))
        process = self._process
        if process is None or not process.send("close", self.run_id, max(deadline - time.monotonic(), 0.1),
                                               self._final_values()):
            return False
        try:
            return await asyncio.wait_for(asyncio.wrap_future(self._closed), timeout + 5.0)
        except TimeoutError:
            return False

    # -- the courier ---------------------------------------------------------------------------------
    async def _run(self) -> None:
        bus, event = self._bus, self._wake_event
        assert event is not None
        interval = self._config.flush_interval_ms / 1000.0
        while True:
            if len(bus) < HANDOFF_BATCH and not self._closing:
                try:
                    await asyncio.wait_for(event.wait(), interval)
                except TimeoutError:
                    pass
            event.clear()
            # (a cancel from on_process_died can be swallowed by wait_for: the fallback is checked too)
            while len(bus) and self._fallback is None:
                if len(bus) > self.queue_high_water:
                    self.queue_high_water = len(bus)
                records = bus.take(HANDOFF_BATCH, HANDOFF_BYTES)
                try:
                    sent = await self._hand_over(records)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug here: counted, logged once, the courier goes on
                    sent = self._failed(records, exc)
                finally:
                    bus.release()
                if not sent:
                    return
            if (self._closing and not len(bus)) or self._fallback is not None:
                return

    async def _hand_over(self, records: list[EventRecord]) -> bool:
        """``records`` sent, barriers among them in their place; False once the child is gone (the
        records then go to the fallback's count)."""
        process = self._process
        assert process is not None
        start = 0
        for i, record in enumerate([*records, None]):
            if record is not None and record.kind != BARRIER:
                continue
            chunk = records[start:i]
            if chunk:
                data, objects = pack(chunk)
                described = await self._describe(objects) if objects else None
                if self._fallback is not None or not process.send("records", self.run_id, data, described):
                    return self._lost_with(records[start:])
                self.handed_over += sum(1 for r in chunk if r.seq >= 0)
            start = i + 1
            if record is not None:
                token = next(_tokens)
                self._barriers[token] = record.extra
                if not process.send("barrier", self.run_id, token):
                    return self._lost_with(records[start:])
        return True

    def _failed(self, records: list[EventRecord], exc: Exception) -> bool:
        """A batch the courier could not hand over: its events counted (``writer error``)."""
        self.last_error = repr(exc)
        if not self._error_logged:
            self._error_logged = True
            log.exception("cmbagent-events: handing events to the writer process failed (counted; logged once per run)")
        self._bus.count_dropped(_give_up(records), WRITER_ERROR)
        return True

    def _lost_with(self, unsent: list[EventRecord]) -> bool:
        """The child is gone with ``unsent`` in hand: their events counted, their barriers failed."""
        lost = _give_up(unsent)
        if self._fallback is not None:  # the death is accounted for already: these come on top
            self._bus.count_dropped(lost, WRITER_DIED)
        else:
            self._unsent += lost
            self.on_process_died()
        return False

    async def _describe(self, objects: list[Any]) -> bytes:
        """Values only their own code describes, made plain on a daemon thread within the budget."""
        future: concurrent.futures.Future[bytes] = concurrent.futures.Future()
        keys, limit = self._config.secret_keys, self._limit

        def run() -> None:
            try:
                future.set_result(describe(objects, keys, limit))
            except BaseException as exc:
                future.set_exception(exc)

        timeout = self._config.user_code_timeout_s
        try:
            threading.Thread(target=run, name="cmbagent-events-user-code", daemon=True).start()
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
        except (TimeoutError, RuntimeError):
            self.last_error = f"user code did not return within {timeout:g}s"
            return given_up(objects, f"<{self.last_error}>")

    # -- what the child says (on its reader thread) -----------------------------------------------
    def on_message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "stats":
            self._take_stats(message[2])
        elif kind == "flushed":  # with the counters as they are once it is committed
            self._take_stats(message[4])
            future = self._barriers.pop(message[2], None)
            if future is not None:
                resolve(future, message[3])
        elif kind == "committed":
            loop = self._loop
            if loop is not None and self._listeners:
                loop.call_soon_threadsafe(self._notify, message[2])
        elif kind == "closed":
            self._take_stats(message[3])
            causes: dict[str, int] = message[4]
            for cause, n in causes.items():  # the child's drops: the run's stats show them too
                self._bus.count_dropped(n, cause)
            if self._process is not None:
                self._process.detach(self.run_id)
            loop = self._loop
            if loop is not None:
                loop.call_soon_threadsafe(self._stop_listeners)
            if not self._closed.done():
                self._closed.set_result(message[2])

    def _take_stats(self, stats: dict[str, Any]) -> None:
        for name in ("batches_written", "records_written", "reconnects", "spilled", "spill_path", "last_error",
                     "accounted"):
            if name in stats:
                setattr(self, name, stats[name])
        if stats.get("run_row_written"):
            self._run_row = None

    def on_process_died(self) -> None:
        """The child is gone: what it held uncommitted is counted, the run goes on with a writer thread."""
        loop = self._loop
        if loop is None or self._closed.done():
            return
        if threading.get_ident() != self._loop_thread_id:
            try:
                loop.call_soon_threadsafe(self.on_process_died)
            except RuntimeError:  # the writer loop is gone (interpreter exit): nothing left to write
                pass
            return
        if self._fallback is not None:
            return
        lost = max(self.handed_over - self.accounted, 0) + self._unsent
        self._bus.count_dropped(lost, WRITER_DIED)
        for future in self._barriers.values():
            resolve(future, False)
        self._barriers.clear()
        fallback = self._fallback = self._fallback_factory(self._run_row)
        for listener in self._listeners:
            fallback.add_commit_listener(listener)
        fallback.terminating = self._terminating
        if self._task is not None and not self._task.done() and asyncio.current_task() is not self._task:
            self._task.cancel()
        fallback.start()
        if self._closing:
            fallback.wake()
