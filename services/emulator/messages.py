"""What the bot sends: sendMessage, editMessageText, answerCallbackQuery, and the record tests read.

Every sent message, edit and callback answer goes into `sent` with "kind" and the "update_id" it
responds to (attribution.py), so a test can prove a bot acted exactly once per update. Calls the
real server rejects only because they repeat an earlier effect (an edit that changes nothing, a
second answer to one callback query) are recorded too, with "error" set; everything else has
"error": None.
"""

from __future__ import annotations

import copy
import time

from services.emulator.attribution import Attribution
from services.emulator.errors import ApiError

MAX_TEXT_LENGTH = 4096
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
QUERY_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"


class Outbox:
    def __init__(self, bot_user: dict) -> None:
        self.bot_user = bot_user
        self.messages: dict[int, dict] = {}  # every message the emulator knows: users' and the bot's
        self.sent: list[dict] = []
        self.answered: set[str] = set()
        self.attribution = Attribution()
        self._next_message_id = 1

    def new_message_id(self) -> int:
        self._next_message_id += 1
        return self._next_message_id - 1

    def remember(self, update: dict) -> None:
        """Keep the messages an injected update carries, so replies to them and edits find them."""
        for key in ("message", "edited_message", "channel_post", "business_message"):
            message = update.get(key)
            if isinstance(message, dict) and "message_id" in message and "chat" in message:
                self.messages[message["message_id"]] = message
                self._next_message_id = max(self._next_message_id, message["message_id"] + 1)
        self.attribution.incoming(update)

    # --- Bot API methods -------------------------------------------------------------
    def send_message(self, chat_id: int, text: str, reply_to: int | None = None,
                     reply_markup: dict | None = None, allow_without_reply: bool = False) -> dict:
        _check_text(text)
        replied = self.messages.get(reply_to) if reply_to else None
        if reply_to and (replied is None or replied["chat"]["id"] != chat_id):
            if not allow_without_reply:
                raise ApiError(400, "Bad Request: message to be replied not found")
            reply_to = None
        known_chat = next((m["chat"] for m in self.messages.values() if m["chat"]["id"] == chat_id), None)
        message = {
            "message_id": self.new_message_id(),
            "from": self.bot_user,
            "chat": dict(known_chat or {"id": chat_id, "type": "private"}),
            "date": int(time.time()),
            "text": text,
        }
        if replied is not None and reply_to:
            message["reply_to_message"] = {k: v for k, v in replied.items() if k != "reply_to_message"}
        if reply_markup:
            message["reply_markup"] = reply_markup
        self.messages[message["message_id"]] = message
        self.sent.append({
            "kind": "message",
            "message_id": message["message_id"],
            "chat_id": chat_id,
            "text": text,
            "reply_markup": reply_markup,
            "reply_to_message_id": reply_to,
            "reply_to_update_id": self.attribution.reply(reply_to),
            "update_id": self.attribution.message(chat_id, reply_to),
            "date": message["date"],
            "sent_at": time.time(),  # to the microsecond: benchmarks time replies by it
            "error": None,
        })
        return copy.deepcopy(message)

    def edit_message_text(self, chat_id: int, message_id: int, text: str, reply_markup: dict | None) -> dict:
        """Without reply_markup the inline keyboard goes, as on Telegram."""
        _check_text(text)
        message = self.messages.get(message_id)
        if message is None or message["chat"]["id"] != chat_id:
            raise ApiError(400, "Bad Request: message to edit not found")
        if message["from"]["id"] != self.bot_user["id"]:
            raise ApiError(400, "Bad Request: message can't be edited")
        record = {
            "kind": "edit",
            "message_id": message_id,
            "chat_id": chat_id,
            "text": text,
            "reply_markup": reply_markup,
            "update_id": self.attribution.edit(message_id),
            "date": int(time.time()),
            "error": None,
        }
        if text == message["text"] and reply_markup == message.get("reply_markup"):
            self.sent.append({**record, "error": NOT_MODIFIED})
            raise ApiError(400, NOT_MODIFIED)
        message.update(text=text, edit_date=record["date"])
        message.pop("entities", None)
        if reply_markup:
            message["reply_markup"] = reply_markup
        else:
            message.pop("reply_markup", None)
        self.sent.append(record)
        return copy.deepcopy(message)

    def answer_callback_query(self, callback_query_id: str, text: str, show_alert: bool) -> bool:
        update_id = self.attribution.answer(callback_query_id)
        if update_id is None:
            raise ApiError(400, QUERY_INVALID)
        record = {
            "kind": "callback_answer",
            "callback_query_id": callback_query_id,
            "text": text,
            "show_alert": show_alert,
            "update_id": update_id,
            "date": int(time.time()),
            "error": None,
        }
        if callback_query_id in self.answered:
            self.sent.append({**record, "error": QUERY_INVALID})
            raise ApiError(400, QUERY_INVALID)
        self.answered.add(callback_query_id)
        self.sent.append(record)
        return True


def _check_text(text: str) -> None:
    if not text.strip():
        raise ApiError(400, "Bad Request: message text is empty")
    if len(text) > MAX_TEXT_LENGTH:
        raise ApiError(400, "Bad Request: message is too long")
