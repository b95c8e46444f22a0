"""HTTP face of the Bot API emulator: `/bot<token>/<method>` plus `/_emulator/...` test controls.

A test double for Telegram, which tests (and a zero-token demo) cannot reach. Replies use the
Bot API's envelope: {"ok": true, "result": ...[, "description"]} or
{"ok": false, "error_code", "description"[, "parameters"]}; a malformed or wrong token gets 401
"Unauthorized", an unknown method 404 "Not Found", an unexpected failure 500.
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.emulator import methods
from services.emulator.controls import control_routes
from services.emulator.errors import ApiError
from services.emulator.state import BotState

log = logging.getLogger("botstack.emulator")
TOKEN = re.compile(r"^(\d{3,}):([A-Za-z0-9_-]{30,})$")


class Emulator:
    def __init__(self, plain_http_webhooks: bool = False, flood_control: bool = True) -> None:
        self.bots: dict[int, BotState] = {}
        self.plain_http_webhooks = plain_http_webhooks
        self.flood_control = flood_control

    def _new_bot(self, bot_id: int, secret: str) -> BotState:
        bot = BotState(bot_id, secret)
        bot.webhook.plain_http = self.plain_http_webhooks
        bot.flood.enabled = self.flood_control
        return bot

    def bot_for_token(self, token: str) -> BotState:
        match = TOKEN.match(token)
        if not match:
            raise ApiError(401, "Unauthorized")
        bot_id, secret = int(match.group(1)), match.group(2)
        bot = self.bots.get(bot_id) or self.bots.setdefault(bot_id, self._new_bot(bot_id, secret))
        if not bot.secret:  # first seen through a test control, before the bot's first call
            bot.secret = secret
        if bot.secret != secret:
            raise ApiError(401, "Unauthorized")
        return bot

    def bot_by_id(self, bot_id: int) -> BotState:
        bot = self.bots.get(bot_id)
        if bot is None:  # a test may inject before the bot's first call
            bot = self.bots[bot_id] = self._new_bot(bot_id, secret="")
        return bot


async def _params(request: Request) -> dict:
    params: dict = dict(request.query_params)
    body = await request.body()
    if body:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            try:
                parsed = json.loads(body)
            except ValueError:
                raise ApiError(400, "Bad Request: can't parse JSON object") from None
            if not isinstance(parsed, dict):
                raise ApiError(400, "Bad Request: can't parse JSON object")
            params.update(parsed)
        elif ctype.startswith("application/x-www-form-urlencoded"):
            params.update(parse_qsl(body.decode(), keep_blank_values=True))
        else:
            raise ApiError(400, "Bad Request: unsupported content type")  # multipart (files) is not emulated
    return params


def create_app(plain_http_webhooks: bool = False, flood_control: bool = True) -> Starlette:
    """`plain_http_webhooks`: deliver https:// webhook URLs over http (see webhook.py);
    `flood_control`: 429s past Telegram's published limits (flood.py)."""
    emulator = Emulator(plain_http_webhooks, flood_control)

    async def bot_api(request: Request) -> JSONResponse:
        try:
            bot = emulator.bot_for_token(request.path_params["token"])
            params = await _params(request)
            result, description = await methods.call(
                bot, request.path_params["method"], params, probe=request.is_disconnected
            )
        except ApiError as exc:
            retry_after = (exc.parameters or {}).get("retry_after")
            headers = {"Retry-After": str(retry_after)} if retry_after else None  # as HttpConnection sends
            return JSONResponse(exc.envelope(), status_code=exc.code, headers=headers)
        except Exception:
            log.exception("emulator failure in %s", request.path_params["method"])
            return JSONResponse(ApiError(500, "Internal Server Error").envelope(), status_code=500)
        reply: dict = {"ok": True, "result": result}
        if description:
            reply["description"] = description
        return JSONResponse(reply)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        for bot in list(emulator.bots.values()):  # webhook delivery tasks end with the app
            await bot.delivery.stop()

    return Starlette(
        routes=[Route("/bot{token}/{method}", bot_api, methods=["GET", "POST"]), *control_routes(emulator)],
        lifespan=lifespan,
    )
