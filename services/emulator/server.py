"""HTTP face of the Bot API emulator: `/bot<token>/<method>` plus `/_emulator/...` test controls.

A test double for Telegram, which tests (and a zero-token demo) cannot reach. Replies use the
Bot API's envelope: {"ok": true, "result": ...} or {"ok": false, "error_code", "description"}.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.emulator.state import ApiError, BotState

TOKEN = re.compile(r"^(\d{3,}):([A-Za-z0-9_-]{30,})$")


class Emulator:
    def __init__(self) -> None:
        self.bots: dict[int, BotState] = {}

    def bot_for_token(self, token: str) -> BotState:
        match = TOKEN.match(token)
        if not match:
            raise ApiError(401, "Unauthorized")
        bot_id, secret = int(match.group(1)), match.group(2)
        bot = self.bots.setdefault(bot_id, BotState(bot_id, secret))
        if not bot.secret:  # first seen through a test control, before the bot's first call
            bot.secret = secret
        if bot.secret != secret:
            raise ApiError(401, "Unauthorized")
        return bot

    def bot_by_id(self, bot_id: int) -> BotState:
        bot = self.bots.get(bot_id)
        if bot is None:  # a test may inject before the bot's first call
            bot = self.bots[bot_id] = BotState(bot_id, secret="")
        return bot


async def _params(request: Request) -> dict:
    params: dict = dict(request.query_params)
    body = await request.body()
    if body:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            try:
                params.update(json.loads(body))
            except ValueError:
                raise ApiError(400, "Bad Request: can't parse JSON object") from None
        elif ctype.startswith("application/x-www-form-urlencoded"):
            params.update(parse_qsl(body.decode(), keep_blank_values=True))
        else:
            raise ApiError(400, "Bad Request: unsupported content type")
    return params


def _int(params: dict, name: str, default: int | None = None) -> int | None:
    value = params.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"Bad Request: field \"{name}\" must be a number") from None


def _json_field(params: dict, name: str) -> dict | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    if isinstance(value, dict):
        return value
    try:
        return json.loads(value)
    except ValueError:
        raise ApiError(400, f"Bad Request: can't parse {name} JSON object") from None


def _reply_to(params: dict) -> int | None:
    reply = _json_field(params, "reply_parameters")
    if reply and "message_id" in reply:
        return int(reply["message_id"])
    return _int(params, "reply_to_message_id")


async def _call(emulator: Emulator, token: str, method: str, params: dict):
    bot = emulator.bot_for_token(token)
    method = method.lower()
    if method == "getme":
        return bot.user
    if method == "getupdates":
        return await bot.get_updates(
            _int(params, "offset"), _int(params, "limit", 100), _int(params, "timeout", 0)
        )
    if method == "deletewebhook":
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            bot.pending.clear()
        return True
    if method == "getwebhookinfo":
        return {"url": "", "has_custom_certificate": False, "pending_update_count": len(bot.pending)}
    if method == "sendmessage":
        chat_id = _int(params, "chat_id")
        if chat_id is None:
            raise ApiError(400, "Bad Request: chat_id is empty")
        return bot.send_message(chat_id, str(params.get("text", "")), _reply_to(params))
    raise ApiError(404, "Not Found")


def _error(exc: ApiError) -> JSONResponse:
    body = {"ok": False, "error_code": exc.code, "description": exc.description}
    if exc.parameters:
        body["parameters"] = exc.parameters
    return JSONResponse(body, status_code=exc.code)


def create_app() -> Starlette:
    emulator = Emulator()

    async def bot_api(request: Request) -> JSONResponse:
        try:
            params = await _params(request)
            result = await _call(emulator, request.path_params["token"], request.path_params["method"], params)
        except ApiError as exc:
            return _error(exc)
        return JSONResponse({"ok": True, "result": result})

    async def inject(request: Request) -> JSONResponse:
        try:
            spec = await request.json()
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        bot = emulator.bot_by_id(int(request.path_params["bot_id"]))
        return JSONResponse({"update_id": bot.inject(spec)})

    async def sent(request: Request) -> JSONResponse:
        return JSONResponse(emulator.bot_by_id(int(request.path_params["bot_id"])).sent)

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(emulator.bot_by_id(int(request.path_params["bot_id"])).stats())

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "bots": len(emulator.bots)})

    return Starlette(
        routes=[
            Route("/bot{token}/{method}", bot_api, methods=["GET", "POST"]),
            Route("/_emulator/health", health),
            Route("/_emulator/bots/{bot_id:int}/updates", inject, methods=["POST"]),
            Route("/_emulator/bots/{bot_id:int}/sent", sent),
            Route("/_emulator/bots/{bot_id:int}/stats", stats),
        ]
    )
