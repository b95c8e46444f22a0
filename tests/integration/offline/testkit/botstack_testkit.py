"""TEST-ONLY bot handlers, loaded in the offline test image with BOTSTACK_EXTENSIONS=botstack_testkit
(the same hook a user's own code can use). They misbehave on purpose:

  /block S   blocks the event loop for S seconds (a handler that hangs the bot)
  /sleep S   takes S seconds without blocking (a slow handler)
  /fail      always raises (a handler with a bug)
  /burst N   sends N messages to this chat (flood control)
  /hog MB    keeps MB MiB more for as long as the process lives (a handler that leaks)
"""

from __future__ import annotations

import asyncio
import time

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes


class HandlerBug(RuntimeError):
    pass


HELD: list[bytes] = []  # what /hog keeps: each call's MiB, written (so resident), never freed


async def block(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    time.sleep(float(context.args[0]) if context.args else 10.0)
    await update.effective_message.reply_text("unblocked", do_quote=True)


async def sleep(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await asyncio.sleep(float(context.args[0]) if context.args else 10.0)
    await update.effective_message.reply_text("slept", do_quote=True)


async def fail(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    raise HandlerBug(f"/fail always fails (update {update.update_id})")


async def burst(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    count = int(context.args[0]) if context.args else 10
    for i in range(count):
        await context.bot.send_message(update.effective_chat.id, f"burst {i + 1}/{count}")


async def hog(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    HELD.append(b"\x01" * (int(context.args[0] if context.args else 50) << 20))
    await update.effective_message.reply_text(f"holding {sum(map(len, HELD)) >> 20} MiB", do_quote=True)


def install(application: Application) -> None:
    application.add_handler(CommandHandler("block", block))
    application.add_handler(CommandHandler("sleep", sleep))
    application.add_handler(CommandHandler("fail", fail))
    application.add_handler(CommandHandler("burst", burst))
    application.add_handler(CommandHandler("hog", hog))
