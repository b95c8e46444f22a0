"""The bot's collections and their indexes (applied by services/common/migrations.py)."""

from pymongo.asynchronous.database import AsyncDatabase

from services.bot.inbox import COLLECTION as INBOX
from services.bot.inbox import TICKETS
from services.common.collections import MESSAGES, USERS
from services.common.migrations import expiring_index

WEEK_S = 7 * 24 * 3600


async def v1(db: AsyncDatabase) -> None:
    await db[USERS].create_index("username")
    await db[MESSAGES].create_index([("chat_id", 1), ("date", -1)])


async def v2(db: AsyncDatabase) -> None:
    """Was the example job's indexes (orders, job_runs): they moved with it to yours/example."""


async def v3(db: AsyncDatabase) -> None:
    """The durable inbox replaces processed_updates (which marked updates before they ran)."""
    await db[INBOX].create_index([("bot", 1), ("state", 1), ("update_id", 1)])
    await db[INBOX].create_index("claim")
    # Done entries: the inbox deletes them after BOTSTACK_INBOX_RETENTION_H itself; the TTL index
    # (where the server has them) is the backstop at the default retention.
    await expiring_index(db, INBOX, "done_at", WEEK_S)
    await db.drop_collection("processed_updates")


async def v4(db: AsyncDatabase) -> None:
    """Claim tickets (services/bot/inbox.py): the inbox deletes them with the done entries."""
    await expiring_index(db, TICKETS, "at", WEEK_S)


STEPS = [(1, v1), (2, v2), (3, v3), (4, v4)]
