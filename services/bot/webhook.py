"""Webhook mode: Telegram pushes updates to us instead of us polling.

The receiver runs inside the bot program, in the same event loop as the application (as in
python-telegram-bot's custom-webhook examples), on 127.0.0.1 only. The API program forwards
`POST /telegram/webhook` to it, so one public port is enough (Railway gives a service one).
The receiver writes the update to the inbox (inbox.py, journaled) before it answers 2xx: what
Telegram was told arrived is in MongoDB. When MongoDB does not take it the answer is 503, and
Telegram delivers it again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging

import uvicorn
from pymongo.errors import PyMongoError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from telegram import Update
from telegram.ext import Application

from services.bot.botapi import until_it_works
from services.bot.inbox import Inbox
from services.common.bodylimit import TELEGRAM_UPDATE_MAX_BYTES, BodyLimit
from services.common.db import why
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


def receiver(inbox: Inbox, secret: str) -> Starlette:
    expected = secret.encode()

    async def receive(request: Request) -> JSONResponse:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, expected):
            log.warning("webhook call with a wrong or missing secret token refused")
            return JSONResponse({"ok": False, "error": "forbidden"}, status_code=403)
        try:
            data = json.loads(await request.body())
        except ValueError as exc:
            log.warning("webhook body that is not JSON refused: %s", exc)
            return JSONResponse({"ok": False, "error": "body is not JSON"}, status_code=400)
        try:
            await inbox.store([data])  # an object without update_id is parked there as malformed
        except PyMongoError as exc:
            log.warning("inbox unavailable (%s); webhook update refused with 503, Telegram retries it",
                        why(exc))
            return JSONResponse({"ok": False, "error": "database unavailable"}, status_code=503)
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route(PATH, receive, methods=["POST"])],
                     middleware=[Middleware(BodyLimit, max_bytes=TELEGRAM_UPDATE_MAX_BYTES)])


async def set_webhook(app: Application, url: str, secret: str, stop: asyncio.Event) -> bool:
    """setWebhook until it works (429s and outages are waited out). Never deleteWebhook: a
    stopping instance must not unregister the webhook its successor relies on."""

    async def call() -> bool:
        return await app.bot.set_webhook(url=url, secret_token=secret, allowed_updates=Update.ALL_TYPES)

    if await until_it_works("setWebhook", call, stop) is None:
        return False
    log.info("webhook set to %s", url)
    return True


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the bot program handles signals in one place."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def server(inbox: Inbox, secret: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(receiver(inbox, secret), host="127.0.0.1", port=port, log_config=None,
                            access_log=False, lifespan="off")
    return _Server(config)
