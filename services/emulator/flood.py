"""Telegram's flood control, as a bot meets it: 429 "Too Many Requests: retry after N" with
`parameters.retry_after`, when the bot sends faster than the published limits allow.

Limits (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this): about
one message per second in a chat (short bursts pass), 20 messages per minute in a group, 30
messages per second overall. Counted over sliding windows of sendMessage calls. A call over a
limit blocks its scope (the chat, or every chat for the overall limit) for `retry_after` seconds;
calls during the block are refused with the time left (they do not prolong it).

Beyond the real server, for tests: a call that repeats a refused one (same chat, same text)
before its retry_after has passed is counted as an early retry, so a test can prove a bot obeys.
"""

from __future__ import annotations

import math
import time
from collections import deque

from services.emulator.errors import ApiError

OVERALL = "overall"
# scope -> (messages, seconds)
LIMITS = {"private": (3, 3.0), "group": (20, 60.0), OVERALL: (30, 1.0)}
COUNTED = {"sendmessage"}


class FloodControl:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.limits = dict(LIMITS)
        self.refused = 0
        self.early_retries = 0
        self._sent: dict[object, deque[float]] = {}
        self._blocked: dict[object, float] = {}
        self._refused_calls: dict[tuple[int, str], float] = {}  # (chat, text) -> not before

    def configure(self, spec: dict) -> dict:
        if "enabled" in spec:
            self.enabled = bool(spec["enabled"])
        for scope in LIMITS:
            if scope in spec:
                count, seconds = spec[scope]
                self.limits[scope] = (int(count), float(seconds))
        return self.describe()

    def describe(self) -> dict:
        return {"enabled": self.enabled, "limits": {k: list(v) for k, v in self.limits.items()},
                "refused": self.refused, "early_retries": self.early_retries}

    def check(self, method: str, params: dict) -> None:
        """Raise a 429 when this call exceeds a limit; record it as sent otherwise."""
        if not self.enabled or method.lower() not in COUNTED:
            return
        try:
            chat = int(params.get("chat_id"))
        except (TypeError, ValueError):
            return  # the method itself answers a bad chat_id
        now = time.monotonic()
        call = (chat, str(params.get("text")))
        not_before = self._refused_calls.pop(call, None)
        if not_before is not None and now < not_before:
            self.early_retries += 1
        scopes = [("group" if chat < 0 else "private", chat), (OVERALL, OVERALL)]
        for kind, key in scopes:
            wait = self._blocked.get(key, 0.0) - now  # a call while blocked learns what is left,
            if wait <= 0:                              # and does not extend the block
                wait = self._over_limit(kind, key, now)
                if wait > 0:
                    self._blocked[key] = now + math.ceil(wait)
            if wait > 0:
                retry_after = max(1, math.ceil(wait))
                self._refused_calls[call] = now + retry_after
                self.refused += 1
                raise ApiError.too_many_requests(retry_after)
        for _, key in scopes:
            self._sent.setdefault(key, deque()).append(now)

    def _over_limit(self, kind: str, key: object, now: float) -> float:
        count, seconds = self.limits[kind]
        sent = self._sent.get(key)
        if not sent:
            return 0.0
        while sent and sent[0] <= now - seconds:
            sent.popleft()
        if len(sent) < count:
            return 0.0
        return sent[0] + seconds - now
