"""services/emulator/server.py: the Bot API's HTTP face and envelope, driven in-process."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from starlette.testclient import TestClient

from services.emulator import webhook as webhook_module
from services.emulator.server import create_app
from tests.unit.conftest import BOT_ID, TOKEN, wait_until


@pytest.fixture
def client() -> TestClient:
    with TestClient(create_app()) as c:
        yield c


def test_malformed_token_gets_401_envelope(client):
    r = client.get("/botnot-a-token/getMe")

    assert r.status_code == 401
    assert r.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}


def test_known_bot_id_with_another_secret_gets_401(client):
    assert client.get(f"/bot{TOKEN}/getMe").status_code == 200
    other = f"{BOT_ID}:{'Z' * 35}"

    r = client.post(f"/bot{other}/getUpdates")

    assert r.status_code == 401
    assert r.json()["error_code"] == 401 and r.json()["ok"] is False


def test_unknown_method_gets_404_envelope(client):
    r = client.post(f"/bot{TOKEN}/sendTelepathy", data={"chat_id": "1"})

    assert r.status_code == 404
    assert r.json() == {"ok": False, "error_code": 404, "description": "Not Found"}


def test_form_encoded_send_message_with_reply_parameters_json(client):
    client.get(f"/bot{TOKEN}/getMe")
    update_id = client.post(f"/_emulator/bots/{BOT_ID}/updates", json={"text": "ping", "chat_id": 42}).json()[
        "update_id"
    ]
    incoming = client.post(f"/bot{TOKEN}/getUpdates").json()["result"][0]["message"]["message_id"]

    # python-telegram-bot posts form fields; nested objects travel as JSON strings.
    r = client.post(
        f"/bot{TOKEN}/sendMessage",
        data={"chat_id": "42", "text": "pong", "reply_parameters": json.dumps({"message_id": incoming})},
    )

    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is True
    assert body["result"]["text"] == "pong" and body["result"]["chat"]["id"] == 42
    sent = client.get(f"/_emulator/bots/{BOT_ID}/sent").json()
    assert sent[-1]["reply_to_update_id"] == update_id


def test_inject_then_get_updates_roundtrip_and_offset_confirms(client):
    client.get(f"/bot{TOKEN}/getMe")
    update_id = client.post(f"/_emulator/bots/{BOT_ID}/updates", json={"text": "/start"}).json()["update_id"]

    got = client.post(f"/bot{TOKEN}/getUpdates", json={"timeout": 5}).json()
    confirmed = client.post(f"/bot{TOKEN}/getUpdates", data={"offset": str(update_id + 1), "timeout": "0"}).json()

    assert got["ok"] is True
    assert [u["update_id"] for u in got["result"]] == [update_id]
    assert got["result"][0]["message"]["text"] == "/start"
    assert confirmed == {"ok": True, "result": []}
    assert client.get(f"/_emulator/bots/{BOT_ID}/stats").json()["pending"] == 0


def test_update_injected_before_the_bots_first_call_is_delivered(client):
    update_id = client.post(f"/_emulator/bots/{BOT_ID}/updates", json={"text": "early"}).json()["update_id"]

    r = client.post(f"/bot{TOKEN}/getUpdates")

    assert r.status_code == 200, r.json()
    assert [u["update_id"] for u in r.json()["result"]] == [update_id]


def test_python_telegram_bot_talks_to_the_emulator():
    """The real client library, its real request encoding, over an in-process ASGI transport."""
    from telegram import Bot
    from telegram.request import HTTPXRequest

    app = create_app()

    async def scenario():
        def request() -> HTTPXRequest:
            return HTTPXRequest(httpx_kwargs={"transport": httpx.ASGITransport(app=app)})

        bot = Bot(TOKEN, base_url="http://emulator/bot", request=request(), get_updates_request=request())
        async with bot:
            me = await bot.get_me()
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://emulator") as ctl:
                r = await ctl.post(f"/_emulator/bots/{BOT_ID}/updates", json={"text": "ping", "chat_id": 7})
                update_id = r.json()["update_id"]
                updates = await bot.get_updates(timeout=0)
                sent = await bot.send_message(7, "pong", reply_to_message_id=updates[0].message.message_id)
                records = (await ctl.get(f"/_emulator/bots/{BOT_ID}/sent")).json()
        return me, update_id, updates, sent, records

    me, update_id, updates, sent, records = asyncio.run(scenario())

    assert me.id == BOT_ID and me.is_bot
    assert [u.update_id for u in updates] == [update_id]
    assert updates[0].message.text == "ping"
    assert sent.text == "pong"
    assert records[-1]["reply_to_update_id"] == update_id


# --- the envelope for every error, parameters included ----------------------------------------


def test_fail_next_makes_the_next_call_fail_with_a_429_envelope(client):
    armed = client.post(
        f"/_emulator/bots/{BOT_ID}/fail-next", json={"method": "sendMessage", "error_code": 429, "retry_after": 1}
    )
    client.post(f"/_emulator/bots/{BOT_ID}/updates", json={"text": "hi", "chat_id": 42})

    refused = client.post(f"/bot{TOKEN}/sendMessage", data={"chat_id": "42", "text": "pong"})
    accepted = client.post(f"/bot{TOKEN}/sendmessage", data={"chat_id": "42", "text": "pong"})

    assert armed.json() == {"method": "sendMessage", "armed": 1}
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json() == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 1",
        "parameters": {"retry_after": 1},
    }
    assert accepted.status_code == 200
    assert [s["text"] for s in client.get(f"/_emulator/bots/{BOT_ID}/sent").json()] == ["pong"]


def test_fail_next_other_codes_and_repeats(client):
    client.post(f"/_emulator/bots/{BOT_ID}/fail-next", json={"method": "getMe", "error_code": 502, "times": 2})

    codes = [client.get(f"/bot{TOKEN}/getMe").status_code for _ in range(3)]

    assert codes == [502, 502, 200]
    assert client.post(f"/_emulator/bots/{BOT_ID}/fail-next", json={}).status_code == 400


def test_fail_next_answer_every_makes_a_method_flaky(client):
    client.post(f"/_emulator/bots/{BOT_ID}/fail-next",
                json={"method": "getMe", "error_code": 502, "answer_every": 3, "times": 2})

    codes = [client.get(f"/bot{TOKEN}/getMe").status_code for _ in range(7)]

    assert codes == [502, 502, 200, 502, 502, 200, 200]


# --- setWebhook / deleteWebhook / getWebhookInfo ------------------------------------------------


def test_set_webhook_validates_the_secret_token(client):
    bad = client.post(f"/bot{TOKEN}/setWebhook", data={"url": "http://127.0.0.1:9/hook", "secret_token": "no spaces"})

    assert bad.status_code == 400
    assert bad.json() == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: secret token contains unallowed characters",
    }
    assert client.post(f"/bot{TOKEN}/getWebhookInfo").json()["result"]["url"] == ""


def test_set_webhook_is_rate_limited_to_about_one_call_a_second(client, monkeypatch):
    monkeypatch.setattr(webhook_module, "SET_INTERVAL_S", 0.3)
    url = "http://127.0.0.1:9/hook"

    first = client.post(f"/bot{TOKEN}/setWebhook", data={"url": url})
    second = client.post(f"/bot{TOKEN}/setWebhook", data={"url": url})
    wait_until(lambda: client.post(f"/bot{TOKEN}/setWebhook", data={"url": url}).status_code == 200, 3)

    assert first.json() == {"ok": True, "result": True, "description": "Webhook was set"}
    assert second.status_code == 429
    assert second.json() == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 1",
        "parameters": {"retry_after": 1},
    }


def test_webhook_lifecycle_and_get_updates_conflict(client):
    client.post(f"/_emulator/bots/{BOT_ID}/updates", json={"text": "queued before"})
    set_reply = client.post(
        f"/bot{TOKEN}/setWebhook",
        json={"url": "http://127.0.0.1:9/hook", "secret_token": "Ab_9-", "max_connections": 5,
              "allowed_updates": ["message", "callback_query"]},
    )
    info = client.get(f"/bot{TOKEN}/getWebhookInfo").json()["result"]
    polled = client.post(f"/bot{TOKEN}/getUpdates")
    deleted = client.post(f"/bot{TOKEN}/deleteWebhook", data={"drop_pending_updates": "true"})
    again = client.post(f"/bot{TOKEN}/deleteWebhook")
    after = client.get(f"/bot{TOKEN}/getWebhookInfo").json()["result"]

    assert set_reply.json()["description"] == "Webhook was set"
    assert info["url"] == "http://127.0.0.1:9/hook" and info["has_custom_certificate"] is False
    assert info["max_connections"] == 5 and info["ip_address"] == "127.0.0.1"
    assert info["allowed_updates"] == ["message", "callback_query"]
    assert isinstance(info["pending_update_count"], int)
    assert polled.status_code == 409
    assert polled.json()["description"] == (
        "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
    )
    assert deleted.json() == {"ok": True, "result": True, "description": "Webhook was deleted"}
    assert again.json()["description"] == "Webhook is already deleted"
    assert after["url"] == "" and after["pending_update_count"] == 0
    assert "max_connections" not in after


def test_invalid_webhook_url_gets_400(client):
    r = client.post(f"/bot{TOKEN}/setWebhook", data={"url": "ftp://example.org/hook"})

    assert r.status_code == 400
    assert r.json()["description"] == "Bad Request: invalid webhook URL specified"


# --- keyboards, callback queries, edits over HTTP -----------------------------------------------


def test_button_press_round_trip_is_recorded_per_update(client):
    client.post(f"/_emulator/bots/{BOT_ID}/updates", json={"text": "/start", "chat_id": 42})
    start = client.post(f"/bot{TOKEN}/getUpdates").json()["result"][0]
    keyboard = {"inline_keyboard": [[{"text": "Press", "callback_data": "press"}]]}
    menu = client.post(
        f"/bot{TOKEN}/sendMessage",
        data={"chat_id": "42", "text": "Pressed 0 time(s).", "reply_markup": json.dumps(keyboard),
              "reply_to_message_id": str(start["message"]["message_id"])},
    ).json()["result"]
    injected = client.post(
        f"/_emulator/bots/{BOT_ID}/updates",
        json={"callback_data": "press", "message_id": menu["message_id"], "user": {"id": 42, "first_name": "Ada"}},
    ).json()
    press = client.post(f"/bot{TOKEN}/getUpdates", data={"offset": str(start["update_id"] + 1)}).json()["result"][0]
    answered = client.post(
        f"/bot{TOKEN}/answerCallbackQuery", data={"callback_query_id": injected["callback_query_id"], "text": "Pressed"}
    ).json()
    edited = client.post(
        f"/bot{TOKEN}/editMessageText",
        json={"chat_id": 42, "message_id": menu["message_id"], "text": "Pressed 1 time(s).", "reply_markup": keyboard},
    ).json()
    unchanged = client.post(
        f"/bot{TOKEN}/editMessageText",
        json={"chat_id": 42, "message_id": menu["message_id"], "text": "Pressed 1 time(s).", "reply_markup": keyboard},
    )
    sent = client.get(f"/_emulator/bots/{BOT_ID}/sent").json()

    assert menu["reply_markup"] == keyboard and menu["reply_to_message"]["text"] == "/start"
    assert injected["queued"] is True and press["update_id"] == injected["update_id"]
    assert press["callback_query"]["message"]["message_id"] == menu["message_id"]
    assert answered == {"ok": True, "result": True}
    assert edited["result"]["text"] == "Pressed 1 time(s)." and edited["result"]["reply_markup"] == keyboard
    assert unchanged.status_code == 400 and "message is not modified" in unchanged.json()["description"]
    assert [(s["kind"], s["update_id"], s["error"] is None) for s in sent] == [
        ("message", start["update_id"], True),
        ("callback_answer", press["update_id"], True),
        ("edit", press["update_id"], True),
        ("edit", press["update_id"], False),
    ]
    assert sent[0]["reply_to_update_id"] == start["update_id"]


def test_callback_on_an_unknown_message_is_refused(client):
    r = client.post(f"/_emulator/bots/{BOT_ID}/updates", json={"callback_data": "x", "message_id": 777})

    assert r.status_code == 404 and "777" in r.json()["error"]


def test_edit_of_an_unknown_message_gets_400(client):
    r = client.post(f"/bot{TOKEN}/editMessageText", data={"chat_id": "42", "message_id": "9", "text": "x"})

    assert r.status_code == 400
    assert r.json() == {"ok": False, "error_code": 400, "description": "Bad Request: message to edit not found"}


# --- stats, the settle point, the poll record ---------------------------------------------------


def test_stats_reset_and_poll_records(client):
    client.post(f"/bot{TOKEN}/getUpdates")
    before = client.get(f"/_emulator/bots/{BOT_ID}/stats").json()
    reset = client.post(f"/_emulator/bots/{BOT_ID}/stats/reset").json()
    client.post(f"/bot{TOKEN}/getUpdates", data={"offset": "1"})
    polls = client.get(f"/_emulator/bots/{BOT_ID}/polls").json()

    assert set(before) >= {"polls", "conflicts", "pending", "polling_now", "max_polling_at_once", "sent",
                           "overlapping_polls"}
    assert before["polls"] == 1 and reset["polls"] == 0 and reset["since"] > 0
    assert [(p["outcome"], p["overlapped"]) for p in polls] == [("empty", False)]
