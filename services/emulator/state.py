"""One bot's state inside the Bot API emulator: its update queue and Telegram's long-poll semantics.

getUpdates follows telegram-bot-api (Client::process_get_updates_query, do_get_updates,
abort_long_poll, fail_query_conflict):
- `offset` confirms, i.e. drops, lower update ids; a negative offset keeps only the last -offset;
- `limit` is clamped to 1..100 and `timeout` to 0..50 s;
- pending updates are returned at once, without conflict; a poll that has to wait aborts the
  poll held before it with 409 "Conflict: terminated by other getUpdates request; ...";
- 409s are throttled per bot: one is sent at once, and while CONFLICT_INTERVAL_S has not passed
  since then, any other is sent only CONFLICT_INTERVAL_S after it was decided;
- repeating the previous call's offset within 3 s waits at least 3 s, within 0.5 s gets limit 1;
- while a webhook is set: 409 "Conflict: can't use getUpdates method while webhook is active; ...".
Beyond the real server, for tests: a held poll whose client disconnected is released (checked every
DISCONNECT_CHECK_S and whenever another poll arrives) and every poll is recorded (polling.py).
Tests patch the constants below down to keep fast.
"""

from __future__ import annotations

import asyncio
import copy
import time

from services.emulator.delivery import WebhookDelivery
from services.emulator.errors import ApiError
from services.emulator.faults import Faults
from services.emulator.flood import FloodControl
from services.emulator.messages import Outbox
from services.emulator.polling import Poll, PollLog, Probe
from services.emulator.updates import DEFAULT_ALLOWED, callback_query, parse_allowed_updates, text_message, update_type
from services.emulator.wakeups import Wakeup
from services.emulator.webhook import CONFLICT_SET_WEBHOOK, Webhook

__all__ = ["ApiError", "BotState", "CONFLICT_OTHER_POLL", "CONFLICT_WEBHOOK_ACTIVE", "MAX_POLL_TIMEOUT_S"]

MAX_POLL_TIMEOUT_S = 50
MAX_LIMIT = 100
CONFLICT_INTERVAL_S = 3.0
DISCONNECT_CHECK_S = 0.2
REPEAT_WINDOW_S = 3.0
REPEAT_MIN_TIMEOUT_S = 3
REPEAT_LIMIT_WINDOW_S = 0.5

CONFLICT_OTHER_POLL = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
CONFLICT_WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)


