"""The Bot API methods the emulator answers, reading arguments the way the server does.

Arguments arrive as strings (query string, form fields) or JSON values (a JSON body); the helpers
read both, leniently like telegram-bot-api (get_integer_arg: a non-number reads as 0, clamped;
to_bool: "true", "yes", "1"). Method names are case-insensitive; an unknown one gets 404 "Not Found".
A handler returns (result, description): the server adds a description to some successes
("Webhook was set").
"""

from __future__ import annotations

import asyncio
import re
from typing import Awaitable, Callable

from services.emulator.errors import ApiError, json_param
from services.emulator.markup import parse_reply_markup
from services.emulator.polling import Probe
from services.emulator.state import BotState
from services.emulator.webhook import set_webhook, webhook_info

Reply = tuple[object, "str | None"]
LEADING_INTEGER = re.compile(r"-?\d+")


async def call(bot: BotState, method: str, params: dict, probe: Probe | None = None) -> Reply:
    handler = METHODS.get(method.lower())
    if handler is None:
        raise ApiError(404, "Not Found")
    if bot.faults.check(method):
        await _never_answer(probe)
    bot.flood.check(method, params)
    return await handler(bot, params, probe)


async def _never_answer(probe: Probe | None) -> None:
    """A black hole: hold the request until its client gives up (or an hour passes)."""
    for _ in range(36_000):
        if probe is not None and await probe():
            break
        await asyncio.sleep(0.1)
    raise ApiError(504, "Gateway Timeout: black hole")


async def get_me(bot: BotState, params: dict, probe: Probe | None) -> Reply:
    return bot.user, None


async def get_updates(bot: BotState, params: dict, probe: Probe | None) -> Reply:
    updates = await bot.get_updates(
        _int(params, "offset", 0), _int(params, "limit", 100), _int(params, "timeout", 0),
        allowed_updates=params.get("allowed_updates"), probe=probe,
    )
    return updates, None


async def set_webhook_method(bot: BotState, params: dict, probe: Probe | None) -> Reply:
    description = await set_webhook(
        bot, _str(params, "url"), _str(params, "secret_token"), _int(params, "max_connections"),
        params.get("allowed_updates"), _bool(params, "drop_pending_updates"),
    )
    return True, description


async def delete_webhook(bot: BotState, params: dict, probe: Probe | None) -> Reply:
    return True, await set_webhook(bot, "", drop_pending=_bool(params, "drop_pending_updates"))


async def get_webhook_info(bot: BotState, params: dict, probe: Probe | None) -> Reply:
    return webhook_info(bot), None


async def send_message(bot: BotState, params: dict, probe: Probe | None) -> Reply:
    chat_id = _chat_id(params)
    reply_to, allow_without_reply = _reply_parameters(params)
    message = bot.send_message(chat_id, _str(params, "text"), reply_to,
                               parse_reply_markup(params.get("reply_markup")), allow_without_reply)
    return message, None


async def edit_message_text(bot: BotState, params: dict, probe: Probe | None) -> Reply:
    text = _str(params, "text")
    markup = parse_reply_markup(params.get("reply_markup"))
    message_id = max(_int(params, "message_id", 0), 0)
    if _str(params, "chat_id") == "" and message_id == 0:
        raise ApiError(400, "Bad Request: message identifier is not specified")  # the inline-message path
    return bot.outbox.edit_message_text(_chat_id(params), message_id, text, markup), None


async def answer_callback_query(bot: BotState, params: dict, probe: Probe | None) -> Reply:
    answered = bot.outbox.answer_callback_query(
        _str(params, "callback_query_id"), _str(params, "text"), _bool(params, "show_alert")
    )
    return answered, None


METHODS: dict[str, Callable[[BotState, dict, Probe | None], Awaitable[Reply]]] = {
    "getme": get_me,
    "getupdates": get_updates,
    "setwebhook": set_webhook_method,
    "deletewebhook": delete_webhook,
    "getwebhookinfo": get_webhook_info,
    "sendmessage": send_message,
    "editmessagetext": edit_message_text,
    "answercallbackquery": answer_callback_query,
}


# --- arguments -------------------------------------------------------------------------
def _str(params: dict, name: str) -> str:
    value = params.get(name)
    return "" if value is None else str(value)


def _int(params: dict, name: str, default: int | None = None) -> int | None:
    value = params.get(name)
    if value in (None, ""):
        return default
    if isinstance(value, (bool, int, float)):
        return int(value)
    match = LEADING_INTEGER.match(str(value))
    return int(match.group()) if match else 0


def _bool(params: dict, name: str) -> bool:
    value = params.get(name)
    if isinstance(value, bool):
        return value
    return str(value or "").strip().lower() in ("true", "yes", "1")


def _chat_id(params: dict) -> int:
    value = _str(params, "chat_id").strip()
    if not value:
        raise ApiError(400, "Bad Request: chat_id is empty")
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, "Bad Request: chat not found") from None  # @usernames are not emulated


def _reply_parameters(params: dict) -> tuple[int | None, bool]:
    if "reply_parameters" not in params:
        return _int(params, "reply_to_message_id"), _bool(params, "allow_sending_without_reply")
    value = params["reply_parameters"]
    if value in (None, ""):
        return None, False
    value = json_param(value, "Bad Request: can't parse reply parameters JSON object")
    if not isinstance(value, dict):
        raise ApiError(400, "Bad Request: object expected as reply parameters")
    if not value:
        return None, False
    if not isinstance(value.get("message_id"), int):
        raise ApiError(400, 'Bad Request: field "message_id" must be of type Number')
    return max(value["message_id"], 0) or None, bool(value.get("allow_sending_without_reply"))
