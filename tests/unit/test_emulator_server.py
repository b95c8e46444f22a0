"""services/emulator/server.py: the Bot API's HTTP face and envelope, driven in-process."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from starlette.testclient import TestClient

from services.emulator.server import create_app
from tests.unit.conftest import BOT_ID, TOKEN


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
