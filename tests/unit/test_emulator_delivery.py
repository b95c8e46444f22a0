"""services/emulator/delivery.py: webhook delivery to a real HTTP receiver on 127.0.0.1.

The emulator runs under Starlette's TestClient (its loop, with the delivery task, lives in the
client's portal thread); the receiver is a small Starlette app under uvicorn on an ephemeral port.
"""

from __future__ import annotations

import socket
import time

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from services.emulator import delivery as delivery_module
from services.emulator.inprocess import serve_in_thread
from services.emulator.server import create_app
from tests.unit.conftest import BOT_ID, TOKEN, wait_until

SECRET = "s3cret_Token-1"


class Receiver:
    """A webhook endpoint that records every call and answers with scripted status codes."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.calls: list[dict] = []
        self.url = ""

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.calls.append({
                "update": await request.json(),
                "secret": request.headers.get("X-Telegram-Bot-Api-Secret-Token"),
                "content_type": request.headers.get("content-type"),
                "at": time.monotonic(),
            })
            return Response(status_code=self.statuses.pop(0) if self.statuses else 200)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@pytest.fixture
def receiver():
    r = Receiver()
    with serve_in_thread(r.app()) as base_url:
        r.url = f"{base_url}/hook"
        yield r


@pytest.fixture
def client():
    with TestClient(create_app()) as c:
        yield c


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(delivery_module, "RETRY_FIRST_S", 0.1)
    monkeypatch.setattr(delivery_module, "RETRY_MAX_S", 0.2)


def _inject(client: TestClient, text: str) -> int:
    return client.post(f"/_emulator/bots/{BOT_ID}/updates", json={"text": text, "chat_id": 42}).json()["update_id"]


def _info(client: TestClient) -> dict:
    return client.get(f"/bot{TOKEN}/getWebhookInfo").json()["result"]


def test_pending_updates_are_posted_in_order_one_per_request_with_the_secret(client, receiver):
    ids = [_inject(client, t) for t in ("one", "two", "three")]

    r = client.post(f"/bot{TOKEN}/setWebhook", data={"url": receiver.url, "secret_token": SECRET})
    wait_until(lambda: len(receiver.calls) == 3, 5, what="three deliveries")
    ids.append(_inject(client, "four"))  # arrives while the webhook is set
    wait_until(lambda: len(receiver.calls) == 4, 5, what="the fourth delivery")
    wait_until(lambda: _info(client)["pending_update_count"] == 0, 5, what="2xx answers confirm")

    assert r.json()["result"] is True
    assert [c["update"]["update_id"] for c in receiver.calls] == ids
    assert [c["update"]["message"]["text"] for c in receiver.calls] == ["one", "two", "three", "four"]
    assert {c["secret"] for c in receiver.calls} == {SECRET}
    assert {c["content_type"] for c in receiver.calls} == {"application/json"}
    deliveries = client.get(f"/_emulator/bots/{BOT_ID}/deliveries").json()
    assert [(d["update_id"], d["status"], d["error"]) for d in deliveries] == [(i, 200, None) for i in ids]
    assert all(isinstance(d["time"], float) for d in deliveries)
    assert "last_error_date" not in _info(client)


def test_no_secret_header_without_a_secret(client, receiver):
    _inject(client, "plain")
    client.post(f"/bot{TOKEN}/setWebhook", data={"url": receiver.url})

    wait_until(lambda: receiver.calls, 5, what="a delivery")

    assert receiver.calls[0]["secret"] is None


def test_a_failing_webhook_is_recorded_and_retried_with_a_growing_delay(client, receiver):
    receiver.statuses = [500, 500, 500]  # then 200
    update_id = _inject(client, "flaky")

    client.post(f"/bot{TOKEN}/setWebhook", data={"url": receiver.url})
    wait_until(lambda: _info(client).get("last_error_message"), 5, what="the error in getWebhookInfo")
    failing = _info(client)
    wait_until(lambda: len(receiver.calls) == 4, 5, what="the retries")
    wait_until(lambda: _info(client)["pending_update_count"] == 0, 5, what="the late success confirms")

    assert failing["last_error_message"] == "Wrong response from the webhook: 500 Internal Server Error"
    assert abs(failing["last_error_date"] - time.time()) < 60
    assert failing["pending_update_count"] == 1
    assert {c["update"]["update_id"] for c in receiver.calls} == {update_id}
    at = [c["at"] for c in receiver.calls]
    gaps = [b - a for a, b in zip(at, at[1:])]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.18 and gaps[2] >= 0.18  # 0.1 s, doubled, capped at 0.2 s
    deliveries = client.get(f"/_emulator/bots/{BOT_ID}/deliveries").json()
    assert [d["status"] for d in deliveries] == [500, 500, 500, 200]


def test_connection_errors_are_recorded_and_delete_webhook_stops_delivery(client):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _inject(client, "nobody home")

    client.post(f"/bot{TOKEN}/setWebhook", data={"url": f"http://127.0.0.1:{port}/hook"})
    wait_until(lambda: _info(client).get("last_error_message"), 5, what="the connection error")
    deleted = client.post(f"/bot{TOKEN}/deleteWebhook").json()
    info = _info(client)

    deliveries = client.get(f"/_emulator/bots/{BOT_ID}/deliveries").json()
    assert deliveries[0]["status"] is None and deliveries[0]["error"] == "Connection refused"
    assert deleted["description"] == "Webhook was deleted"
    assert info["url"] == "" and "last_error_message" not in info and info["pending_update_count"] == 1
    assert client.post(f"/bot{TOKEN}/getUpdates").json()["result"][0]["message"]["text"] == "nobody home"


def test_redeliver_sends_a_delivered_update_once_more(client, receiver):
    update_id = _inject(client, "twice")
    client.post(f"/bot{TOKEN}/setWebhook", data={"url": receiver.url, "secret_token": SECRET})
    wait_until(lambda: _info(client)["pending_update_count"] == 0, 5, what="the first delivery")

    again = client.post(f"/_emulator/bots/{BOT_ID}/redeliver/{update_id}")
    unknown = client.post(f"/_emulator/bots/{BOT_ID}/redeliver/{update_id + 100}")

    assert again.status_code == 200
    assert again.json()["redelivery"] is True and again.json()["status"] == 200
    assert [c["update"] for c in receiver.calls] == [receiver.calls[0]["update"]] * 2
    assert receiver.calls[1]["secret"] == SECRET
    assert unknown.status_code == 404
    deliveries = client.get(f"/_emulator/bots/{BOT_ID}/deliveries").json()
    assert [(d["update_id"], d["redelivery"]) for d in deliveries] == [(update_id, False), (update_id, True)]
    client.post(f"/bot{TOKEN}/deleteWebhook")
    assert client.post(f"/_emulator/bots/{BOT_ID}/redeliver/{update_id}").status_code == 409


def test_https_urls_mean_tls_unless_the_emulator_stands_in_for_a_tls_proxy(receiver):
    https_url = receiver.url.replace("http://", "https://")

    with TestClient(create_app()) as faithful:
        _inject(faithful, "over tls")
        faithful.post(f"/bot{TOKEN}/setWebhook", data={"url": https_url})
        wait_until(lambda: _info(faithful).get("last_error_message"), 5, what="the TLS failure")
    with TestClient(create_app(plain_http_webhooks=True)) as proxied:
        _inject(proxied, "behind a proxy")
        proxied.post(f"/bot{TOKEN}/setWebhook", data={"url": https_url})
        wait_until(lambda: receiver.calls, 5, what="the delivery over plain http")
        info = _info(proxied)

    assert [c["update"]["message"]["text"] for c in receiver.calls] == ["behind a proxy"]
    assert info["url"] == https_url  # reported as set
