"""Every Bot API call of the bot passes its rate limiter (services/bot/flood.py), which is where
the bot learns that Telegram is out of reach and that it answers again: against the real
emulator over HTTP, through python-telegram-bot's own ExtBot."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from telegram.error import BadRequest, NetworkError
from telegram.ext import ExtBot

from services.bot.flood import FloodSafeLimiter
from services.bot.status import BotStatus
from services.common.settings import load_settings
from services.emulator.inprocess import serve_in_thread
from services.emulator.server import create_app
from tests.unit.conftest import BOT_ID, TOKEN


def test_the_limiter_publishes_an_outage_and_its_end_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    status = BotStatus(tmp_path / "bot.json")
    came_back: list[str] = []

    async def on_back() -> None:
        came_back.append("due now")

    async def scenario(url: str) -> list:
        arm = f"{url}/_emulator/bots/{BOT_ID}/fail-next"
        seen = []
        limiter = FloodSafeLimiter(load_settings("bot"), status, on_back=on_back)
        async with ExtBot(TOKEN, base_url=f"{url}/bot", rate_limiter=limiter) as bot, httpx.AsyncClient() as ctl:
            await ctl.post(arm, json={"method": "sendMessage", "error_code": 400, "description": "Bad Request: "
                                      "message text is empty"})
            with pytest.raises(BadRequest):
                await bot.send_message(41, "x")
            seen.append(status.api_failing_since)  # the update's own fault: Telegram answered
            await ctl.post(arm, json={"method": "sendMessage", "error_code": 502, "times": 2})
            for chat in (42, 43):  # a chat each: the per-chat pacing (1/s) is not what is tested
                with pytest.raises(NetworkError):
                    await bot.send_message(chat, "hello")
            seen.append((status.api_failing_since is not None, status.api_error, list(came_back)))
            await bot.send_message(44, "hello")
            await bot.send_message(45, "hello again")
            seen.append((status.api_failing_since, status.api_error, list(came_back)))
        return seen

    with serve_in_thread(create_app()) as url:
        answered, failing, back = asyncio.run(scenario(url))

    assert answered is None
    assert failing == (True, "sendMessage: NetworkError: Bad Gateway", [])
    assert back == (None, "", ["due now"]), "the end of the outage is told once, at the first call that works"


def test_a_call_that_fails_after_a_later_one_was_answered_starts_no_outage(tmp_path, monkeypatch):
    """A reply sent in the outage, whose 502 arrives after another call went through: the
    outage has ended, and this failure does not start another (in webhook mode no poll would
    end it, and the sidecar would call a working Bot API out of reach 15 s later)."""
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    status = BotStatus(tmp_path / "bot.json")

    async def on_back() -> None:
        pass

    async def scenario(url: str) -> list:
        arm = f"{url}/_emulator/bots/{BOT_ID}/fail-next"
        limiter = FloodSafeLimiter(load_settings("bot"), status, on_back=on_back)
        gate, held = asyncio.Event(), asyncio.Event()
        send = limiter._paced_request

        async def on_its_way(*args, **kwargs):  # the first reply is slow to come back
            limiter._paced_request = send
            held.set()
            await gate.wait()
            return await send(*args, **kwargs)

        seen = []
        async with ExtBot(TOKEN, base_url=f"{url}/bot", rate_limiter=limiter) as bot, httpx.AsyncClient() as ctl:
            await ctl.post(arm, json={"method": "sendMessage", "error_code": 502, "times": 1})
            with pytest.raises(NetworkError):
                await bot.send_message(51, "in the outage")
            limiter._paced_request = on_its_way
            slow = asyncio.create_task(bot.send_message(52, "in the outage too"))
            await held.wait()
            await bot.send_message(53, "it answers")
            seen.append(status.api_failing_since)
            await ctl.post(arm, json={"method": "sendMessage", "error_code": 502, "times": 1})
            gate.set()
            with pytest.raises(NetworkError):
                await slow
            seen.append(status.api_failing_since)
            await ctl.post(arm, json={"method": "sendMessage", "error_code": 502, "times": 1})
            with pytest.raises(NetworkError):
                await bot.send_message(54, "a new outage")
            seen.append(status.api_failing_since is not None)
        return seen

    with serve_in_thread(create_app()) as url:
        back, after_straggler, new_outage = asyncio.run(scenario(url))

    assert back is None
    assert after_straggler is None, "a 502 that was on its way as the Bot API came back started an outage"
    assert new_outage, "a call that fails after the last answer is an outage"


def test_get_updates_out_of_reach_is_tried_again_within_seconds(tmp_path, monkeypatch):
    """Telegram out of reach for eight polls in a row (502s): the poller tries again at least
    every 5 s, so the bot answers within seconds of Telegram answering again, where its backoff
    had grown to 15-30 s. Against the real emulator over HTTP; the waits are recorded, not slept."""
    from types import SimpleNamespace

    from services.bot.botapi import OUT_OF_REACH_RETRY_MAX_S
    from services.bot.poller import Poller

    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    waits: list[float] = []

    async def scenario(url: str) -> None:
        async with ExtBot(TOKEN, base_url=f"{url}/bot") as bot, httpx.AsyncClient() as ctl:
            await ctl.post(f"{url}/_emulator/bots/{BOT_ID}/fail-next",
                           json={"method": "getUpdates", "error_code": 502, "times": 8})
            poller = Poller(SimpleNamespace(bot=bot), lease=None, inbox=None,
                            status=BotStatus(tmp_path / "bot.json"), poll_timeout_s=0)

            async def record(delay: float) -> None:
                waits.append(delay)

            poller._sleep = record
            polling = asyncio.create_task(poller._poll_forever())

            async def answered_again() -> None:
                while len(waits) < 8 or poller._errors:
                    await asyncio.sleep(0.01)

            try:
                await asyncio.wait_for(answered_again(), timeout=10)
            finally:
                polling.cancel()

    with serve_in_thread(create_app()) as url:
        asyncio.run(scenario(url))

    assert len(waits) == 8, waits
    assert max(waits) <= OUT_OF_REACH_RETRY_MAX_S, waits
    assert waits[-1] >= OUT_OF_REACH_RETRY_MAX_S / 2, f"the backoff did not grow: {waits}"
