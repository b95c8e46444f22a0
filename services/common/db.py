"""The one place database clients are made: PyMongo's AsyncMongoClient for the programs (Motor
is end-of-life), its synchronous twin for the `botstack` command, with the same options.

The client connects lazily, so a program starts (and answers liveness) while MongoDB is
still coming up; readiness is a separate, bounded ping.
"""

from __future__ import annotations

import asyncio

from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from services.common.settings import Settings


def _options(settings: Settings, program: str) -> dict:
    return {"appname": f"botstack-{program}", "tz_aware": True,
            "serverSelectionTimeoutMS": settings.mongodb_timeout_ms,
            "connectTimeoutMS": settings.mongodb_timeout_ms}


def make_client(settings: Settings, program: str) -> AsyncMongoClient:
    return AsyncMongoClient(settings.mongodb_uri, **_options(settings, program))


def make_sync_client(settings: Settings, program: str = "cli", timeout_ms: int | None = None) -> MongoClient:
    """For the `botstack` command and the health sidecar (threads, no event loop).
    `timeout_ms` also bounds each operation: a probe must never wait longer than its period."""
    options = _options(settings, program)
    if timeout_ms is not None:
        options.update(serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, socketTimeoutMS=timeout_ms)
    return MongoClient(settings.mongodb_uri, **options)


DUPLICATE_KEY = 11000


def already_stored(exc: BulkWriteError) -> set[int]:
    """For an unordered insert_many that was refused: the indices of the documents refused only
    because their _id is already stored (a re-run, a redelivery, a race another process won).
    Any other refusal raises `exc` again."""
    errors = exc.details.get("writeErrors", [])
    if any(e.get("code") != DUPLICATE_KEY for e in errors):
        raise exc
    return {e["index"] for e in errors}


def database(client: AsyncMongoClient, settings: Settings) -> AsyncDatabase:
    return client[settings.mongodb_db]


async def ping(client: AsyncMongoClient, timeout_s: float) -> None:
    """Raise if MongoDB does not answer a ping within `timeout_s`."""
    await asyncio.wait_for(client.admin.command("ping"), timeout=timeout_s)
