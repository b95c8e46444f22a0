"""A record of every getUpdates request of one bot: when it ran, how it ended, whether it overlapped.

The real server only tells a second poller off with a 409; a bot stack's tests need more: proof
that, after a settle point, no two instances polled at the same time. Two polls overlap when both
were in flight (received, not yet answered) with their clients still connected. A poll whose
client went away is released and does not count (see BotState._release_disconnected).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Awaitable, Callable

Probe = Callable[[], Awaitable[bool]]  # "has this poll's client disconnected?"
KEPT_RECORDS = 1000


@dataclass(eq=False)
class Poll:
    start: float  # time.monotonic()
    probe: Probe | None = None
    end: float | None = None
    outcome: str = "in flight"  # updates | empty | timeout | conflict | disconnected | error
    overlapped_at: float | None = None
    held: asyncio.Future | None = None  # set while the poll waits for updates

    def as_dict(self) -> dict:
        return {
            "start": self.start,
            "end": self.end,
            "outcome": self.outcome,
            "overlapped": self.overlapped_at is not None,
        }


class PollLog:
    def __init__(self) -> None:
        self.active: list[Poll] = []
        self.finished: deque[Poll] = deque(maxlen=KEPT_RECORDS)
        self.since = 0.0
        self.max_at_once = 0

    def begin(self, probe: Probe | None) -> Poll:
        now = time.monotonic()
        poll = Poll(start=now, probe=probe)
        for other in self.active:
            if other.overlapped_at is None:
                other.overlapped_at = now
            poll.overlapped_at = now
        self.active.append(poll)
        self.max_at_once = max(self.max_at_once, len(self.active))
        return poll

    def finish(self, poll: Poll, outcome: str) -> None:
        """Idempotent: the first outcome stands (a poll released as disconnected stays so)."""
        if poll.end is not None:
            return
        poll.end, poll.outcome, poll.probe = time.monotonic(), outcome, None
        self.active.remove(poll)
        self.finished.append(poll)

    def reset(self) -> float:
        """Start counting afresh (a test's settle point); returns the new mark."""
        self.since = time.monotonic()
        self.max_at_once = len(self.active)
        return self.since

    def overlapping(self) -> int:
        """Polls that overlapped another connected poll at or after the mark."""
        return sum(
            1 for poll in (*self.finished, *self.active)
            if poll.overlapped_at is not None and poll.overlapped_at >= self.since
        )

    def records(self) -> list[dict]:
        polls = sorted((*self.finished, *self.active), key=lambda p: p.start)
        return [p.as_dict() for p in polls if p.end is None or p.end >= self.since]
