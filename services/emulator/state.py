"""One bot's state inside the Bot API emulator, with Telegram's long-poll semantics.

This is a test double. What it reproduces of the real Bot API server:
- updates wait until a `getUpdates` with a higher `offset` confirms them;
- a `getUpdates` that has to wait aborts the poll already held for that bot with
  409 "Conflict: terminated by other getUpdates request; ...", while pending updates are
  returned at once without conflict;
- the long-poll `timeout` is capped at 50 s and `limit` is clamped to 1..100.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

MAX_POLL_TIMEOUT_S = 50
CONFLICT_OTHER_POLL = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)


class ApiError(Exception):
    """A Bot API error reply: {"ok": false, "error_code", "description"}."""

    def __init__(self, code: int, description: str, parameters: dict | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


@dataclass
class BotState:
    bot_id: int
    secret: str
    pending: list[dict] = field(default_factory=list)
    sent: list[dict] = field(default_factory=list)
    next_update_id: int = 1
    next_message_id: int = 1
    message_update: dict[int, int] = field(default_factory=dict)
    polls: int = 0
    conflicts: int = 0
    polling_now: int = 0
    max_polling_at_once: int = 0
    _held: asyncio.Future | None = None

    @property
    def user(self) -> dict:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "botstack emulator",
            "username": f"botstack_{self.bot_id}_bot",
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    # --- Bot API methods -------------------------------------------------------------
    def confirm(self, offset: int | None) -> None:
        if offset is not None and offset > 0:
            self.pending = [u for u in self.pending if u["update_id"] >= offset]

    async def get_updates(self, offset: int | None, limit: int, timeout: float) -> list[dict]:
        self.polls += 1
        self.confirm(offset)
        limit = max(1, min(limit, 100))
        if self.pending or timeout <= 0:
            return self.pending[:limit]
        if self._held is not None and not self._held.done():
            self._held.set_result("conflict")
        held = asyncio.get_running_loop().create_future()
        self._held = held
        self.polling_now += 1
        self.max_polling_at_once = max(self.max_polling_at_once, self.polling_now)
        try:
            reason = await asyncio.wait_for(asyncio.shield(held), min(timeout, MAX_POLL_TIMEOUT_S))
        except TimeoutError:
            reason = "timeout"
        finally:
            self.polling_now -= 1
            if self._held is held:
                self._held = None
        if reason == "conflict":
            self.conflicts += 1
            raise ApiError(409, CONFLICT_OTHER_POLL)
        return self.pending[:limit]

    def send_message(self, chat_id: int, text: str, reply_to: int | None) -> dict:
        if not text:
            raise ApiError(400, "Bad Request: message text is empty")
        message = {
            "message_id": self._message_id(),
            "from": self.user,
            "chat": {"id": chat_id, "type": "private"},
            "date": int(time.time()),
            "text": text,
        }
        self.sent.append(
            {
                "message_id": message["message_id"],
                "chat_id": chat_id,
                "text": text,
                "reply_to_message_id": reply_to,
                "reply_to_update_id": self.message_update.get(reply_to) if reply_to else None,
                "date": message["date"],
            }
        )
        return message

    # --- test controls ---------------------------------------------------------------
    def inject(self, spec: dict) -> int:
        """Queue an update; `spec` is a raw update body or {"text", "user", "chat_id"}."""
        update_id = self.next_update_id
        self.next_update_id += 1
        if "update" in spec:
            update = dict(spec["update"])
        else:
            user = {"id": 1001, "is_bot": False, "first_name": "Test", **spec.get("user", {})}
            text = str(spec.get("text", ""))
            message = {
                "message_id": self._message_id(),
                "from": user,
                "chat": {"id": spec.get("chat_id", user["id"]), "type": "private",
                         "first_name": user["first_name"]},
                "date": int(time.time()),
                "text": text,
            }
            if text.startswith("/"):
                command = text.split()[0]
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
            self.message_update[message["message_id"]] = update_id
            update = {"message": message}
        update["update_id"] = update_id
        self.pending.append(update)
        if self._held is not None and not self._held.done():
            self._held.set_result("update")
        return update_id

    def stats(self) -> dict:
        return {
            "polls": self.polls,
            "conflicts": self.conflicts,
            "pending": len(self.pending),
            "polling_now": self.polling_now,
            "max_polling_at_once": self.max_polling_at_once,
            "sent": len(self.sent),
        }

    def _message_id(self) -> int:
        self.next_message_id += 1
        return self.next_message_id - 1
