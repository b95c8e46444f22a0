"""The database client every program uses: PyMongo's AsyncMongoClient (Motor is end-of-life).

The client connects lazily, so a program starts (and answers liveness) while MongoDB is
still coming up; readiness is a separate, bounded ping.
"""

from __future__ import annotations

import asyncio

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.common.settings import Settings


def make_client(settings: Settings, program: str) -> AsyncMongoClient:
    return AsyncMongoClient(
        settings.mongodb_uri,
        appname=f"botstack-{program}",
        tz_aware=True,
        serverSelectionTimeoutMS=settings.mongodb_timeout_ms,
        connectTimeoutMS=settings.mongodb_timeout_ms,
    )


def database(client: AsyncMongoClient, settings: Settings) -> AsyncDatabase:
    return client[settings.mongodb_db]


async def ping(client: AsyncMongoClient, timeout_s: float) -> None:
    """Raise if MongoDB does not answer a ping within `timeout_s`."""
    await asyncio.wait_for(client.admin.command("ping"), timeout=timeout_s)
