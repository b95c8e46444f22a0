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


# --- getUpdates arguments, as telegram-bot-api reads them ------------------------------------


def test_limit_is_clamped_to_1_and_100_and_negative_offset_keeps_the_last_updates():
    async def scenario():
        bot = _bot()
        ids = [bot.inject({"text": str(n)}) for n in range(120)]
        at_least_one = await bot.get_updates(None, 0, 0)
        bot._previous_poll = (-1, -1e9)  # not a repeat of the same offset (see the repeat rule)
        at_most_100 = await bot.get_updates(None, 1000, 0)
        last_two = await bot.get_updates(-2, 100, 0)
        return ids, at_least_one, at_most_100, last_two

    ids, at_least_one, at_most_100, last_two = asyncio.run(scenario())

    assert len(at_least_one) == 1
    assert len(at_most_100) == 100
    assert [u["update_id"] for u in last_two] == ids[-2:]


def test_repeating_an_offset_within_3_s_waits_and_within_half_a_second_gets_limit_1(monkeypatch):
    monkeypatch.setattr(state_module, "REPEAT_MIN_TIMEOUT_S", 0.2)

    async def scenario():
        bot = _bot()
        await bot.get_updates(1, 100, 0)
        started = time.monotonic()
        empty = await asyncio.wait_for(bot.get_updates(1, 100, 0), 2)  # timeout 0 raised to "3" (0.2 here)
        waited = time.monotonic() - started
        bot.inject({"text": "a"})
        bot.inject({"text": "b"})
        limited = await bot.get_updates(1, 100, 0)
        return empty, waited, limited

    empty, waited, limited = asyncio.run(scenario())

    assert empty == [] and waited >= 0.15
    assert len(limited) == 1


# --- the 409 throttle ---------------------------------------------------------------------------


def test_conflict_replies_are_throttled_like_the_real_server(monkeypatch):
    """telegram-bot-api's fail_query_conflict: one 409 at once, then any other inside the interval
    waits the interval before it is sent."""
    monkeypatch.setattr(state_module, "CONFLICT_INTERVAL_S", 0.3)

    async def scenario():
        bot = _bot()
        first = asyncio.create_task(bot.get_updates(1, 100, 30))
        await _until(lambda: bot._held is not None)
        second = asyncio.create_task(bot.get_updates(2, 100, 30))
        started = time.monotonic()
        with pytest.raises(ApiError):
            await asyncio.wait_for(first, 2)
        immediate = time.monotonic() - started
        await _until(lambda: bot._held is not None and not second.done())
        third = asyncio.create_task(bot.get_updates(3, 100, 30))
        started = time.monotonic()
        with pytest.raises(ApiError) as caught:
            await asyncio.wait_for(second, 2)
        delayed = time.monotonic() - started
        bot.inject({"text": "end"})
        await asyncio.wait_for(third, 2)
        return bot, immediate, delayed, caught.value

    bot, immediate, delayed, error = asyncio.run(scenario())

    assert immediate < 0.2
    assert 0.25 <= delayed < 1.5
    assert error.code == 409 and error.description == TELEGRAM_CONFLICT
    assert bot.conflicts == 2


# --- disconnected clients and the overlap record ---------------------------------------------


class _Client:
    """Stands for the HTTP layer's `request.is_disconnected`."""

    def __init__(self) -> None:
        self.gone = False

    async def disconnected(self) -> bool:
        return self.gone


def test_a_held_poll_whose_client_left_is_released_without_conflict(monkeypatch):
    monkeypatch.setattr(state_module, "DISCONNECT_CHECK_S", 0.02)

    async def scenario():
        bot = _bot()
        client = _Client()
        poll = asyncio.create_task(bot.get_updates(None, 100, 30, probe=client.disconnected))
        await _until(lambda: bot.polling_now == 1)
        client.gone = True
        result = await asyncio.wait_for(poll, 2)
        return bot, result

    bot, result = asyncio.run(scenario())

    assert result == []
    assert (bot.polling_now, bot.conflicts) == (0, 0)
    assert [p["outcome"] for p in bot.poll_log.records()] == ["disconnected"]
    assert bot.stats()["overlapping_polls"] == 0


