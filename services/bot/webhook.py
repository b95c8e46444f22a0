"""Webhook mode: Telegram pushes updates to us instead of us polling.

The receiver runs inside the bot program, in the same event loop as the application (as in
python-telegram-bot's custom-webhook examples), on 127.0.0.1 only. The API program forwards
`POST /telegram/webhook` to it, so one public port is enough (Railway gives a service one).
Why in the bot: the update goes straight into the application's queue, no database hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from telegram import Update
from telegram.error import RetryAfter
from telegram.ext import Application

from services.common.settings import Settings

log = logging.getLogger("botstack.bot.webhook")

PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def webhook_secret(settings: Settings) -> str:
    """TELEGRAM_WEBHOOK_SECRET, or one derived from the token so every instance agrees."""
    if settings.telegram_webhook_secret is not None:
        return settings.telegram_webhook_secret.get_secret_value()
    token = settings.telegram_bot_token.get_secret_value().encode()
    return hmac.new(token, b"botstack-webhook-secret", hashlib.sha256).hexdigest()


def receiver(app: Application, secret: str) -> Starlette:
    expected = secret.encode()

    async def receive(request: Request) -> JSONResponse:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, expected):
            log.warning("webhook call with a wrong or missing secret token refused")
            return JSONResponse({"ok": False, "error": "forbidden"}, status_code=403)
        try:
            data = json.loads(await request.body())
            update = Update.de_json(data, app.bot)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("malformed webhook update skipped: %s", exc)
            return JSONResponse({"ok": False, "error": "malformed update"}, status_code=400)
        await app.update_queue.put(update)
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route(PATH, receive, methods=["POST"])])


async def set_webhook(app: Application, url: str, secret: str, stop: asyncio.Event) -> bool:
    """setWebhook, honouring 429 retry_after. Never deleteWebhook: a stopping instance must
    not unregister the webhook its successor relies on."""
    while not stop.is_set():
        try:
            await app.bot.set_webhook(url=url, secret_token=secret, allowed_updates=Update.ALL_TYPES)
            log.info("webhook set to %s", url)
            return True
        except RetryAfter as exc:
            delay = exc.retry_after if isinstance(exc.retry_after, (int, float)) else exc.retry_after.total_seconds()
            log.warning("setWebhook throttled by the Bot API; retrying in %s s", delay)
            try:
                await asyncio.wait_for(stop.wait(), timeout=float(delay))
            except TimeoutError:
                pass
    return False


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the bot program handles signals in one place."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def server(app: Application, secret: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(receiver(app, secret), host="127.0.0.1", port=port, log_config=None,
                            access_log=False, lifespan="off")
    return _Server(config)
