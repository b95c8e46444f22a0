"""Scheduled work that runs once per interval, across restarts and instances.

It stands for what real bots do every minute (expire unpaid orders, send reminders); the
interval is BOTSTACK_JOB_INTERVAL_S. python-telegram-bot's JobQueue fires it; before doing
anything, a run claims its interval slot under a unique key in MongoDB, so a restart inside an
interval, or a second instance sharing the database, finds the slot taken and does nothing.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

from pymongo.errors import DuplicateKeyError, PyMongoError
from telegram.ext import Application, ContextTypes

log = logging.getLogger(__name__)

RUNS = "job_runs"
STATS = "job_stats"
ORDERS = "orders"
UNPAID_TTL_S = 15 * 60


async def expire_unpaid_orders(context: ContextTypes.DEFAULT_TYPE) -> None:
    interval = context.job.data["interval_s"]
    slot = int(time.time() // interval)
    db = context.bot_data["db"]
    now = datetime.now(timezone.utc)
    try:
        await db[RUNS].insert_one({"_id": f"expire_unpaid_orders:{slot}", "job": "expire_unpaid_orders",
                                   "slot": slot, "at": now, "by": context.bot_data.get("instance")})
    except DuplicateKeyError:
        return  # this interval's run already happened (before a restart, or on another instance)
    except PyMongoError as exc:
        log.warning("expire_unpaid_orders skipped: %s", type(exc).__name__)
        return
    await db[STATS].update_one({"_id": "expire_unpaid_orders"}, {"$inc": {"executions": 1}}, upsert=True)
    result = await db[ORDERS].update_many(
        {"status": "unpaid", "created_at": {"$lt": datetime.fromtimestamp(now.timestamp() - UNPAID_TTL_S, timezone.utc)}},
        {"$set": {"status": "expired", "expired_at": now}},
    )
    if result.modified_count:
        log.info("expired %d unpaid orders", result.modified_count)


def schedule(application: Application, interval_s: float) -> None:
    application.job_queue.run_repeating(
        expire_unpaid_orders, interval=interval_s, first=1.0, name="expire_unpaid_orders",
        data={"interval_s": interval_s},
    )
