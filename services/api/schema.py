"""The API's collections and their indexes (applied by services/common/migrations.py)."""

from pymongo.asynchronous.database import AsyncDatabase

from services.common.collections import AUDIT, EVENTS


async def v1(db: AsyncDatabase) -> None:
    # The client's idempotency key: a retried write is recognised, never stored twice.
    await db[EVENTS].create_index("key", unique=True)
    await db[EVENTS].create_index("created_at")


async def v2(db: AsyncDatabase) -> None:
    await db[AUDIT].create_index([("at", -1)])
    await db[AUDIT].create_index([("action", 1), ("at", -1)])


STEPS = [(1, v1), (2, v2)]