def test_a_new_poll_releases_a_gone_client_first_so_neither_conflicts_nor_overlaps(monkeypatch):
    monkeypatch.setattr(state_module, "DISCONNECT_CHECK_S", 60)  # only the newcomer's check can notice

    async def scenario():
        bot = _bot()
        old, new = _Client(), _Client()
        first = asyncio.create_task(bot.get_updates(None, 100, 30, probe=old.disconnected))
        await _until(lambda: bot.polling_now == 1)
        old.gone = True
        second = asyncio.create_task(bot.get_updates(None, 100, 30, probe=new.disconnected))
        released = await asyncio.wait_for(first, 2)
        update_id = bot.inject({"text": "for the newcomer"})
        got = await asyncio.wait_for(second, 2)
        return bot, released, update_id, got

    bot, released, update_id, got = asyncio.run(scenario())

    assert released == [] and [u["update_id"] for u in got] == [update_id]
    assert bot.conflicts == 0
    assert bot.stats()["overlapping_polls"] == 0 and bot.max_polling_at_once == 1


def test_overlapping_connected_polls_are_recorded_and_a_reset_starts_counting_afresh():
    async def scenario():
        bot = _bot()
        first = asyncio.create_task(bot.get_updates(None, 100, 30, probe=_Client().disconnected))
        await _until(lambda: bot.polling_now == 1)
        second = asyncio.create_task(bot.get_updates(None, 100, 30, probe=_Client().disconnected))
        with pytest.raises(ApiError):
            await asyncio.wait_for(first, 2)
        during = bot.stats()
        after_reset = bot.reset_stats()
        bot.inject({"text": "x"})
        await asyncio.wait_for(second, 2)  # began before the mark, overlapped before it: not counted
        alone = await bot.get_updates(2, 100, 0)
        return bot, during, after_reset, alone

    bot, during, after_reset, alone = asyncio.run(scenario())

    assert during["overlapping_polls"] == 2 and during["max_polling_at_once"] == 2
    assert (after_reset["overlapping_polls"], after_reset["polls"], after_reset["conflicts"]) == (0, 0, 0)
    assert bot.stats()["overlapping_polls"] == 0 and bot.stats()["polls"] == 1
    records = bot.poll_log.records()
    assert all(r["start"] <= r["end"] for r in records)
    assert records[-1] == {**records[-1], "outcome": "empty", "overlapped": False}


# --- webhook set while polling ------------------------------------------------------------------


def test_set_webhook_terminates_the_held_poll_and_blocks_get_updates(monkeypatch):
    from services.emulator.webhook import set_webhook

    monkeypatch.setattr(state_module, "CONFLICT_INTERVAL_S", 0.05)

    async def scenario():
        bot = _bot()
        poll = asyncio.create_task(bot.get_updates(None, 100, 30))
        await _until(lambda: bot.polling_now == 1)
        description = await set_webhook(bot, "http://127.0.0.1:9/hook", "s3cret")
        with pytest.raises(ApiError) as terminated:
            await asyncio.wait_for(poll, 2)
        with pytest.raises(ApiError) as blocked:
            await asyncio.wait_for(bot.get_updates(None, 100, 0), 2)
        await bot.delivery.stop()
        return description, terminated.value, blocked.value

    description, terminated, blocked = asyncio.run(scenario())

    assert description == "Webhook was set"
    assert (terminated.code, terminated.description) == (409, "Conflict: terminated by setWebhook request")
    assert blocked.code == 409
    assert blocked.description == (
        "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
    )


# --- allowed_updates ----------------------------------------------------------------------------


def test_updates_of_types_not_allowed_are_never_queued():
    async def scenario():
        bot = _bot()
        member = {"chat_member": {"chat": {"id": 1, "type": "group"}}}
        _, default_queued = bot.inject_update({"update": member})
        await bot.get_updates(None, 100, 0, allowed_updates='["chat_member"]')
        _, asked_queued = bot.inject_update({"update": member})
        _, text_queued = bot.inject_update({"text": "not asked for now"})
        return default_queued, asked_queued, text_queued

    assert asyncio.run(scenario()) == (False, True, False)


# --- sendMessage, inline keyboards, callbacks, edits ------------------------------------------

KEYBOARD = {"inline_keyboard": [[{"text": "Press", "callback_data": "press"}]]}


def test_send_message_echoes_an_inline_keyboard_and_rejects_bad_buttons():
    bot = _bot()
    bot.inject({"text": "hi", "chat_id": 42})

    message = bot.send_message(42, "choose", reply_markup=KEYBOARD)

    assert message["reply_markup"] == KEYBOARD
    assert bot.sent[-1]["kind"] == "message" and bot.sent[-1]["reply_markup"] == KEYBOARD
    from services.emulator.markup import parse_reply_markup

    with pytest.raises(ApiError, match="BUTTON_DATA_INVALID"):
        parse_reply_markup({"inline_keyboard": [[{"text": "x", "callback_data": "d" * 65}]]})
    with pytest.raises(ApiError, match="Text buttons are unallowed in the inline keyboard"):
        parse_reply_markup('{"inline_keyboard": [[{"text": "x"}]]}')
    with pytest.raises(ApiError, match="can't parse reply keyboard markup JSON object"):
        parse_reply_markup("{not json")


