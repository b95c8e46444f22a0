"""Webhook delivery: while a webhook is set, POST pending updates to it, as Telegram does.

One background asyncio task per bot, in the emulator's own loop, started by setWebhook and ended
when the webhook is deleted (or by the app's shutdown). Like the real server's WebhookActor:
one update per request, JSON, header X-Telegram-Bot-Api-Secret-Token when a secret was set;
a 2xx answer confirms (drops) the update; anything else, or a connection error, is recorded as
getWebhookInfo's last_error_* ("Wrong response from the webhook: 500 Internal Server Error") and
retried later, obeying a Retry-After header.

Deliberately not like it: updates go strictly one at a time, in order (the real server sends up
to max_connections at once, ordered only per chat), and the retry delay starts at RETRY_FIRST_S
and doubles up to RETRY_MAX_S (the real server retries the first failure at once, then doubles up
to 60-120 s and drops an update after about a day) so that tests stay fast.

Test controls: `deliveries` lists every attempt; `redeliver` sends an already delivered update
once more, as Telegram may after a timeout, to prove the bot deduplicates.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from services.emulator.state import BotState

log = logging.getLogger("botstack.emulator.delivery")

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0
POST_TIMEOUT_S = 10.0
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class WebhookDelivery:
    def __init__(self, bot: BotState) -> None:
        self.bot = bot
        self.deliveries: list[dict] = []
        self.delivered: dict[int, dict] = {}  # update id -> update, for redeliver
        self._task: asyncio.Task | None = None

    def ensure_running(self) -> None:
        """Start the task in the running loop unless one is already there (it rereads the config)."""
        loop = asyncio.get_running_loop()
        if self._task is not None and not self._task.done() and self._task.get_loop() is loop:
            return
        self._task = loop.create_task(self._run(), name=f"webhook delivery {self.bot.bot_id}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def redeliver(self, update_id: int) -> dict:
        """POST an already delivered update once more; returns the attempt's record."""
        if not self.bot.webhook.url:
            raise LookupError("no webhook is set")
        update = self.delivered.get(update_id)
        if update is None:
            raise KeyError(f"update {update_id} was not delivered to the webhook")
        async with _client() as client:
            return await self._post(client, update, redelivery=True)

    async def _run(self) -> None:
        me = asyncio.current_task()
        try:
            async with _client() as client:
                delay = 0.0
                while True:
                    hook = self.bot.webhook
                    if not hook.url:
                        self._task = None if self._task is me else self._task
                        return
                    if not self.bot.pending:
                        await self.bot.changed.wait()
                        continue
                    generation = hook.generation
                    record = await self._post(client, self.bot.pending[0])
                    if record["ok"]:
                        delay = 0.0
                        continue
                    delay = min(RETRY_MAX_S, delay * 2) if delay else RETRY_FIRST_S
                    await self._pause(record["retry_after"] or delay, generation)
        except asyncio.CancelledError:
            raise
        except Exception:  # a test double must not die silently: say why, and let setWebhook restart it
            log.exception("webhook delivery for bot %s stopped", self.bot.bot_id)

    async def _pause(self, seconds: float, generation: int) -> None:
        """Wait before a retry; a webhook change (new URL, deleted) cuts the wait short."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0 and self.bot.webhook.generation == generation:
            await self.bot.changed.wait(remaining)

    async def _post(self, client: httpx.AsyncClient, update: dict, redelivery: bool = False) -> dict:
        hook = self.bot.webhook
        generation = hook.generation
        headers = {SECRET_HEADER: hook.secret_token} if hook.secret_token else {}
        self.bot.outbox.attribution.handed_out(update)
        record = {"update_id": update["update_id"], "url": hook.url, "status": None, "error": None,
                  "time": time.time(), "redelivery": redelivery, "ok": False, "retry_after": 0}
        try:
            response = await client.post(hook.target, json=update, headers=headers)
        except httpx.HTTPError as exc:
            record["error"] = _connection_error(exc)
        else:
            record["status"] = response.status_code
            if 200 <= response.status_code <= 299:
                record["ok"] = True
            else:
                record["error"] = f"Wrong response from the webhook: {response.status_code} {response.reason_phrase}"
                record["retry_after"] = _retry_after(response)
        self.deliveries.append(record)
        if record["ok"]:
            self.delivered[update["update_id"]] = update
            if not redelivery:
                self.bot.confirm_delivered(update["update_id"])
        elif generation == self.bot.webhook.generation:
            hook.record_error(record["error"])
        return record


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=POST_TIMEOUT_S, trust_env=False)


def _connection_error(exc: httpx.HTTPError) -> str:
    """Worded like the server's: the OS's reason ("Connection refused") when there is one."""
    if isinstance(exc, httpx.TimeoutException):
        return "Timeout expired"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno)
        cause = cause.__cause__ or cause.__context__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, min(float(response.headers.get("retry-after", 0)), RETRY_MAX_S))
    except ValueError:
        return 0.0
