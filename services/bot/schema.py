"""The bot's collections and their indexes (applied by services/common/migrations.py)."""

from pymongo.asynchronous.database import AsyncDatabase

from services.bot.dedupe import COLLECTION as PROCESSED
from services.bot.jobs import ORDERS, RUNS
from services.common.collections import MESSAGES, USERS
from services.common.migrations import expiring_index

WEEK_S = 7 * 24 * 3600


async def v1(db: AsyncDatabase) -> None:
    await expiring_index(db, PROCESSED, "at", WEEK_S)
    await db[USERS].create_index("username")
    await db[MESSAGES].create_index([("chat_id", 1), ("date", -1)])


async def v2(db: AsyncDatabase) -> None:
    await db[ORDERS].create_index([("status", 1), ("created_at", 1)])
    await expiring_index(db, RUNS, "at", WEEK_S)


STEPS = [(1, v1), (2, v2)]