def test_reply_to_an_unknown_message_fails_unless_allowed_without_reply():
    bot = _bot()

    with pytest.raises(ApiError) as caught:
        bot.send_message(42, "hello", reply_to=999)
    sent = bot.send_message(42, "hello", reply_to=999, allow_without_reply=True)

    assert caught.value.description == "Bad Request: message to be replied not found"
    assert "reply_to_message" not in sent and bot.sent[-1]["reply_to_message_id"] is None


def _button_pressed(bot: BotState) -> tuple[dict, dict, int]:
    """The bot answered /start with a keyboard; the user pressed the button; the bot got the update."""
    start_update = bot.inject({"text": "/start", "chat_id": 42, "user": {"id": 42, "first_name": "Ada"}})
    start = bot.pending[-1]["message"]["message_id"]
    menu = bot.send_message(42, "Pressed 0 time(s).", reply_to=start, reply_markup=KEYBOARD)
    update, queued = bot.inject_update({"callback_data": "press", "message_id": menu["message_id"]})
    assert queued
    bot._hand_out(100)
    return menu, update, start_update


def test_injected_callback_query_is_a_realistic_update():
    bot = _bot()
    menu, update, _ = _button_pressed(bot)

    query = update["callback_query"]
    assert set(query) == {"id", "from", "message", "chat_instance", "data"}
    assert query["data"] == "press" and query["from"]["id"] == 42
    assert query["message"] == menu
    assert query["chat_instance"].isdigit()

    from telegram import Bot, Update

    parsed = Update.de_json(update, Bot("1:" + "x" * 35))
    assert parsed.callback_query.message.reply_markup.inline_keyboard[0][0].callback_data == "press"


def test_answer_callback_query_is_recorded_once_per_query():
    bot = _bot()
    _, update, _ = _button_pressed(bot)
    query_id = update["callback_query"]["id"]

    assert bot.outbox.answer_callback_query(query_id, "Pressed", False) is True
    with pytest.raises(ApiError) as again:
        bot.outbox.answer_callback_query(query_id, "Pressed", False)
    with pytest.raises(ApiError) as unknown:
        bot.outbox.answer_callback_query("12345", "", False)

    answers = [s for s in bot.sent if s["kind"] == "callback_answer"]
    assert [(a["update_id"], a["error"]) for a in answers] == [
        (update["update_id"], None),
        (update["update_id"], again.value.description),
    ]
    assert again.value.description == unknown.value.description == (
        "Bad Request: query is too old and response timeout expired or query ID is invalid"
    )


def test_edit_message_text_edits_and_refuses_unknown_or_unchanged_messages():
    bot = _bot()
    menu, update, _ = _button_pressed(bot)

    edited = bot.outbox.edit_message_text(42, menu["message_id"], "Pressed 1 time(s).", KEYBOARD)
    with pytest.raises(ApiError) as same:
        bot.outbox.edit_message_text(42, menu["message_id"], "Pressed 1 time(s).", KEYBOARD)
    with pytest.raises(ApiError) as unknown:
        bot.outbox.edit_message_text(42, 9999, "x", None)
    without_keyboard = bot.outbox.edit_message_text(42, menu["message_id"], "Done.", None)

    assert edited["text"] == "Pressed 1 time(s)." and edited["reply_markup"] == KEYBOARD and "edit_date" in edited
    assert same.value.description.startswith("Bad Request: message is not modified: ")
    assert unknown.value.description == "Bad Request: message to edit not found"
    assert "reply_markup" not in without_keyboard
    edits = [s for s in bot.sent if s["kind"] == "edit"]
    assert [e["update_id"] for e in edits] == [update["update_id"]] * 3
    assert [e["error"] is None for e in edits] == [True, False, True]


def test_every_sent_item_names_the_update_it_responds_to():
    bot = _bot()
    menu, update, start_update = _button_pressed(bot)

    assert bot.sent[0]["update_id"] == bot.sent[0]["reply_to_update_id"] == start_update
    plain = bot.send_message(42, "not a reply")
    assert plain and bot.sent[-1]["reply_to_update_id"] is None
    assert bot.sent[-1]["update_id"] == update["update_id"]  # the newest update from that chat
