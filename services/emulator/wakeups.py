"""A wake-up call for coroutines waiting on a bot's state (new update, webhook changed).

Not an asyncio.Event: an Event binds to the first loop that waits on it, and a BotState may be
built outside any loop or outlive one (unit tests run one asyncio.run per scenario).
"""

from __future__ import annotations

import asyncio


class Wakeup:
    def __init__(self) -> None:
        self._waiters: set[asyncio.Future] = set()

    def notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait(self, timeout_s: float | None = None) -> bool:
        """True if notified, False when `timeout_s` ran out first."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.discard(waiter)
