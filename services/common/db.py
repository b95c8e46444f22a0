"""The one place database clients are made: PyMongo's AsyncMongoClient for the programs (Motor
is end-of-life), its synchronous twin for the `botstack` command, with the same options.

The client connects lazily, so a program starts (and answers liveness) while MongoDB is
still coming up; readiness is a separate, bounded ping and write (`take_a_write`).
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timezone

from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, ConnectionFailure

from services.common.collections import READINESS
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




async def take_a_write(db: AsyncDatabase, program: str, timeout_s: float) -> None:
    """Raise if MongoDB refuses a small write (a full disk, a storage quota, a read-only user):
    it may still answer pings and reads while every update and reply waits."""
    await asyncio.wait_for(db[READINESS].update_one(
        {"_id": program}, {"$set": {"at": datetime.now(timezone.utc)}}, upsert=True), timeout=timeout_s)


# FerretDB prefixes its messages with the Go call frames that made them: "[msg_insert.go:96 ...] "
_GO_FRAMES = re.compile(r"\[[\w./-]+\.go:\d+[^\]]*\]\s*")


def why(exc: BaseException, limit: int = 200) -> str:
    """A driver error as one short line for logs and verdicts: its kind and the server's own words
    ("OperationFailure: database or disk is full (13)"), not pages of details."""
    details = getattr(exc, "details", None) or {}
    errors = details.get("writeErrors") if isinstance(details, dict) else None
    words = (errors[0].get("errmsg") if errors else None) or \
        (details.get("errmsg") if isinstance(details, dict) else None) or str(exc)
    return f"{type(exc).__name__}: {_GO_FRAMES.sub('', str(words)).strip()}"[:limit]


def unavailable(exc: BaseException, what: str = "the write") -> str:
    """A driver error in words for an API client: out of reach or refusing, without the server's
    names and addresses (why() gives those to the log)."""
    if isinstance(exc, ConnectionFailure):  # ServerSelectionTimeoutError and AutoReconnect too
        return "the database is out of reach"
    return f"the database refused {what}"
