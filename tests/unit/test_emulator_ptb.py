"""The emulator over real sockets: python-telegram-bot's own Bot parses its webhook replies, 409s
and 429s, and a client that gives up on a long poll is noticed.

The emulator runs under uvicorn on 127.0.0.1 (an ephemeral port) in a thread; Bot talks to it from
this thread's event loop, exactly as a bot would talk to Telegram.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pytest
from telegram import Bot, Update
from telegram.error import Conflict, RetryAfter

from services.emulator import state as state_module
from services.emulator.inprocess import serve_in_thread
from services.emulator.server import create_app
from tests.unit.conftest import BOT_ID, TOKEN, wait_until


@pytest.fixture
def emulator_url(monkeypatch):
    monkeypatch.setattr(state_module, "CONFLICT_INTERVAL_S", 0.2)
    monkeypatch.setattr(state_module, "DISCONNECT_CHECK_S", 0.05)
    with serve_in_thread(create_app()) as url:
        yield url


async def _until(predicate, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


def test_python_telegram_bot_parses_webhook_replies_conflicts_and_flood_control(emulator_url, monkeypatch):
    monkeypatch.setenv("PTB_TIMEDELTA", "1")  # RetryAfter.retry_after as a timedelta, without a warning
    hook = "http://127.0.0.1:9/telegram/webhook"  # never answers; delivery retries quietly

    async def scenario():
        async with Bot(TOKEN, base_url=f"{emulator_url}/bot") as bot:
            was_set = await bot.set_webhook(hook, secret_token="s3cret", allowed_updates=[Update.MESSAGE])
            info = await bot.get_webhook_info()
            with pytest.raises(RetryAfter) as flood:
                await bot.set_webhook(hook + "/other")
            with pytest.raises(Conflict) as webhook_active:
                await bot.get_updates(timeout=0)
            deleted = await bot.delete_webhook(drop_pending_updates=True)
            info_after = await bot.get_webhook_info()
        return was_set, info, flood.value, webhook_active.value, deleted, info_after

    was_set, info, flood, webhook_active, deleted, info_after = asyncio.run(scenario())

    assert was_set is True
    assert info.url == hook and info.has_custom_certificate is False
    assert info.pending_update_count == 0 and info.max_connections == 40
    assert info.ip_address == "127.0.0.1" and info.allowed_updates == ("message",)
    assert flood.retry_after == dt.timedelta(seconds=1)
    assert "can't use getUpdates method while webhook is active" in str(webhook_active)
    assert deleted is True and info_after.url == ""


def test_python_telegram_bot_sees_the_held_poll_terminated_by_a_second_poll(emulator_url):
    async def scenario():
        # Two instances of one bot, as after a botched rolling restart.
        old, new = Bot(TOKEN, base_url=f"{emulator_url}/bot"), Bot(TOKEN, base_url=f"{emulator_url}/bot")
        async with old, new, httpx.AsyncClient(base_url=emulator_url) as ctl:
            async def polling_now(n: int) -> bool:
                return (await ctl.get(f"/_emulator/bots/{BOT_ID}/stats")).json()["polling_now"] == n

            first = asyncio.create_task(old.get_updates(timeout=10))
            await _until(lambda: polling_now(1))
            second = asyncio.create_task(new.get_updates(timeout=10))
            with pytest.raises(Conflict) as terminated:
                await asyncio.wait_for(first, 5)
            update_id = (await ctl.post(f"/_emulator/bots/{BOT_ID}/updates", json={"text": "hi"})).json()["update_id"]
            survivor = await asyncio.wait_for(second, 5)
            stats = (await ctl.get(f"/_emulator/bots/{BOT_ID}/stats")).json()
        return terminated.value, update_id, survivor, stats

    terminated, update_id, survivor, stats = asyncio.run(scenario())

    assert str(terminated) == (
        "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
    )
    assert [u.update_id for u in survivor] == [update_id] and survivor[0].message.text == "hi"
    assert stats["conflicts"] == 1 and stats["overlapping_polls"] == 2


def test_a_poll_whose_client_gave_up_is_released_and_not_an_overlap(emulator_url):
    ctl = httpx.Client(base_url=emulator_url, timeout=5)
    with httpx.Client(base_url=emulator_url, timeout=0.3) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            impatient.post(f"/bot{TOKEN}/getUpdates", data={"timeout": "30"})

    wait_until(lambda: ctl.get(f"/_emulator/bots/{BOT_ID}/stats").json()["polling_now"] == 0, 5,
               what="the emulator to notice the disconnect")
    later = ctl.post(f"/bot{TOKEN}/getUpdates", data={"offset": "1", "timeout": "0"})
    stats = ctl.get(f"/_emulator/bots/{BOT_ID}/stats").json()
    polls = ctl.get(f"/_emulator/bots/{BOT_ID}/polls").json()
    ctl.close()

    assert later.json() == {"ok": True, "result": []}
    assert (stats["conflicts"], stats["overlapping_polls"], stats["max_polling_at_once"]) == (0, 0, 1)
    assert [p["outcome"] for p in polls] == ["disconnected", "empty"]
