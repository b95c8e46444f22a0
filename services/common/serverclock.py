"""The database server's clock, for the deadlines that one container writes and another reads.

The polling lease's expiry is written by its holder and judged by the standbys (and by a restore
that must not run while another container polls): on replicas spread over machines, each host's
own clock put that judgement as far off as the hosts disagreed, and a standby whose clock ran
ahead took a lease that was still held (two bots polling). Every party reads the one clock they
share instead: the server's, from `hello` (its `localTime`, on MongoDB and FerretDB alike),
carried forward on this process's monotonic clock between readings, so a step of the host's
clock changes nothing either.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database

REFRESH_S = 60.0  # read again this often: monotonic clocks drift a few ppm, and the server's may be stepped


def _reading(hello: dict, sent: float, received: float) -> tuple[datetime, float]:
    """The server's time and the monotonic instant it stands for: the round trip's middle
    (localTime has millisecond precision; half a round trip is the error). A server that does
    not report its time (not MongoDB, not FerretDB) leaves this host's clock, as before."""
    at = hello.get("localTime")
    if not isinstance(at, datetime):
        return datetime.now(timezone.utc), time.monotonic()
    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)), (sent + received) / 2


class ServerClock:
    """`await clock.now()`: the server's current time (a round trip at most every REFRESH_S)."""

    def __init__(self, db: AsyncDatabase, refresh_s: float = REFRESH_S) -> None:
        self.db = db
        self.refresh_s = refresh_s
        self._at: datetime | None = None
        self._mono = 0.0

    async def now(self) -> datetime:
        if self._at is None or time.monotonic() - self._mono > self.refresh_s:
            sent = time.monotonic()
            hello = await self.db.command("hello")
            self._at, self._mono = _reading(hello, sent, time.monotonic())
        return self._at + timedelta(seconds=time.monotonic() - self._mono)


def server_clock(db: Database) -> Callable[[], datetime]:
    """The server's time read once and carried on the monotonic clock: for a short-lived
    program (the CLI), which asks again and again for seconds, not minutes."""
    sent = time.monotonic()
    at, mono = _reading(db.command("hello"), sent, time.monotonic())
    return lambda: at + timedelta(seconds=time.monotonic() - mono)
