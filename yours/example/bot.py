"""The example's commands: /start, /menu (a button), /remember and /recall.

Handlers run at least once per update: the inbox runs an update again when its process died
before it was marked done. So every write here is keyed by the update (an upsert on update_id,
or a filter that skips an update already applied), and a re-run changes nothing stored; at
most a reply is sent twice.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

from services.common.collections import CONTEXTS, USERS
from yours.example import jobs

log = logging.getLogger(__name__)
PRESS = "press"


def _db(context: ContextTypes.DEFAULT_TYPE) -> AsyncDatabase:
    return context.bot_data["db"]


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/start: remember the user and greet them."""
    user = update.effective_user
    now = datetime.now(timezone.utc)
    await _db(context)[USERS].update_one(
        {"_id": user.id},
        {"$set": {"first_name": user.first_name, "username": user.username,
                  "language_code": user.language_code, "last_seen": now},
         "$setOnInsert": {"first_seen": now}},
        upsert=True,
    )
    await update.effective_message.reply_text(f"Hello, {user.first_name}! botstack is listening.", do_quote=True)


def _keyboard() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton("Press me", callback_data=PRESS)]])


async def menu(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/menu: a message with an inline button (the "buttons don't work" check)."""
    await update.effective_message.reply_text("Press the button:", reply_markup=_keyboard(), do_quote=True)


async def pressed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The button: answer the callback (or the client spins forever) and edit the message."""
    query = update.callback_query
    try:  # counted once per update: one user's updates run in order, so update ids only grow
        doc = await _db(context)[CONTEXTS].find_one_and_update(
            {"_id": query.from_user.id, "last_press": {"$not": {"$gte": update.update_id}}},
            {"$inc": {"presses": 1}, "$set": {"last_press": update.update_id}},
            upsert=True, return_document=ReturnDocument.AFTER,
        )
    except DuplicateKeyError:  # this press was counted before a crash; count it once
        doc = await _db(context)[CONTEXTS].find_one({"_id": query.from_user.id})
    await query.answer("Pressed")
    await query.edit_message_text(f"Pressed {doc['presses']} time(s).", reply_markup=_keyboard())


async def remember(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/remember <text>: keep a note in the user's context, stored in MongoDB."""
    note = " ".join(context.args).strip()
    if not note:
        await update.effective_message.reply_text("Usage: /remember <text>", do_quote=True)
        return
    try:  # the filter skips a note this update already stored (a re-run after a crash)
        await _db(context)[CONTEXTS].update_one(
            {"_id": update.effective_user.id, "notes.update_id": {"$ne": update.update_id}},
            {"$push": {"notes": {"text": note, "update_id": update.update_id}}},
            upsert=True,
        )
    except DuplicateKeyError:
        log.info("note of update %s was stored before; not stored twice", update.update_id)
    await update.effective_message.reply_text("Noted.", do_quote=True)


async def recall(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/recall: the user's context, as stored (survives restarts and redeploys)."""
    doc = await _db(context)[CONTEXTS].find_one({"_id": update.effective_user.id}) or {}
    notes = [n["text"] if isinstance(n, dict) else str(n) for n in doc.get("notes", [])]
    text = "Notes: " + "; ".join(notes) if notes else "No notes yet."
    await update.effective_message.reply_text(f"{text}\nPresses: {doc.get('presses', 0)}", do_quote=True)


def install(application: Application) -> None:
    application.add_handler(CommandHandler("start", start))
    application.add_handler(CommandHandler("menu", menu))
    application.add_handler(CommandHandler("remember", remember))
    application.add_handler(CommandHandler("recall", recall))
    application.add_handler(CallbackQueryHandler(pressed, pattern=f"^{PRESS}$"))
    jobs.schedule(application, application.bot_data["settings"].job_interval_s)
