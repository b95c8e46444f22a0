"""Entry point of the `bot` program: `python -m services.bot` (see supervisor.conf here).

Polling mode (default): poll only while holding the polling lease (lease.py, poller.py).
Webhook mode (TELEGRAM_WEBHOOK_URL, or RAILWAY_PUBLIC_DOMAIN on Railway): set the webhook and
receive updates through the API's /telegram/webhook (webhook.py).
Either way updates go through the durable inbox (inbox.py): stored before Telegram is told they
arrived, done only after their handlers finished, retried or parked when they fail.
On SIGTERM: stop taking updates, finish the ones already taken, hand back the rest, then release
the lease.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from pymongo.errors import PyMongoError
from telegram.error import InvalidToken
from telegram.ext import Application, ApplicationBuilder

from services.bot import handlers, inbox, schema, webhook
from services.bot.botapi import until_it_works
from services.bot.flood import FloodSafeLimiter
from services.bot.heartbeat import beat_forever
from services.bot.inbox import Inbox, InboxUpdateProcessor
from services.bot.lease import COLLECTION as LEASES
from services.bot.lease import Lease, holder_id, lease_key
from services.bot.poller import Poller
from services.bot.status import BotStatus
from services.common import oom
from services.common.db import database, make_client
from services.common.extensions import hooks
from services.common.logs import setup_logging
from services.common.migrations import migrate_when_reachable
from services.common.settings import EX_CONFIG, Settings, require, settings_or_exit
from services.common.wait import wait_for_stop

PROGRAM = "bot"
TOKEN_REFUSED = ("TELEGRAM_BOT_TOKEN was refused by the Bot API (401 Unauthorized): set the bot's current token "
                 "(@BotFather, /token)")
log = logging.getLogger("botstack.bot")


async def warn_if_webhook_set(app: Application, stop: asyncio.Event) -> None:
    """Polling deletes a webhook; never silently (python-telegram-bot's Updater would)."""
    info = await until_it_works("getWebhookInfo", app.bot.get_webhook_info, stop)
    if info is not None and info.url:
        log.warning("a webhook is set (%s); polling mode deletes it now (set TELEGRAM_WEBHOOK_URL "
                    "to run in webhook mode instead)", info.url)
        await until_it_works("deleteWebhook", lambda: app.bot.delete_webhook(drop_pending_updates=False), stop)


async def release_predecessors(box: Inbox, stop: asyncio.Event) -> None:
    """As soon as MongoDB answers: what the previous bot process here had taken is due again."""
    while not stop.is_set():
        try:
            await box.release_predecessors()
            return
        except PyMongoError:
            await wait_for_stop(stop, 1.0)


async def stop_when_refused(box: Inbox, stop: asyncio.Event) -> None:
    """A handler's reply refused for the token (in webhook mode nothing else would notice):
    stop as for SIGTERM, then exit 78 like a token refused at start."""
    await box.token_refused.wait()
    stop.set()


async def run_polling(app: Application, settings: Settings, db, box: Inbox, status: BotStatus,
                      stop: asyncio.Event) -> None:
    token = settings.telegram_bot_token.get_secret_value()
    lease = Lease(db[LEASES], lease_key(token), status.instance, settings.lease_ttl_s, clock=box.clock)
    await warn_if_webhook_set(app, stop)
    poller = Poller(app, lease, box, status, settings.poll_timeout_s)
    try:
        await poller.run(stop)
    finally:
        status.set(role="stopping")
        box.stopping = True  # finish the updates that run; hand back those that wait
        await app.stop()
        await box.hand_back()
        try:
            await lease.release()
            log.info("lease released")
        except Exception as exc:  # it expires after its TTL anyway
            log.warning("could not release the lease (%s); it expires in %.0f s", exc, settings.lease_ttl_s)


async def run_webhook(app: Application, settings: Settings, box: Inbox, status: BotStatus,
                      stop: asyncio.Event) -> None:
    secret = webhook.webhook_secret(settings)
    srv = webhook.server(box, secret, settings.bot_webhook_port)
    serving = asyncio.create_task(srv.serve())
    dispatching = asyncio.create_task(box.dispatch(app, stop), name="inbox")
    try:
        if await webhook.set_webhook(app, settings.webhook_url, secret, stop):
            status.set(role="active")
        await stop.wait()
    finally:
        status.set(role="stopping")
        srv.should_exit = True
        await serving
        await dispatching
        box.stopping = True  # finish the updates that run; hand back those that wait
        await app.stop()  # the webhook stays set
        await box.hand_back()


async def run() -> int:
    settings = settings_or_exit(PROGRAM)
    require(settings, "telegram_bot_token", PROGRAM)
    token = settings.telegram_bot_token.get_secret_value()
    setup_logging(PROGRAM, settings.log_level, (token,))
    oom.volunteer(PROGRAM)  # a leaking handler is killed and restarted, not the database

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    mode = "webhook" if settings.webhook_url else "polling"
    status = BotStatus(Path(settings.run_dir) / "bot.json", mode=mode, instance=holder_id(), git_sha=settings.build_sha)
    status.write()
    client = make_client(settings, PROGRAM)
    db = database(client, settings)
    box = Inbox(db[inbox.COLLECTION], settings.bot_id, status.instance,
                claim_ttl_s=settings.inbox_claim_ttl_s, max_attempts=settings.inbox_max_attempts,
                retry_base_s=settings.inbox_retry_base_s, retention_s=settings.inbox_retention_h * 3600,
                window=settings.inbox_concurrency * 4, api_answered_at=lambda: limiter.answered_at)
    limiter = FloodSafeLimiter(settings, status, on_back=box.due_now)
    app = (ApplicationBuilder().token(token).base_url(settings.telegram_api_base_url).updater(None)
           .rate_limiter(limiter)
           .concurrent_updates(InboxUpdateProcessor(box, settings.inbox_concurrency))
           .build())
    app.bot_data["instance"] = status.instance
    inbox.install(app, box)
    handlers.install(app, settings, db)
    heartbeat = asyncio.create_task(beat_forever(Path(settings.run_dir) / "bot.heartbeat"))
    migrating = [asyncio.create_task(migrate_when_reachable(db, PROGRAM, schema.STEPS))]
    for name, steps in hooks(settings, "SCHEMA_STEPS"):  # your indexes: services/common/extensions.py
        migrating.append(asyncio.create_task(migrate_when_reachable(db, f"ext:{name}", steps)))
    releasing = asyncio.create_task(release_predecessors(box, stop))
    refusing = asyncio.create_task(stop_when_refused(box, stop))
    try:
        try:
            if await until_it_works("getMe", app.initialize, stop) is None and stop.is_set():
                return 0
            log.info("bot @%s (id %s), %s mode, instance %s, Bot API %s", app.bot.username, settings.bot_id,
                     mode, status.instance, settings.telegram_api_base_url)
            await app.start()
            await releasing  # before handling anything: the predecessor's claims first
            if mode == "webhook":
                await run_webhook(app, settings, box, status, stop)
            else:
                await run_polling(app, settings, db, box, status, stop)
            if box.token_refused.is_set():
                raise InvalidToken("a handler's Bot API call was refused")
        except InvalidToken:  # at start, or later: revoked in @BotFather while running
            log.error(TOKEN_REFUSED)
            status.set(role="stopping", refused=TOKEN_REFUSED)
            return EX_CONFIG
        await app.shutdown()
        return 0
    finally:
        heartbeat.cancel()
        for task in migrating:
            task.cancel()
        releasing.cancel()
        refusing.cancel()
        await client.close()


def serve() -> None:
    raise SystemExit(asyncio.run(run()))


if __name__ == "__main__":
    if settings_or_exit(PROGRAM).reload:  # development only (compose.dev.yaml)
        from services.common.reloading import run_reloading

        run_reloading(PROGRAM, "services.bot.__main__.serve")
    else:
        serve()
