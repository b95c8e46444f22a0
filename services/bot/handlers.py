"""What the platform itself does with an update: count every message, answer /version, log a
handler's error. Everything else a bot does is yours (`yours/`; the shipped example is
`yours/example/`), installed here through services/common/extensions.py.

Handlers run at least once per update (the inbox runs an update again when its process died
before it was marked done), so the count is keyed by update_id: a re-run changes nothing.
"""

from __future__ import annotations

import logging

from pymongo.asynchronous.database import AsyncDatabase
from telegram import Update
from telegram.error import InvalidToken
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from services.bot.inbox import out_of_reach
from services.common.buildinfo import build_info
from services.common.collections import MESSAGES
from services.common.extensions import hooks
from services.common.settings import Settings

log = logging.getLogger(__name__)


async def record_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Count every incoming message once: keyed by update_id, so a re-run finds it there.

    Written with the update's done mark (Inbox.record): one insert for many messages, and an
    insert whose duplicate is skipped rather than an upsert, which the MongoDB-wire stand-in
    (FerretDB on SQLite) would match against every stored message."""
    msg = update.effective_message
    if msg is None:
        return
    await context.bot_data["inbox"].record(update, MESSAGES, {
        "_id": update.update_id,
        "chat_id": msg.chat_id,
        "user_id": update.effective_user.id if update.effective_user else None,
        "text": msg.text,
        "date": msg.date,
    })


async def version(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/version: which build answers, and since when."""
    info = build_info(context.bot_data["settings"], "bot")
    await update.effective_message.reply_text(
        f"version {info['version']}\n"
        f"git_sha {info['git_sha']}\n"
        f"started_at {info['started_at']}\n"
        f"uptime_s {int(info['uptime_s'])}\n"
        f"instance {context.bot_data.get('instance', '?')}",
        do_quote=True,
    )


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A bad update is logged and skipped; the bot keeps serving the others."""
    update_id = update.update_id if isinstance(update, Update) else None
    if isinstance(context.error, InvalidToken):  # not the update's fault: the bot stops with one line for it
        log.warning("update %s handed back: the Bot API refused the token", update_id)
        return
    if out_of_reach(context.error):  # nor this: the inbox tries it again and says so in one line
        return
    log.error("update %s failed: %s", update_id, context.error, exc_info=context.error)


def install(application: Application, settings: Settings, db: AsyncDatabase) -> None:
    application.bot_data["settings"] = settings
    application.bot_data["db"] = db
    for _name, install_yours in hooks(settings, "install"):  # your handlers: services/common/extensions.py
        install_yours(application)
    application.add_handler(MessageHandler(filters.ALL, record_message), group=-1)
    application.add_handler(CommandHandler("version", version))
    application.add_error_handler(on_error)
