"""The polling lease (services/bot/lease.py) against a real MongoDB-wire server: standbys that try
for an expired lease at the same moment (they all know when it expires) end with one holder; a
holder whose database stops answering stops polling before its lease could pass to another."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import datetime, timedelta, timezone

from pymongo import AsyncMongoClient

from services.bot.lease import COLLECTION, Lease
from services.bot.poller import Poller
from services.bot.status import BotStatus
from tests.unit.conftest import ClockAhead

ROUNDS = 8


def test_standbys_racing_for_an_expired_lease_leave_exactly_one_holder(ferretdb):
    _, port = ferretdb

    async def race() -> list[int]:
        clients = [AsyncMongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true", tz_aware=True)
                   for _ in range(3)]
        try:
            leases = [Lease(c.botstack[COLLECTION], "bot-lease", f"replica-{i}", ttl_s=15) for i, c in enumerate(clients)]
            await leases[0].acquire()
            winners = []
            for _ in range(ROUNDS):
                await clients[0].botstack[COLLECTION].update_one(  # the holder died: its lease ran out
                    {"_id": "bot-lease"}, {"$set": {"holder": "dead", "expires_at": datetime.now(timezone.utc)
                                                    - timedelta(seconds=1)}})
                won = await asyncio.gather(*(lease.acquire() for lease in leases))
                holder, _ = await leases[0].current_holder()
                assert [lease.holder for lease, w in zip(leases, won) if w] in ([holder], []), (won, holder)
                winners.append(sum(won))
            return winners
        finally:
            for c in clients:
                await c.close()

    assert asyncio.run(race()) == [1] * ROUNDS


def test_a_restarted_bot_takes_its_own_lease_back_at_once(ferretdb):
    _, port = ferretdb

    async def run() -> tuple[bool, bool, float]:
        client = AsyncMongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true", tz_aware=True)
        try:
            mine = Lease(client.botstack[COLLECTION], "bot-lease", "this-container", ttl_s=15)
            other = Lease(client.botstack[COLLECTION], "bot-lease", "another-container", ttl_s=15)
            first = await mine.acquire()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            again = await mine.acquire()  # the same container's next bot process
            return first and again, await other.acquire(), loop.time() - t0
        finally:
            await client.close()

    mine, theirs, took = asyncio.run(run())
    assert mine and not theirs and took < 0.2


def test_a_standby_whose_clock_runs_ahead_does_not_take_a_held_lease(ferretdb, monkeypatch):
    """Replicas on two machines whose clocks disagree: the lease held here is not taken by the
    standby over there, whose clock runs 20 s ahead. On its own clock the lease had run out, and
    it took it at once: two bots polling. The expiry is judged on the database server's clock."""
    import services.bot.lease as lease_module

    _, port = ferretdb

    async def run() -> tuple[bool, tuple]:
        client = AsyncMongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true", tz_aware=True)
        try:
            here = Lease(client.botstack[COLLECTION], "bot-lease", "here", ttl_s=15)
            there = Lease(client.botstack[COLLECTION], "bot-lease", "over-there", ttl_s=15)
            assert await here.acquire()
            with monkeypatch.context() as m:  # the standby runs on the other host
                m.setattr(lease_module, "datetime", ClockAhead)
                taken = await there.acquire()
                seen = await there.current_holder()
            return taken, seen
        finally:
            await client.close()

    taken, (holder, expires_in) = asyncio.run(run())
    assert not taken, "a standby whose clock runs ahead took a lease still held"
    assert holder == "here" and 14 < expires_in <= 15, (holder, expires_in)


def test_a_renewal_left_unanswered_ends_the_poll_before_the_lease_runs_out(ferretdb, tmp_path):
    servers, port = ferretdb

    async def hold() -> float:
        client = AsyncMongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true", tz_aware=True)
        try:
            lease = Lease(client.botstack[COLLECTION], "bot-lease", "replica-0", ttl_s=3)
            assert await lease.acquire()
            holder = Poller(app=None, lease=lease, inbox=None, status=BotStatus(tmp_path / "status.json"),
                            poll_timeout_s=1)
            os.kill(servers[0].pid, signal.SIGSTOP)  # the database hangs: connections open, no answer
            try:
                await asyncio.wait_for(holder._keep_lease(), timeout=10)
            except TimeoutError:
                raise AssertionError("still polling 10 s into a lease of 3 s the database never renewed") from None
            finally:
                os.kill(servers[0].pid, signal.SIGCONT)
            return lease.valid_until - time.monotonic()
        finally:
            await client.close()

    left = asyncio.run(hold())
    assert 0.75 <= left <= 1.1, f"the poll ended {left:.2f} s before the lease ran out, not a third of it (1 s)"
