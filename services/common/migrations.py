"""Indexes and schema versions, applied at start by the program that owns the data.

Each step is idempotent (creating an existing index is a no-op) and the recorded version only
moves up ($max), so two programs starting at once, or one starting twice, is safe.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Awaitable, Callable

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError

log = logging.getLogger("botstack.migrations")

COLLECTION = "schema_versions"
Step = Callable[[AsyncDatabase], Awaitable[None]]


async def migrate(db: AsyncDatabase, owner: str, steps: list[tuple[int, Step]]) -> int:
    """Apply `steps` newer than the version recorded for `owner`; returns the version now."""
    doc = await db[COLLECTION].find_one({"_id": owner}) or {}
    current = int(doc.get("version", 0))
    for version, step in sorted(steps, key=lambda s: s[0]):
        if version <= current:
            continue
        await step(db)
        await db[COLLECTION].update_one(
            {"_id": owner},
            {"$max": {"version": version}, "$set": {"applied_at": datetime.now(timezone.utc)}},
            upsert=True,
        )
        log.info("%s schema migrated to version %d", owner, version)
        current = version
    return current


async def expiring_index(db: AsyncDatabase, collection: str, field: str, seconds: int) -> None:
    """A TTL index, or a plain one where the server has no TTL indexes (FerretDB, error 238)."""
    try:
        await db[collection].create_index(field, expireAfterSeconds=seconds)
    except OperationFailure as exc:
        log.warning("%s: no TTL index (%s); old documents are kept", collection, exc.details.get("errmsg", exc))
        await db[collection].create_index(field)


async def migrate_when_reachable(db: AsyncDatabase, owner: str, steps: list[tuple[int, Step]],
                                 on_done: Callable[[int], None] = lambda v: None) -> None:
    """Run `migrate` as soon as MongoDB answers; programs start without waiting for it."""
    delay = 1.0
    while True:
        try:
            on_done(await migrate(db, owner, steps))
            return
        except PyMongoError as exc:
            log.warning("%s schema migration waits for MongoDB (%s)", owner, type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
