"""Waiting for a state in tests: a condition polled until it holds, never an amount of time."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator


async def until(condition: Callable[[], bool], timeout: float = 60.0, poll_s: float = 0.005) -> None:
    """Return once ``condition()`` is true; ``TimeoutError`` (the test fails) after ``timeout`` s."""
    async def poll() -> None:
        while not condition():  # noqa: ASYNC110 - a state of code that has no event to await
            await asyncio.sleep(poll_s)

    await asyncio.wait_for(poll(), timeout)


@contextlib.contextmanager
def writer_held(timeout: float = 120.0) -> Iterator[None]:
    """The process's writer loop (every run's writer) held by a blocking call until the block ends:
    records queue up and nothing is written meanwhile, as when the writer lived on a busy caller's
    loop. For tests that need a full queue for certain."""
    from ..run.loop_thread import writer_loop

    gate, entered = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        gate.wait(timeout)

    writer_loop().loop.call_soon_threadsafe(hold)
    if not entered.wait(30):
        raise TimeoutError("the writer loop did not take the hold")
    try:
        yield
    finally:
        gate.set()
