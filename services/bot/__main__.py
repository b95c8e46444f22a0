"""Entry point of the `bot` program: `python -m services.bot` (see supervisor.conf here).

Polling mode (default): poll only while holding the polling lease (lease.py, poller.py).
Webhook mode (TELEGRAM_WEBHOOK_URL, or RAILWAY_PUBLIC_DOMAIN on Railway): set the webhook and
receive updates through the API's /telegram/webhook (webhook.py).
On SIGTERM: stop taking updates, finish the ones already taken, then release the lease.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from telegram.error import InvalidToken, NetworkError, TimedOut
from telegram.ext import Application, ApplicationBuilder

from services.bot import dedupe, handlers, jobs, schema, webhook
from services.bot.heartbeat import beat_forever
from services.bot.lease import COLLECTION as LEASES
from services.bot.lease import Lease, holder_id, lease_key
from services.bot.poller import Poller
from services.bot.status import BotStatus
from services.common.db import database, make_client
from services.common.logs import setup_logging
from services.common.migrations import migrate_when_reachable
from services.common.settings import EX_CONFIG, Settings, require, settings_or_exit

PROGRAM = "bot"
log = logging.getLogger("botstack.bot")


async def initialize_with_retry(app: Application, stop: asyncio.Event) -> bool:
    """getMe until Telegram answers; False if asked to stop first."""
    delay = 1.0
    while not stop.is_set():
        try:
            await app.initialize()
            return True
        except (NetworkError, TimedOut) as exc:
            log.warning("Bot API not reachable (%s); retrying in %.0f s", exc, delay)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, 30.0)
    return False


async def warn_if_webhook_set(app: Application) -> None:
    """Polling deletes a webhook; never silently (python-telegram-bot's Updater would)."""
    info = await app.bot.get_webhook_info()
    if info.url:
        log.warning("a webhook is set (%s); polling mode deletes it now (set TELEGRAM_WEBHOOK_URL "
                    "to run in webhook mode instead)", info.url)
        await app.bot.delete_webhook(drop_pending_updates=False)


async def run_polling(app: Application, settings: Settings, db, status: BotStatus, stop: asyncio.Event) -> None:
    token = settings.telegram_bot_token.get_secret_value()
    lease = Lease(db[LEASES], lease_key(token), status.instance, settings.lease_ttl_s)
    await warn_if_webhook_set(app)
    poller = Poller(app, lease, status, settings.poll_timeout_s)
    try:
        await poller.run(stop)
    finally:
        status.set(role="stopping")
        await app.stop()  # handles the updates already taken
        try:
            await lease.release()
            log.info("lease released")
        except Exception as exc:  # it expires after its TTL anyway
            log.warning("could not release the lease (%s); it expires in %.0f s", exc, settings.lease_ttl_s)


async def run_webhook(app: Application, settings: Settings, status: BotStatus, stop: asyncio.Event) -> None:
    secret = webhook.webhook_secret(settings)
    srv = webhook.server(app, secret, settings.bot_webhook_port)
    serving = asyncio.create_task(srv.serve())
    try:
        if await webhook.set_webhook(app, settings.webhook_url, secret, stop):
            status.set(role="active")
        await stop.wait()
    finally:
        status.set(role="stopping")
        srv.should_exit = True
        await serving
        await app.stop()  # handles the updates already received; the webhook stays set


async def run() -> int:
    settings = settings_or_exit(PROGRAM)
    require(settings, "telegram_bot_token", PROGRAM)
    token = settings.telegram_bot_token.get_secret_value()
    setup_logging(PROGRAM, settings.log_level, (token,))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    mode = "webhook" if settings.webhook_url else "polling"
    status = BotStatus(Path(settings.run_dir) / "bot.json", mode=mode, instance=holder_id())
    status.write()
    client = make_client(settings, PROGRAM)
    db = database(client, settings)
    app = ApplicationBuilder().token(token).base_url(settings.telegram_api_base_url).updater(None).build()
    app.bot_data["instance"] = status.instance
    handlers.install(app, settings, db)
    dedupe.install(app)
    jobs.schedule(app, settings.job_interval_s)
    heartbeat = asyncio.create_task(beat_forever(Path(settings.run_dir) / "bot.heartbeat"))
    migrating = asyncio.create_task(migrate_when_reachable(db, PROGRAM, schema.STEPS))
    try:
        try:
            if not await initialize_with_retry(app, stop):
                return 0
        except InvalidToken:
            log.error("TELEGRAM_BOT_TOKEN was refused by the Bot API (401 Unauthorized)")
            return EX_CONFIG
        log.info("bot @%s (id %s), %s mode, instance %s, Bot API %s", app.bot.username, settings.bot_id,
                 mode, status.instance, settings.telegram_api_base_url)
        await app.start()
        if mode == "webhook":
            await run_webhook(app, settings, status, stop)
        else:
            await run_polling(app, settings, db, status, stop)
        await app.shutdown()
        return 0
    finally:
        heartbeat.cancel()
        migrating.cancel()
        await client.close()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(run()))
