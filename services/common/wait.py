"""One stop-aware wait: every retry loop and every periodic task sleeps through this, so a
SIGTERM never waits out a backoff."""

from __future__ import annotations

import asyncio


async def wait_for_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`, waking early when `stop` is set; True if it was."""
    if stop.is_set():
        return True
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
    except TimeoutError:
        return False
    return True


async def wait_for_either(event: asyncio.Event, stop: asyncio.Event, seconds: float | None) -> None:
    """Sleep until `event` (work to do) or `stop` is set, or up to `seconds` (None: no limit):
    a loop that waits for work wakes at once for it, and for a SIGTERM."""
    waits = {asyncio.create_task(event.wait()), asyncio.create_task(stop.wait())}
    try:
        await asyncio.wait(waits, timeout=None if seconds is None else max(0.0, seconds),
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
