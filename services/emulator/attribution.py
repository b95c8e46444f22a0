"""Which update a bot's reply, edit or callback answer responds to, so tests can prove
exactly-once handling per update (also across webhook redeliveries).

Exact where the Bot API call names its cause: a reply names the incoming message (the update that
carried it), answerCallbackQuery names the query (the update that carried it). A heuristic where
it does not: an edit is charged to the oldest callback update on that message handed to the bot
and not yet charged with an edit (else the newest one); a message that is not a reply is charged
to the newest update from that chat handed to the bot. "Handed to the bot" means returned by
getUpdates or POSTed to the webhook.
"""

from __future__ import annotations

from services.emulator.updates import chat_id_of


class Attribution:
    def __init__(self) -> None:
        self.by_message: dict[int, int] = {}  # incoming message id -> update id
        self.by_query: dict[str, int] = {}  # callback query id -> update id
        self.latest_in_chat: dict[int, int] = {}
        self.callbacks_on: dict[int, list[int]] = {}  # bot message id -> callback update ids handed out
        self.edited: set[int] = set()

    def incoming(self, update: dict) -> None:
        message = update.get("message")
        if isinstance(message, dict) and "message_id" in message:
            self.by_message[message["message_id"]] = update["update_id"]
        query = update.get("callback_query")
        if isinstance(query, dict) and "id" in query:
            self.by_query[str(query["id"])] = update["update_id"]

    def handed_out(self, update: dict) -> None:
        chat_id = chat_id_of(update)
        if chat_id is not None:
            self.latest_in_chat[chat_id] = update["update_id"]
        query = update.get("callback_query")
        if isinstance(query, dict) and isinstance(query.get("message"), dict):
            seen = self.callbacks_on.setdefault(query["message"]["message_id"], [])
            if update["update_id"] not in seen:
                seen.append(update["update_id"])

    def reply(self, reply_to_message_id: int | None) -> int | None:
        return self.by_message.get(reply_to_message_id) if reply_to_message_id else None

    def message(self, chat_id: int, reply_to_message_id: int | None) -> int | None:
        return self.reply(reply_to_message_id) or self.latest_in_chat.get(chat_id)

    def edit(self, message_id: int) -> int | None:
        handed = self.callbacks_on.get(message_id, [])
        for update_id in handed:
            if update_id not in self.edited:
                self.edited.add(update_id)
                return update_id
        return handed[-1] if handed else None

    def answer(self, callback_query_id: str) -> int | None:
        return self.by_query.get(callback_query_id)
