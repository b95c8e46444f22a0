"""Realistic Update objects for the inject control, and the server's `allowed_updates` filter.

Shapes follow the Bot API's Update, Message and CallbackQuery, so python-telegram-bot parses them
as it would Telegram's. Type names and the default filter are telegram-bot-api's
(Client::get_update_type_name, DEFAULT_ALLOWED_UPDATE_TYPES).
"""

from __future__ import annotations

import json
import time

from services.emulator.errors import json_param

UPDATE_TYPES = (
    "message", "edited_message", "channel_post", "edited_channel_post", "inline_query",
    "chosen_inline_result", "callback_query", "shipping_query", "pre_checkout_query", "poll",
    "poll_answer", "my_chat_member", "chat_member", "chat_join_request", "chat_boost",
    "removed_chat_boost", "message_reaction", "message_reaction_count", "business_connection",
    "business_message", "edited_business_message", "deleted_business_messages",
    "purchased_paid_media",
)
# Telegram sends these only to bots that ask for them by name.
DEFAULT_ALLOWED = frozenset(UPDATE_TYPES) - {"chat_member", "message_reaction", "message_reaction_count"}
DEFAULT_USER = {"id": 1001, "is_bot": False, "first_name": "Test"}


def update_type(update: dict) -> str | None:
    return next((key for key in update if key in UPDATE_TYPES), None)


def parse_allowed_updates(value) -> frozenset[str] | None:
    """The new filter, or None to keep the old one, as the server does: an absent, unparsable or
    non-string list changes nothing; a list naming no known type means the default."""
    if value in (None, ""):
        return None
    value = json_param(value, None)
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        return None
    names = frozenset(name.lower() for name in value) & frozenset(UPDATE_TYPES)
    return names or DEFAULT_ALLOWED


def user_from(spec: dict, default_id: int | None = None) -> dict:
    base = dict(DEFAULT_USER)
    if default_id is not None:
        base["id"] = default_id
    return {**base, **spec.get("user", {})}


def text_message(message_id: int, spec: dict) -> dict:
    """A private-chat text message from a user; a leading /command gets its bot_command entity."""
    user = user_from(spec)
    text = str(spec.get("text", ""))
    message = {
        "message_id": message_id,
        "from": user,
        "chat": {"id": spec.get("chat_id", user["id"]), "type": "private", "first_name": user["first_name"]},
        "date": int(time.time()),
        "text": text,
    }
    if text.startswith("/"):
        command = text.split()[0]
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    return message


def callback_query(query_id: str, bot_id: int, message: dict, spec: dict) -> dict:
    """A press on an inline button of `message` (the bot's message as it stands now)."""
    chat = message["chat"]
    default_id = chat["id"] if chat.get("type") == "private" else None
    return {
        "id": query_id,
        "from": user_from(spec, default_id),
        "message": json.loads(json.dumps(message)),  # a snapshot: later edits do not rewrite it
        "chat_instance": chat_instance(bot_id, chat["id"]),
        "data": str(spec["callback_data"]),
    }


def chat_instance(bot_id: int, chat_id: int) -> str:
    """Stable per (bot, chat), opaque, numeric-looking, like Telegram's."""
    return str((chat_id * 0x9E3779B97F4A7C15 + bot_id) % (1 << 63))


def chat_id_of(update: dict) -> int | None:
    for key in ("message", "edited_message", "channel_post", "edited_channel_post", "business_message"):
        if isinstance(update.get(key), dict) and "chat" in update[key]:
            return update[key]["chat"]["id"]
    query = update.get("callback_query")
    if isinstance(query, dict) and isinstance(query.get("message"), dict):
        return query["message"]["chat"]["id"]
    return None
