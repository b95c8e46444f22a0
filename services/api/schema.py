"""The API's collections and their indexes (applied by services/common/migrations.py)."""

from pymongo.asynchronous.database import AsyncDatabase

EVENTS = "events"


async def v1(db: AsyncDatabase) -> None:
    # The client's idempotency key: a retried write is recognised, never stored twice.
    await db[EVENTS].create_index("key", unique=True)
    await db[EVENTS].create_index("created_at")


STEPS = [(1, v1)]
