"""Flood-safe sending: every Bot API call the bot makes passes python-telegram-bot's
AIORateLimiter, plus the one limit it leaves out.

Telegram's published limits: about 1 message per second in one chat, 20 per minute in one group,
30 per second overall. AIORateLimiter keeps the group and overall limits and, on a 429, waits
`retry_after` and retries (it pauses every request meanwhile, as Telegram asks). It does not
pace private chats, so a bot answering one busy user in a burst collects 429s; this subclass
adds a per-chat limiter for them. A reply that still fails after the retries makes its handler
raise, and the inbox handles the update again later: no reply is dropped silently.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiolimiter import AsyncLimiter
from telegram.error import NetworkError
from telegram.ext import AIORateLimiter

from services.bot.inbox import out_of_reach
from services.common.settings import Settings

if TYPE_CHECKING:
    from services.bot.status import BotStatus

log = logging.getLogger("botstack.bot.flood")

PRUNE_ABOVE = 1024  # per-chat limiters kept; idle ones are dropped beyond this


def _paced(rate: float, period_s: float) -> tuple[float, float]:
    """`rate` per `period_s`, as one call per 1/rate of the period: aiolimiter's bucket would
    otherwise let a whole period's worth through at once, and Telegram counts in sliding windows."""
    return (1, period_s / rate) if rate else (0, 0)


class FloodSafeLimiter(AIORateLimiter):
    """Also the one place every Bot API call passes: with `status`, it publishes since when the
    Bot API is out of reach (no connection, a timeout, Telegram's 5xx; not a 400 nor a 429) for
    the sidecar, in polling and webhook mode alike, and calls `on_back` when it answers again.
    A call that fails after a later one was answered (its 502 was on its way, or a long poll
    began before the outage ended) says nothing new: it neither starts an outage nor extends one."""

    def __init__(self, settings: Settings, status: BotStatus | None = None,
                 on_back: Callable[[], Awaitable[object]] | None = None) -> None:
        overall_rate, overall_period = _paced(settings.rate_overall_per_s, 1)
        group_rate, group_period = _paced(settings.rate_group_per_min, 60)
        super().__init__(
            overall_max_rate=overall_rate,
            overall_time_period=overall_period,
            group_max_rate=group_rate,
            group_time_period=group_period,
            max_retries=settings.rate_max_retries,
        )
        self._chat_rate = settings.rate_chat_per_s
        self._chats: dict[int, AsyncLimiter] = {}
        self._status = status
        self._on_back = on_back
        self.answered_at = 0.0  # monotonic: when a call was last answered (the inbox reads it too)

    def _chat_limiter(self, chat_id: int) -> AsyncLimiter:
        limiter = self._chats.get(chat_id)
        if limiter is None:
            if len(self._chats) > PRUNE_ABOVE:
                for key, idle in list(self._chats.items()):
                    if idle.has_capacity(idle.max_rate):
                        del self._chats[key]
            limiter = self._chats[chat_id] = AsyncLimiter(*_paced(self._chat_rate, 1))
        return limiter

    async def process_request(self, callback, args: Any, kwargs: dict[str, Any], endpoint: str,
                              data: dict[str, Any], rate_limit_args: int | None):
        started = time.monotonic()
        try:
            result = await self._paced_request(callback, args, kwargs, endpoint, data, rate_limit_args)
        except NetworkError as exc:  # a 429 (RetryAfter) is flood control, not Telegram out of reach
            if self._status is not None and out_of_reach(exc):
                self._status.api_call_failed()
                if started > self.answered_at:
                    self._status.api_failed(endpoint, exc)
            raise
        self.answered_at = time.monotonic()
        if self._status is not None and self._status.api_answered() and self._on_back is not None:
            try:
                await self._on_back()
            except Exception as exc:  # best effort: what waited for the Bot API comes back on its own
                log.warning("after the Bot API answered again: %s: %s", type(exc).__name__, exc)
        return result

    async def _paced_request(self, callback, args: Any, kwargs: dict[str, Any], endpoint: str,
                             data: dict[str, Any], rate_limit_args: int | None):
        chat_id = data.get("chat_id")
        with contextlib.suppress(TypeError, ValueError):
            chat_id = int(chat_id)
        if self._chat_rate and isinstance(chat_id, int) and chat_id > 0:  # a private chat
            async with self._chat_limiter(chat_id):
                return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)
        return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)
