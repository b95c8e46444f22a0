"""A polling turn ends in bounded time: a task that does not stop is named, with where it
waits, and left behind, so the bot competes for the lease again instead of hanging silently."""

from __future__ import annotations

import asyncio
import logging

from services.bot import poller


async def _wait_for_ever() -> None:
    await asyncio.Event().wait()


async def _stuck() -> None:
    await _wait_for_ever()


def test_a_task_that_does_not_end_is_named_and_left_behind(monkeypatch, caplog):
    monkeypatch.setattr(poller, "TURN_END_S", 0.2)

    async def turn() -> tuple[asyncio.Task, asyncio.Task]:
        stuck = asyncio.create_task(_stuck(), name="inbox")
        quick = asyncio.create_task(asyncio.sleep(0), name="poll")
        await asyncio.sleep(0)
        await asyncio.wait_for(poller.Poller._end_turn(stuck, quick), timeout=5)
        return stuck, quick

    with caplog.at_level(logging.ERROR, logger="botstack.bot.poller"):
        stuck, quick = asyncio.run(turn())
    assert quick.done()
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("the inbox task did not end") and "_stuck" in line and "_wait_for_ever" in line, line


class _LeaseHeldUntil:
    """A lease another instance holds until `expires_in_s` from its first look, never renewed."""

    renew_every_s = 5.0

    def __init__(self, expires_in_s: float) -> None:
        self.until = None
        self.expires_in_s = expires_in_s
        self.tries: list[float] = []

    async def acquire(self) -> bool:
        now = asyncio.get_running_loop().time()
        self.until = self.until or now + self.expires_in_s
        self.tries.append(now)
        return now >= self.until

    async def current_holder(self) -> tuple[str | None, float]:
        now = asyncio.get_running_loop().time()
        return ("other", self.until - now) if now < self.until else (None, 0.0)


def test_a_standby_tries_again_as_the_lease_expires_not_up_to_a_second_later(tmp_path):
    from services.bot.status import BotStatus

    lease = _LeaseHeldUntil(expires_in_s=1.3)
    standby = poller.Poller(app=None, lease=lease, inbox=None, status=BotStatus(tmp_path / "status.json"),
                            poll_timeout_s=1)

    async def wait_for_the_lease() -> float:
        try:  # once it holds the lease it starts polling, which this test gives nothing to poll with
            await asyncio.wait_for(standby.run(asyncio.Event()), timeout=5)
        except AttributeError:
            pass
        return lease.tries[-1] - lease.until

    late = asyncio.run(wait_for_the_lease())
    assert 0 <= late < 0.2, f"took the lease {late:.2f} s after it expired"  # a fixed 1 s retry: 0.7 s


def test_an_outage_is_said_once_a_minute_with_how_many_lines_it_spared(tmp_path, caplog):
    """Every turn of an outage would repeat its warning (a refused getUpdates every few seconds
    for hours): said once per minute, the next line counting what was not said."""
    from services.bot.status import BotStatus
    from services.common.logs import Tally

    now = [1000.0]
    p = poller.Poller(app=None, lease=None, inbox=None, status=BotStatus(tmp_path / "status.json"), poll_timeout_s=1)
    p._said = Tally(poller.LOG_EVERY_S, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="botstack.bot.poller"):
        for _ in range(30):  # a minute of failures, one every two seconds
            p._throttled(logging.WARNING, "getUpdates failed (%s)", "refused")
            now[0] += 2
        p._throttled(logging.WARNING, "getUpdates failed (%s)", "refused")
    said = [r.getMessage() for r in caplog.records]
    assert said == ["getUpdates failed (refused)", "getUpdates failed (refused) (29 similar lines suppressed)"], said
