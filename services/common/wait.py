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