class BotState:
    def __init__(self, bot_id: int, secret: str) -> None:
        self.bot_id = bot_id
        self.secret = secret
        self.pending: list[dict] = []
        self.next_update_id = 1
        self.allowed_updates = DEFAULT_ALLOWED
        self.polls = 0
        self.conflicts = 0
        self.poll_log = PollLog()
        self.outbox = Outbox(self.user)
        self.webhook = Webhook()
        self.faults = Faults()
        self.flood = FloodControl()
        self.changed = Wakeup()  # a new update or a webhook change: the delivery task looks again
        self.delivery = WebhookDelivery(self)
        self._held: Poll | None = None
        self._conflicts_free_at = 0.0
        self._previous_poll: tuple[int, float] = (0, -1e9)
        self._callback_queries = 0

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

    @property
    def sent(self) -> list[dict]:
        return self.outbox.sent

    @property
    def polling_now(self) -> int:
        return len(self.poll_log.active)

    @property
    def max_polling_at_once(self) -> int:
        return self.poll_log.max_at_once

    # --- getUpdates ------------------------------------------------------------------
    async def get_updates(self, offset: int | None = None, limit: int = MAX_LIMIT, timeout: float = 0, *,
                          allowed_updates=None, probe: Probe | None = None) -> list[dict]:
        """`probe`: "has this request's client disconnected?" (the HTTP layer passes one)."""
        self.polls += 1
        await self._release_disconnected()
        poll = self.poll_log.begin(probe)
        outcome = "error"
        try:
            if self.webhook.url:
                outcome = "conflict"
                return await self._conflict(poll, CONFLICT_WEBHOOK_ACTIVE)
            offset = offset or 0
            limit = max(1, min(limit, MAX_LIMIT))
            timeout = max(0, min(timeout, MAX_POLL_TIMEOUT_S))
            self.set_allowed_updates(allowed_updates)
            limit, timeout = self._repeat_rule(offset, limit, timeout)
            self.confirm(offset)
            if not self.pending and timeout > 0:
                reason = await self._hold(poll, timeout)
                if reason in (CONFLICT_OTHER_POLL, CONFLICT_SET_WEBHOOK):
                    outcome = "conflict"
                    return await self._conflict(poll, reason)
                if reason == "disconnected":
                    outcome = "disconnected"
                    return []
            outcome = "updates" if self.pending else ("timeout" if timeout > 0 else "empty")
            return self._hand_out(limit)
        finally:
            self.poll_log.finish(poll, outcome)

    def confirm(self, offset: int | None) -> None:
        if offset is not None and offset > 0:
            self.pending = [u for u in self.pending if u["update_id"] >= offset]
        elif offset is not None and offset < 0:
            self.pending = self.pending[offset:]

    def abort_held_poll(self, description: str) -> None:
        """End the poll waiting for updates, if any, with a 409 `description`."""
        self._wake_held(description)

    def _repeat_rule(self, offset: int, limit: int, timeout: float) -> tuple[int, float]:
        now = time.monotonic()
        previous_offset, previous_start = self._previous_poll
        self._previous_poll = (offset, now)
        if offset == previous_offset:
            if timeout < REPEAT_MIN_TIMEOUT_S and now < previous_start + REPEAT_WINDOW_S:
                timeout = min(REPEAT_MIN_TIMEOUT_S, MAX_POLL_TIMEOUT_S)
            if now < previous_start + REPEAT_LIMIT_WINDOW_S:
                limit = 1
        return limit, timeout

    async def _hold(self, poll: Poll, timeout: float) -> str:
        """Wait for an update; returns why the wait ended: "update", "timeout", "disconnected" or a
        409 description."""
        self._wake_held(CONFLICT_OTHER_POLL)
        poll.held = asyncio.get_running_loop().create_future()
        self._held = poll
        deadline = time.monotonic() + timeout
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                step = min(remaining, DISCONNECT_CHECK_S) if poll.probe else remaining
                done, _ = await asyncio.wait({poll.held}, timeout=step)
                if done:
                    return poll.held.result()
                if poll.probe and await poll.probe():
                    self.poll_log.finish(poll, "disconnected")
                    return "disconnected"
            return "timeout"
        finally:
            poll.held = None
            if self._held is poll:
                self._held = None

    def _wake_held(self, reason: str) -> None:
        poll, self._held = self._held, None
        if poll is not None and poll.held is not None and not poll.held.done():
            poll.held.set_result(reason)

    async def _conflict(self, poll: Poll, description: str) -> list:
        """Raise the 409, throttled like the real server; [] if the client left meanwhile."""
        if time.monotonic() >= self._conflicts_free_at:
            self._conflicts_free_at = time.monotonic() + CONFLICT_INTERVAL_S
        elif await self._gone_during(poll, CONFLICT_INTERVAL_S):
            self.poll_log.finish(poll, "disconnected")
            return []
        self.conflicts += 1
        raise ApiError(409, description)

    async def _gone_during(self, poll: Poll, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(remaining, DISCONNECT_CHECK_S) if poll.probe else remaining)
            if poll.end is not None or (poll.probe and await poll.probe()):
                return True
        return False

    async def _release_disconnected(self) -> None:
        """Before a new poll counts as overlapping, drop the ones whose clients already left."""
        for poll in list(self.poll_log.active):
            if poll.probe is not None and await poll.probe():
                self.poll_log.finish(poll, "disconnected")
                if self._held is poll:
                    self._wake_held("disconnected")

    def _hand_out(self, limit: int) -> list[dict]:
        batch = self.pending[:limit]
        for update in batch:
            self.outbox.attribution.handed_out(update)
        return batch

    # --- shared with the webhook -----------------------------------------------------
    def set_allowed_updates(self, value) -> None:
        parsed = parse_allowed_updates(value)
        if parsed is not None:
            self.allowed_updates = parsed

    def drop_pending(self) -> None:
        self.pending.clear()

    def confirm_delivered(self, update_id: int) -> None:
        self.pending = [u for u in self.pending if u["update_id"] != update_id]

    # --- what the bot sends ----------------------------------------------------------
    def send_message(self, chat_id: int, text: str, reply_to: int | None = None,
                     reply_markup: dict | None = None, allow_without_reply: bool = False) -> dict:
        return self.outbox.send_message(chat_id, text, reply_to, reply_markup, allow_without_reply)

    # --- test controls ---------------------------------------------------------------
    def inject(self, spec: dict) -> int:
        """Queue an update; `spec` as for inject_update. Returns its update_id."""
        return self.inject_update(spec)[0]["update_id"]

    def inject_update(self, spec: dict) -> tuple[dict, bool]:
        """`spec`: {"update": raw body} | {"text", "user"?, "chat_id"?} |
        {"callback_data", "message_id", "user"?}. Returns (update, queued); an update of a type
        the bot did not allow is dropped, as Telegram never creates it."""
        if "update" in spec:
            body = copy.deepcopy(spec["update"])
        elif "callback_data" in spec:
            body = {"callback_query": self._callback_query(spec)}
        else:
            body = {"message": text_message(self.outbox.new_message_id(), spec)}
        body.pop("update_id", None)
        update = {"update_id": self.next_update_id, **body}
        self.next_update_id += 1
        self.outbox.remember(update)
        kind = update_type(update)
        if kind is not None and kind not in self.allowed_updates:
            return update, False
        self.pending.append(update)
        self._wake_held("update")
        self.changed.notify()
        return update, True

    def _callback_query(self, spec: dict) -> dict:
        if "message_id" not in spec:
            raise ValueError('a callback_query needs "message_id", a message the bot sent')
        message_id = int(spec["message_id"])
        message = self.outbox.messages.get(message_id)
        if message is None:
            raise LookupError(f"message {message_id} is unknown")
        if message["from"]["id"] != self.bot_id:
            raise ValueError(f"message {message_id} was not sent by the bot")
        self._callback_queries += 1
        query_id = str(self.bot_id * 1_000_000_000 + self._callback_queries)
        return callback_query(query_id, self.bot_id, message, spec)

    def stats(self) -> dict:
        return {
            "polls": self.polls,
            "conflicts": self.conflicts,
            "pending": len(self.pending),
            "polling_now": self.polling_now,
            "max_polling_at_once": self.max_polling_at_once,
            "overlapping_polls": self.poll_log.overlapping(),
            "since": self.poll_log.since,
            "sent": len(self.sent),
            "flood": self.flood.describe(),
            "swallowed": self.faults.swallowed,
        }

    def reset_stats(self) -> dict:
        """A settle point: poll, conflict and overlap counts start again from zero."""
        self.polls = 0
        self.conflicts = 0
        self.poll_log.reset()
        return self.stats()

