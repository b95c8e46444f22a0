"""What the bot does with an update. One handler per behaviour."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from pymongo.asynchronous.database import AsyncDatabase
from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from services.common.buildinfo import build_info
from services.common.collections import MESSAGES, USERS
from services.common.settings import Settings

log = logging.getLogger(__name__)


def _db(context: ContextTypes.DEFAULT_TYPE) -> AsyncDatabase:
    return context.bot_data["db"]


async def record_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Count every incoming message once (keyed by update_id, so a redelivery is not a new one)."""
    msg = update.effective_message
    if msg is None:
        return
    await _db(context)[MESSAGES].update_one(
        {"_id": update.update_id},
        {
            "$setOnInsert": {
                "chat_id": msg.chat_id,
                "user_id": update.effective_user.id if update.effective_user else None,
                "text": msg.text,
                "date": msg.date,
            }
        },
        upsert=True,
    )


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/start: remember the user and greet them."""
    user = update.effective_user
    now = datetime.now(timezone.utc)
    await _db(context)[USERS].update_one(
        {"_id": user.id},
        {
            "$set": {
                "first_name": user.first_name,
                "username": user.username,
                "language_code": user.language_code,
                "last_seen": now,
            },
            "$setOnInsert": {"first_seen": now},
        },
        upsert=True,
    )
    await update.effective_message.reply_text(f"Hello, {user.first_name}! botstack is listening.", do_quote=True)


async def version(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/version: which build answers, and since when."""
    info = build_info(context.bot_data["settings"], "bot")
    await update.effective_message.reply_text(
        f"version {info['version']}\n"
        f"git_sha {info['git_sha']}\n"
        f"started_at {info['started_at']}\n"
        f"uptime_s {int(info['uptime_s'])}",
        do_quote=True,
    )


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A bad update is logged and skipped; the bot keeps serving the others."""
    update_id = update.update_id if isinstance(update, Update) else None
    log.error("update %s failed: %s", update_id, context.error, exc_info=context.error)


def install(application: Application, settings: Settings, db: AsyncDatabase) -> None:
    application.bot_data["settings"] = settings
    application.bot_data["db"] = db
    application.add_handler(MessageHandler(filters.ALL, record_message), group=-1)
    application.add_handler(CommandHandler("start", start))
    application.add_handler(CommandHandler("version", version))
    application.add_error_handler(on_error)
