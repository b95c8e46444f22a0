"""Each update is handled once, even when Telegram (or a handover) delivers it twice.

The first handler group records the update id under a unique key; a second delivery hits
the key and stops there. Shared by polling and webhook mode, and across instances that
share the database.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from pymongo.errors import DuplicateKeyError
from telegram import Update
from telegram.ext import Application, ApplicationHandlerStop, ContextTypes, TypeHandler

log = logging.getLogger("botstack.bot.dedupe")

COLLECTION = "processed_updates"
GROUP = -100  # before every other handler


async def _once(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    settings = context.bot_data["settings"]
    key = f"{settings.bot_id}:{update.update_id}"
    try:
        await context.bot_data["db"][COLLECTION].insert_one({"_id": key, "at": datetime.now(timezone.utc)})
    except DuplicateKeyError:
        log.info("update %s was already handled; skipped", update.update_id)
        raise ApplicationHandlerStop from None


def install(application: Application) -> None:
    application.add_handler(TypeHandler(Update, _once), group=GROUP)
