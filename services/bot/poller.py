"""Long polling that cannot fight: poll only while holding the lease, stop at once without it.

python-telegram-bot's Updater retries a 409 Conflict forever, at a fixed pace, and deletes any
webhook when it starts. This loop instead
- polls only while this instance holds the lease (others stay on standby, healthy);
- cancels the poll in flight the moment a renewal fails;
- on a 409 anyway (an instance that shares the token but not the database) backs off with
  jitter, counts the conflict and logs at most one line a minute;
- survives every Bot API error: a 429 waits `retry_after`, anything else backs off;
- writes each batch to the inbox (inbox.py) *before* the next getUpdates confirms it, and
  never advances the offset past what MongoDB did not take;
- runs the inbox's dispatcher only while holding the lease, so one instance handles updates;
- confirms the last offset before it lets go, so the next holder starts after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings

from pymongo.errors import PyMongoError
from telegram import Update
from telegram.error import Conflict, EndPointNotFound, InvalidToken, RetryAfter, TelegramError
from telegram.ext import Application
from telegram.warnings import PTBUserWarning

from services.bot.botapi import BACKOFF_MAX_S, OUT_OF_REACH_RETRY_MAX_S, backoff_s, retry_after_s
from services.bot.inbox import Inbox
from services.bot.lease import Lease
from services.bot.status import BotStatus
from services.common.db import why
from services.common.logs import Tally
from services.common.wait import wait_for_stop

log = logging.getLogger("botstack.bot.poller")

STANDBY_RETRY_S = 1.0
LEASE_EXPIRY_MARGIN_S = 0.05  # a standby tries this long after the holder's lease would expire
LOG_EVERY_S = 60.0
# Every step of a turn is bounded (database calls by their timeouts, the long poll by its
# cancellation), so ending one takes well under this. Seen once in CI: a turn that never ended
# after an external database went away, with the bot's heartbeat alive. The bot then waits no
# longer than this, names what is stuck and where, and competes for the lease again.
TURN_END_S = 15.0


class Poller:
    def __init__(self, app: Application, lease: Lease, inbox: Inbox, status: BotStatus, poll_timeout_s: int) -> None:
        self.app = app
        self.lease = lease
        self.inbox = inbox
        self.status = status
        self.poll_timeout_s = poll_timeout_s
        self.offset: int | None = None
        self._sent_offset: int | None = None  # the offset the Bot API has seen: it confirms below it
        self._errors = 0
        self._sleep = asyncio.sleep  # a backoff's wait (a test records them instead)
        self._said = Tally(LOG_EVERY_S)  # its warnings (every turn of an outage would repeat them)

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: wait for the lease, poll while holding it. Returns with the lease still
        held when asked to stop, so the caller can finish pending updates and then release it."""
        while not stop.is_set():
            expires_in = await self._try_acquire()
            if expires_in is not None:  # standby: try again when the lease would expire, at the latest in 1 s
                await wait_for_stop(stop, min(STANDBY_RETRY_S, expires_in + LEASE_EXPIRY_MARGIN_S))
                continue
            log.info("lease acquired: this instance polls (renewing every %.0f s)", self.lease.renew_every_s)
            self.status.set(role="active", lease_holder=self.lease.holder)
            holding = asyncio.Event()  # set when this turn at the lease ends
            polling = asyncio.create_task(self._poll_forever(), name="poll")
            keeping = asyncio.create_task(self._keep_lease(), name="lease")
            stopping = asyncio.create_task(stop.wait(), name="stop")
            dispatching = asyncio.create_task(self.inbox.dispatch(self.app, holding), name="inbox")
            await asyncio.wait({polling, keeping, stopping, dispatching}, return_when=asyncio.FIRST_COMPLETED)
            holding.set()
            for task in (polling, keeping, stopping):
                task.cancel()
            await self._end_turn(polling, keeping, stopping, dispatching)
            if polling.done() and not polling.cancelled() and polling.exception():
                raise polling.exception()
            if stop.is_set():
                await self.confirm_offset()
                return
            log.warning("lease lost: polling stopped; this instance is on standby")
            self.status.set(role="standby", lease_holder=None)

    @staticmethod
    async def _end_turn(*tasks: asyncio.Task) -> None:
        """Wait for the turn's tasks to end, but not for ever (see TURN_END_S)."""
        ended, stuck = await asyncio.wait(tasks, timeout=TURN_END_S)
        for task in ended:  # retrieved here; the caller re-raises the poll's own error
            if not task.cancelled():
                task.exception()
        for task in stuck:
            log.error("the %s task did not end %.0f s after the polling turn ended; left behind, at %s",
                      task.get_name(), TURN_END_S, _awaiting(task))
            task.cancel()

    async def _try_acquire(self) -> float | None:
        """None once this instance holds the lease; otherwise the seconds until it could expire."""
        expires_in = STANDBY_RETRY_S
        bound = self.lease.renew_every_s  # a lease won later than this leaves too little of it (_keep_lease)
        try:
            if await asyncio.wait_for(self.lease.acquire(), bound):
                return None
            holder, expires_in = await asyncio.wait_for(self.lease.current_holder(), bound)
        except Exception as exc:  # the database is down or does not answer: nobody may poll
            reason = f"no answer in {bound:.0f} s" if isinstance(exc, TimeoutError) else why(exc)
            self._throttled(logging.WARNING, "lease unavailable (%s); not polling", reason)
            holder = None
        if self.status.role != "standby" or self.status.lease_holder != holder:
            log.info("standby: the polling lease is held by %s", holder or "nobody reachable")
            self.status.set(role="standby", lease_holder=holder)
        return expires_in

    async def _keep_lease(self) -> None:
        """Returns (ending the poll) as soon as a renewal fails, raises, or is still unanswered
        while a third of the lease is left. Renewals go out while two thirds are left. Without
        the bound, a database that hung (or that only this container could no longer reach)
        kept this instance polling past its lease, and alongside the standby that took it."""
        third = self.lease.renew_every_s
        while True:
            await asyncio.sleep(max(0.0, self.lease.valid_until - 2 * third - time.monotonic()))
            try:
                if not await asyncio.wait_for(self.lease.renew(), self.lease.valid_until - third - time.monotonic()):
                    return
            except TimeoutError:
                log.warning("lease renewal unanswered: polling stopped %.0f s before the lease runs out", third)
                return
            except Exception as exc:
                log.warning("lease renewal failed (%s)", why(exc))
                return

    async def _poll_forever(self) -> None:
        while True:
            try:
                self._sent_offset = self.offset
                raw = await self._get_updates(self.offset, self.poll_timeout_s)
            except Conflict as exc:
                self.status.conflict()
                await self._backoff(logging.WARNING, "409 Conflict from the Bot API (%s); another instance "
                                    "polls with this token (%d conflicts so far)", exc, self.status.conflicts)
                continue
            except InvalidToken:
                raise
            except RetryAfter as exc:
                self._throttled(logging.WARNING, "getUpdates: flood control, waiting %.0f s as Telegram asks",
                                retry_after_s(exc))
                await asyncio.sleep(retry_after_s(exc))
                continue
            except TelegramError as exc:
                await self._backoff(logging.WARNING, "getUpdates failed (%s: %s); retrying",
                                    type(exc).__name__, exc, ceiling_s=OUT_OF_REACH_RETRY_MAX_S)
                continue
            self._errors = 0
            if not raw:
                continue
            try:
                await self.inbox.store(raw)
            except PyMongoError as exc:  # not stored: not confirmed; Telegram sends them again
                await self._backoff(logging.WARNING, "inbox unavailable (%s); %d update(s) stay at Telegram",
                                    why(exc), len(raw))
                continue
            ids = [u["update_id"] for u in raw if isinstance(u, dict) and isinstance(u.get("update_id"), int)]
            if ids:
                self.offset = max(ids) + 1

    async def _get_updates(self, offset: int | None, timeout: int, limit: int = 100) -> list:
        """getUpdates as raw JSON: a malformed update must reach the inbox (to be parked), not
        fail the whole batch in Update.de_json."""
        kwargs = {"timeout": timeout, "limit": limit, "allowed_updates": Update.ALL_TYPES}
        if offset is not None:
            kwargs["offset"] = offset
        with warnings.catch_warnings():  # "use get_updates instead": on purpose, see above
            warnings.simplefilter("ignore", PTBUserWarning)
            try:
                result = await self.app.bot.do_api_request(
                    "getUpdates", api_kwargs=kwargs, read_timeout=timeout + 10, return_type=None)
            except EndPointNotFound as exc:
                # do_api_request words a 401/404 so (it cannot tell a typo in a method's name from a
                # refused token); getUpdates exists: the token was refused (revoked in @BotFather).
                raise InvalidToken(str(exc)) from exc
        return result if isinstance(result, list) else []

    async def confirm_offset(self) -> None:
        """Tell the Bot API which updates this instance took, so the next holder starts after them."""
        if self.offset is None or self.offset == self._sent_offset:
            return  # the last poll already carried it (and the API throttles repeating an offset)
        try:
            await self._get_updates(self.offset, 0, limit=1)
        except Exception as exc:  # best effort: the inbox recognises updates it already has
            log.warning("could not confirm offset %s: %s", self.offset, exc)

    async def _backoff(self, level: int, message: str, *args, ceiling_s: float = BACKOFF_MAX_S) -> None:
        self._errors += 1
        self._throttled(level, message, *args)
        await self._sleep(backoff_s(self._errors, ceiling_s))

    def _throttled(self, level: int, message: str, *args) -> None:
        count = self._said.count()
        if count is None:
            return
        if count > 1:
            message += f" ({count - 1} similar lines suppressed)"
        log.log(level, message, *args)


def _awaiting(task: asyncio.Task) -> str:
    """Where a suspended task waits: its chain of awaits, outermost first."""
    parts, coro = [], task.get_coro()
    while coro is not None and len(parts) < 16:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            parts.append(f"{frame.f_code.co_name} ({frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno})")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " -> ".join(parts) or "unknown"
