"""The example's indexes, applied by the bot at start under the owner name "ext:yours.example"."""

from pymongo.asynchronous.database import AsyncDatabase

from services.common.migrations import expiring_index
from yours.example.jobs import ORDERS, RUNS

WEEK_S = 7 * 24 * 3600


async def orders_and_job_runs(db: AsyncDatabase) -> None:
    await db[ORDERS].create_index([("status", 1), ("created_at", 1)])
    await expiring_index(db, RUNS, "at", WEEK_S)  # one document per interval: a week is plenty


SCHEMA_STEPS = [(1, orders_and_job_runs)]
