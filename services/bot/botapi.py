"""Calls to the Bot API that must not crash the bot: the start-up calls (getMe, setWebhook,
getWebhookInfo, deleteWebhook) and the poller's getUpdates.

A 429 waits exactly what Telegram asks (`retry_after`); any other TelegramError backs off with
jitter and tries again; only an invalid token is final (the caller exits 78).
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import timedelta
from typing import Awaitable, Callable, TypeVar

from telegram.error import InvalidToken, RetryAfter, TelegramError

from services.common.wait import wait_for_stop

log = logging.getLogger("botstack.bot.api")
T = TypeVar("T")
BACKOFF_MAX_S = 30.0
# getUpdates while the Bot API is out of reach (a network, a proxy or Telegram down): tried
# again at least this often, so the bot answers within seconds of Telegram answering again, not
# up to 30 s later. A failed poll costs Telegram nothing; a 409 (another instance) still waits longer.
OUT_OF_REACH_RETRY_MAX_S = 5.0


def retry_after_s(exc: RetryAfter) -> float:
    value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def backoff_s(failures: int, ceiling_s: float = BACKOFF_MAX_S) -> float:
    """1, 2, 4 ... `ceiling_s`, with jitter so instances that failed together drift apart."""
    ceiling = min(ceiling_s, 2.0 ** max(0, failures - 1))
    return random.uniform(ceiling / 2, ceiling)


async def until_it_works(what: str, call: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T | None:
    """`call()` until it succeeds (its result) or `stop` is set (None). InvalidToken is raised."""
    failures = 0
    while not stop.is_set():
        try:
            return await call()
        except InvalidToken:
            raise
        except RetryAfter as exc:
            delay = retry_after_s(exc)
            log.warning("%s: flood control, Telegram asks to wait %.0f s; waiting", what, delay)
        except TelegramError as exc:
            failures += 1
            delay = backoff_s(failures)
            log.warning("%s failed (%s: %s); retrying in %.1f s", what, type(exc).__name__, exc, delay)
        await wait_for_stop(stop, delay)
    return None
