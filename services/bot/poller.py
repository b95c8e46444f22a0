"""Long polling that cannot fight: poll only while holding the lease, stop at once without it.

python-telegram-bot's Updater retries a 409 Conflict forever, at a fixed pace, and deletes any
webhook when it starts. This loop instead
- polls only while this instance holds the lease (others stay on standby, healthy);
- cancels the poll in flight the moment a renewal fails;
- on a 409 anyway (an instance that shares the token but not the database) backs off with
  jitter, counts the conflict and logs at most one line a minute;
- confirms the last offset before it lets go, so the next holder starts after it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from telegram import Update
from telegram.error import Conflict, NetworkError, TimedOut
from telegram.ext import Application

from services.bot.lease import Lease
from services.bot.status import BotStatus

log = logging.getLogger("botstack.bot.poller")

STANDBY_RETRY_S = 1.0
BACKOFF_MAX_S = 30.0
LOG_EVERY_S = 60.0


class Poller:
    def __init__(self, app: Application, lease: Lease, status: BotStatus, poll_timeout_s: int) -> None:
        self.app = app
        self.lease = lease
        self.status = status
        self.poll_timeout_s = poll_timeout_s
        self.offset: int | None = None
        self._sent_offset: int | None = None  # the offset the Bot API has seen: it confirms below it
        self._errors = 0
        self._quiet_until = 0.0
        self._suppressed = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: wait for the lease, poll while holding it. Returns with the lease still
        held when asked to stop, so the caller can finish pending updates and then release it."""
        while not stop.is_set():
            if not await self._try_acquire():
                await _wait(stop, STANDBY_RETRY_S)
                continue
            log.info("lease acquired: this instance polls (renewing every %.0f s)", self.lease.renew_every_s)
            self.status.set(role="active", lease_holder=self.lease.holder)
            polling = asyncio.create_task(self._poll_forever(), name="poll")
            keeping = asyncio.create_task(self._keep_lease(), name="lease")
            stopping = asyncio.create_task(stop.wait(), name="stop")
            await asyncio.wait({polling, keeping, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for task in (polling, keeping, stopping):
                task.cancel()
            await asyncio.gather(polling, keeping, stopping, return_exceptions=True)
            if polling.done() and not polling.cancelled() and polling.exception():
                raise polling.exception()
            if stop.is_set():
                await self.confirm_offset()
                return
            log.warning("lease lost: polling stopped; this instance is on standby")
            self.status.set(role="standby", lease_holder=None)

    async def _try_acquire(self) -> bool:
        try:
            if await self.lease.acquire():
                return True
            holder = await self.lease.current_holder()
        except Exception as exc:  # the database is down: nobody may poll
            self._throttled(logging.WARNING, "lease unavailable (%s); not polling", exc)
            holder = None
        if self.status.role != "standby" or self.status.lease_holder != holder:
            log.info("standby: the polling lease is held by %s", holder or "nobody reachable")
            self.status.set(role="standby", lease_holder=holder)
        return False

    async def _keep_lease(self) -> None:
        """Returns (ending the poll) as soon as a renewal fails or raises."""
        while True:
            await asyncio.sleep(self.lease.renew_every_s)
            try:
                if not await self.lease.renew():
                    return
            except Exception as exc:
                log.warning("lease renewal failed (%s)", exc)
                return

    async def _poll_forever(self) -> None:
        while True:
            try:
                self._sent_offset = self.offset
                updates = await self.app.bot.get_updates(
                    offset=self.offset, timeout=self.poll_timeout_s, allowed_updates=Update.ALL_TYPES
                )
            except Conflict as exc:
                self.status.conflict()
                await self._backoff(logging.WARNING, "409 Conflict from the Bot API (%s); another instance "
                                    "polls with this token (%d conflicts so far)", exc, self.status.conflicts)
                continue
            except (NetworkError, TimedOut) as exc:
                await self._backoff(logging.WARNING, "Bot API unreachable (%s); retrying", exc)
                continue
            self._errors = 0
            for update in updates:
                await self.app.update_queue.put(update)
            if updates:
                self.offset = updates[-1].update_id + 1

    async def confirm_offset(self) -> None:
        """Tell the Bot API which updates this instance took, so the next holder starts after them."""
        if self.offset is None or self.offset == self._sent_offset:
            return  # the last poll already carried it (and the API throttles repeating an offset)
        try:
            await self.app.bot.get_updates(offset=self.offset, timeout=0, limit=1)
        except Exception as exc:  # best effort: the next holder's deduplication covers the rest
            log.warning("could not confirm offset %s: %s", self.offset, exc)

    async def _backoff(self, level: int, message: str, *args) -> None:
        self._errors += 1
        ceiling = min(BACKOFF_MAX_S, 2 ** min(self._errors, 10))
        self._throttled(level, message, *args)
        await asyncio.sleep(random.uniform(ceiling / 2, ceiling))  # jitter: instances drift apart

    def _throttled(self, level: int, message: str, *args) -> None:
        now = time.monotonic()
        if now < self._quiet_until:
            self._suppressed += 1
            return
        if self._suppressed:
            message += f" ({self._suppressed} similar lines suppressed)"
        log.log(level, message, *args)
        self._quiet_until, self._suppressed = now + LOG_EVERY_S, 0


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout=timeout_s)
    except TimeoutError:
        pass
