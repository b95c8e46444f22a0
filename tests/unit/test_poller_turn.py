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
