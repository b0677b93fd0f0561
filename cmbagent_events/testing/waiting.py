"""Waiting for a state in tests: a condition polled until it holds, never an amount of time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(condition: Callable[[], bool], timeout: float = 60.0, poll_s: float = 0.005) -> None:
    """Return once ``condition()`` is true; ``TimeoutError`` (the test fails) after ``timeout`` s."""
    async def poll() -> None:
        while not condition():  # noqa: ASYNC110 - a state of code that has no event to await
            await asyncio.sleep(poll_s)

    await asyncio.wait_for(poll(), timeout)
