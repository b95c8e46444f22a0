"""services/emulator/state.py: BotState reproduces Telegram's getUpdates long-poll semantics."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.emulator import state as state_module
from services.emulator.state import CONFLICT_OTHER_POLL, MAX_POLL_TIMEOUT_S, ApiError, BotState

TELEGRAM_CONFLICT = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
)


def _bot() -> BotState:
    return BotState(123456789, "secret")


async def _until(predicate, timeout_s: float = 2.0) -> None:
    """Let the event loop run until `predicate()` holds; fail after a deadline."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError("timed out waiting inside the event loop")
        await asyncio.sleep(0.001)


def test_pending_updates_are_returned_at_once_without_conflict():
    async def scenario():
        bot = _bot()
        bot.inject({"text": "hello"})
        started = time.monotonic()
        updates = await asyncio.wait_for(bot.get_updates(None, 100, 30), 2)
        return bot, updates, time.monotonic() - started

    bot, updates, elapsed = asyncio.run(scenario())

    assert [u["message"]["text"] for u in updates] == ["hello"]
    assert elapsed < 1.0
    assert bot.conflicts == 0


def test_offset_confirms_and_drops_lower_update_ids():
    async def scenario():
        bot = _bot()
        ids = [bot.inject({"text": t}) for t in ("a", "b", "c")]
        first = await bot.get_updates(None, 100, 0)
        after = await bot.get_updates(ids[2], 100, 0)
        return bot, ids, first, after

    bot, ids, first, after = asyncio.run(scenario())

    assert [u["update_id"] for u in first] == ids  # unconfirmed updates stay pending
    assert [u["update_id"] for u in after] == [ids[2]]
    assert [u["update_id"] for u in bot.pending] == [ids[2]]


def test_second_waiting_poll_terminates_the_first_with_telegrams_409_conflict():
    async def scenario():
        bot = _bot()
        first = asyncio.create_task(bot.get_updates(None, 100, 30))
        await _until(lambda: bot.polling_now == 1)
        second = asyncio.create_task(bot.get_updates(None, 100, 30))
        with pytest.raises(ApiError) as caught:
            await asyncio.wait_for(first, 2)
        assert not second.done()  # the newcomer now holds the poll
        update_id = bot.inject({"text": "for the survivor"})
        survivor = await asyncio.wait_for(second, 2)
        return bot, caught.value, update_id, survivor

    bot, error, update_id, survivor = asyncio.run(scenario())

    assert error.code == 409
    assert error.description == TELEGRAM_CONFLICT == CONFLICT_OTHER_POLL
    assert bot.conflicts == 1
    assert [u["update_id"] for u in survivor] == [update_id]


def test_inject_wakes_a_held_poll():
    async def scenario():
        bot = _bot()
        poll = asyncio.create_task(bot.get_updates(None, 100, 30))
        await _until(lambda: bot.polling_now == 1)
        started = time.monotonic()
        update_id = bot.inject({"text": "/start"})
        updates = await asyncio.wait_for(poll, 2)
        return update_id, updates, time.monotonic() - started

    update_id, updates, elapsed = asyncio.run(scenario())

    assert [u["update_id"] for u in updates] == [update_id]
    assert updates[0]["message"]["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]
    assert elapsed < 1.0


def test_long_poll_timeout_is_capped(monkeypatch):
    assert MAX_POLL_TIMEOUT_S == 50  # Telegram's own cap
    monkeypatch.setattr(state_module, "MAX_POLL_TIMEOUT_S", 0.05)

    async def scenario():
        bot = _bot()
        started = time.monotonic()
        updates = await asyncio.wait_for(bot.get_updates(None, 100, 3600), 5)
        return bot, updates, time.monotonic() - started

    bot, updates, elapsed = asyncio.run(scenario())

    assert updates == []
    assert elapsed < 2.0
    assert (bot.polling_now, bot.conflicts) == (0, 0)


def test_sent_message_records_which_update_it_replies_to():
    bot = _bot()
    update_id = bot.inject({"text": "ping", "chat_id": 42})
    incoming = bot.pending[-1]["message"]["message_id"]

    reply = bot.send_message(42, "pong", reply_to=incoming)
    plain = bot.send_message(42, "no reply", reply_to=None)

    assert reply["text"] == "pong" and reply["chat"]["id"] == 42
    assert bot.sent[0]["reply_to_message_id"] == incoming
    assert bot.sent[0]["reply_to_update_id"] == update_id
    assert bot.sent[1]["reply_to_update_id"] is None
    assert plain["message_id"] != reply["message_id"] != incoming
