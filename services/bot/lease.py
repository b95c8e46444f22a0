"""One active poller per bot token, across containers: a lease document in MongoDB.

A lock file cannot work across containers; a lease in the shared database can. Acquiring is
one atomic find_one_and_update on "expired or mine"; the holder renews it every TTL/3 and
stops polling at once when a renewal fails; a clean stop releases it so the next instance
takes over without waiting for the TTL. Expiry is written and judged on the database server's
clock (services/common/serverclock.py), never a host's own: replicas on machines whose clocks
disagree still agree when the lease runs out.

A lease taken or renewed is this holder's for TTL from the moment it asked (`valid_until`, on the
monotonic clock): the poller stops polling while a third of it is left if a renewal goes
unanswered (a database that hangs, or that this container alone cannot reach), before a standby
that reaches the database may take it over.

Taking the lease over from another holder is confirmed by reading it again TAKEOVER_SETTLE_S
later. On MongoDB the update is atomic and the read only agrees. A server that checks the filter
before it writes (FerretDB v1, the offline stand-in) lets two standbys that try at the same
moment (as the lease expires: they both know when) both "win"; the last write stands, and the
read tells the others that they lost before they poll. Seen without it: three replicas polling
at once after a holder's SIGKILL on Swarm.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from datetime import datetime, timedelta, timezone

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from services.common.collections import LEASES
from services.common.serverclock import ServerClock

COLLECTION = LEASES
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
TAKEOVER_SETTLE_S = 0.3  # far longer than a racing standby needs between its read and its write


def lease_key(token: str) -> str:
    """The lease's id: a hash of the token, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def holder_id() -> str:
    """Who holds the lease: this container (its hostname). A bot restarted by supervisord in
    the same container takes the lease straight back instead of waiting out the TTL; two
    containers never share a hostname, and supervisord never runs two bots in one."""
    return socket.gethostname()


class Lease:
    def __init__(self, collection: AsyncCollection, key: str, holder: str, ttl_s: float,
                 clock: ServerClock | None = None) -> None:
        self.collection = collection
        self.clock = clock or ServerClock(collection.database)  # the bot's inbox shares its own
        self.key = key
        self.holder = holder
        self.ttl = timedelta(seconds=ttl_s)
        self.valid_until = 0.0  # time.monotonic() until which the lease is surely this holder's

    @property
    def renew_every_s(self) -> float:
        return self.ttl.total_seconds() / 3

    async def acquire(self) -> bool:
        asked, now = time.monotonic(), await self.clock.now()
        try:
            before = await self.collection.find_one_and_update(
                {"_id": self.key, "$or": [{"expires_at": {"$lt": now}}, {"holder": self.holder}]},
                {"$set": {"holder": self.holder, "expires_at": now + self.ttl, "acquired_at": now}},
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
        except DuplicateKeyError:  # someone else holds it: the upsert collided with their document
            return False
        # Still ours (this container's bot restarted): nobody else could race for it. Taken over:
        # confirmed by reading it again (see above).
        still_ours = before is not None and before.get("holder") == self.holder and before["expires_at"] >= now
        if not still_ours:
            await asyncio.sleep(TAKEOVER_SETTLE_S)
            if (await self.current_holder())[0] != self.holder:
                return False
        self.valid_until = asked + self.ttl.total_seconds()
        return True

    async def renew(self) -> bool:
        asked, now = time.monotonic(), await self.clock.now()
        doc = await self.collection.find_one_and_update(
            {"_id": self.key, "holder": self.holder},
            {"$set": {"expires_at": now + self.ttl, "renewed_at": now}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            self.valid_until = asked + self.ttl.total_seconds()
        return doc is not None

    async def release(self) -> None:
        await self.collection.update_one(
            {"_id": self.key, "holder": self.holder}, {"$set": {"expires_at": EPOCH, "released_at": await self.clock.now()}}
        )

    async def current_holder(self) -> tuple[str | None, float]:
        """Who holds the lease, and in how many seconds it expires unless renewed (0: now)."""
        doc = await self.collection.find_one({"_id": self.key})
        now = await self.clock.now()
        if doc is None or doc["expires_at"] < now:
            return None, 0.0
        return doc.get("holder"), (doc["expires_at"] - now).total_seconds()
