"""Entry point of the `bot` program: `python -m services.bot` (see supervisor.conf here).

The lifecycle is spelled out (initialize, start, poll, stop) instead of `run_polling()` so the
bot can retry Telegram at start-up without exiting, and so later steps (the polling lease)
can decide when polling runs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from telegram import Update
from telegram.error import InvalidToken, NetworkError, TimedOut
from telegram.ext import Application, ApplicationBuilder

from services.bot import handlers
from services.bot.heartbeat import beat_forever
from services.common.db import database, make_client
from services.common.logs import setup_logging
from services.common.settings import EX_CONFIG, require, settings_or_exit

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


async def run() -> int:
    settings = settings_or_exit(PROGRAM)
    require(settings, "telegram_bot_token", PROGRAM)
    token = settings.telegram_bot_token.get_secret_value()
    setup_logging(PROGRAM, settings.log_level, (token,))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    client = make_client(settings, PROGRAM)
    app = ApplicationBuilder().token(token).base_url(settings.telegram_api_base_url).build()
    handlers.install(app, settings, database(client, settings))
    heartbeat = asyncio.create_task(beat_forever(Path(settings.run_dir) / "bot.heartbeat"))
    try:
        try:
            if not await initialize_with_retry(app, stop):
                return 0
        except InvalidToken:
            log.error("TELEGRAM_BOT_TOKEN was refused by the Bot API (401 Unauthorized)")
            return EX_CONFIG
        log.info("bot @%s (id %s) starts polling %s", app.bot.username, settings.bot_id,
                 settings.telegram_api_base_url)
        await app.start()
        await app.updater.start_polling(allowed_updates=Update.ALL_TYPES, bootstrap_retries=-1)
        await stop.wait()
        log.info("stopping: updater first, then pending updates, then the application")
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
        return 0
    finally:
        heartbeat.cancel()
        await client.close()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(run()))
