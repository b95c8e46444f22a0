"""The inbox (services/bot/inbox.py) against a real MongoDB-wire server: dispatchers that race
for the same pending updates take each one once, a ticket whose taker died before using it does
not hold its update forever, and what handlers record goes in with the done marks, once."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from pymongo import AsyncMongoClient
from telegram import Bot, Update
from telegram.error import NetworkError

from services.bot import inbox as inbox_module
from services.bot.inbox import COLLECTION, FLUSH_EVERY_S, TICKETS, Inbox
from tests.unit.conftest import ClockAhead

BOT = "4242"
CLAIM_TTL_S = 30


def raw_update(update_id: int) -> dict:
    return {"update_id": update_id, "message": {"message_id": update_id, "date": 0, "text": "/start",
                                                "chat": {"id": 7_000 + update_id % 20, "type": "private"}}}


def dispatcher(client: AsyncMongoClient, name: str) -> Inbox:
    inbox = Inbox(client.botstack[COLLECTION], BOT, name, claim_ttl_s=CLAIM_TTL_S, max_attempts=5, retry_base_s=1,
                  retention_s=3600, window=16)
    inbox.app = SimpleNamespace(bot=Bot(f"{BOT}:inbox-claims-test-token"), update_queue=asyncio.Queue())
    return inbox


@asynccontextmanager
async def clients(port: int, n: int = 1):
    """`n` clients of the test's FerretDB, closed afterwards."""
    made = [AsyncMongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true", tz_aware=True) for _ in range(n)]
    try:
        yield made
    finally:
        for client in made:
            await client.close()


def queued(inbox: Inbox) -> dict[int, Update]:
    """What the dispatcher's claims put on the application's queue, by update_id."""
    queue = inbox.app.update_queue
    return {u.update_id: u for u in (queue.get_nowait() for _ in range(queue.qsize()))}


def claimed(inbox: Inbox) -> list[int]:
    return list(queued(inbox))


async def stored_and_claimed(inbox: Inbox, ids: tuple[int, ...]) -> dict[int, Update]:
    await inbox.store([raw_update(i) for i in ids])
    await inbox._claim({}, 10)
    return queued(inbox)


def slow_claims(inbox: Inbox, seconds: float, started: asyncio.Event | None = None) -> None:
    """Each claim of the dispatcher takes `seconds` longer: the round trips to a database far away."""
    claim = inbox._claim_due

    async def far_claim() -> int:
        if started:
            started.set()
        await asyncio.sleep(seconds)
        return await claim()

    inbox._claim_due = far_claim


def test_racing_dispatchers_take_each_update_once(ferretdb):
    """FerretDB checks an update's filter before it writes: without tickets, two claims of the same
    update both succeed there."""
    _, port = ferretdb

    async def race() -> list[list[int]]:
        async with clients(port, 3) as made:
            inboxes = [dispatcher(c, f"replica-{i}") for i, c in enumerate(made)]
            await inboxes[0].store([raw_update(i) for i in range(1, 121)])
            for _ in range(12):  # every dispatcher reads the same pending updates, then claims
                await asyncio.gather(*(inbox._claim({}, 10) for inbox in inboxes))
            return [claimed(inbox) for inbox in inboxes]

    taken = asyncio.run(race())
    every = [u for ids in taken for u in ids]
    assert sorted(every) == list(range(1, 121)), "an update claimed twice, or never"
    assert sum(1 for ids in taken if ids) > 1, "no race: one dispatcher took everything"


def test_a_ticket_its_taker_never_used_is_passed_over_after_the_claim_ttl(ferretdb):
    _, port = ferretdb

    async def run() -> tuple[list[int], list[int], list[int]]:
        async with clients(port) as [client]:
            inbox = dispatcher(client, "replica-0")
            await inbox.store([raw_update(1), raw_update(2)])
            tickets = client.botstack[TICKETS]
            now = datetime.now(timezone.utc)
            # a process won these tickets and died before marking the updates claimed
            await tickets.insert_many([
                {"_id": f"{BOT}:1#0", "bot": BOT, "at": now - timedelta(seconds=CLAIM_TTL_S + 5)},
                {"_id": f"{BOT}:2#0", "bot": BOT, "at": now - timedelta(seconds=1)}])
            first = await inbox._claim({}, 10) and claimed(inbox)
            second = await inbox._claim({}, 10) and claimed(inbox)
            await tickets.update_one({"_id": f"{BOT}:2#0"}, {"$set": {"at": now - timedelta(seconds=CLAIM_TTL_S + 1)}})
            await inbox._claim({}, 10)
            third = await inbox._claim({}, 10) and claimed(inbox)
            return first or [], second or [], third or []

    first, second, third = asyncio.run(run())
    assert first == [], "a ticket held by another process was taken over"
    assert second == [1], "the long-unused ticket is passed over on the next round"
    assert third == [2]


def test_records_go_in_with_the_done_marks_once(ferretdb):
    _, port = ferretdb

    async def run() -> dict:
        async with clients(port) as [client]:
            inbox = dispatcher(client, "replica-0")
            db = client.botstack
            await db.messages.insert_one({"_id": 1, "run": "an earlier run of update 1"})
            updates = await stored_and_claimed(inbox, (1, 2, 3))
            for update_id, update in updates.items():
                await inbox.record(update, "messages", {"_id": update_id, "run": "this one"})
            with pytest.raises(ValueError, match="needs an _id derived from update 3"):
                await inbox.record(updates[3], "messages", {"run": "no _id: stored again by every re-run"})
            before_flush = await db.messages.count_documents({})
            inbox.note_error(updates[2], RuntimeError("a later handler raised"))
            await inbox.finished(updates[1])
            await inbox.finished(updates[2])
            await inbox._flush_done()
            return {"before_flush": before_flush,
                    "messages": {d["_id"]: d["run"] async for d in db.messages.find()},
                    "states": {d["update_id"]: d["state"] async for d in db[COLLECTION].find()}}

    seen = asyncio.run(run())
    assert seen["before_flush"] == 1, "records are written with the done marks, not one by one"
    assert seen["messages"] == {1: "an earlier run of update 1", 2: "this one"}, \
        "a re-run's record is skipped, a failed update's kept, an unfinished update's not yet written"
    assert seen["states"] == {1: "done", 2: "pending", 3: "claimed"}


def test_an_update_finished_during_a_flush_is_marked_done_only_with_its_records(ferretdb):
    """Update 2 finishes while update 1's records are being inserted: the flush under way marks
    only update 1 done. Marking 2 done there too, before its records went in, lost them for good
    when the process was killed before the next flush (a done update never runs again)."""
    _, port = ferretdb

    async def run() -> dict:
        async with clients(port) as [client]:
            inbox = dispatcher(client, "replica-0")
            db = client.botstack
            updates = await stored_and_claimed(inbox, (1, 2))
            for update_id, update in updates.items():
                await inbox.record(update, "messages", {"_id": update_id})
            await inbox.finished(updates[1])
            insert = inbox._insert

            async def insert_while_2_finishes(writes):
                await inbox.finished(updates[2])  # during the await of the records' insert
                await insert(writes)

            inbox._insert = insert_while_2_finishes
            await inbox._flush_done()  # ...and the process is killed here, before the next flush
            return {"messages": [d["_id"] async for d in db.messages.find()],
                    "states": {d["update_id"]: d["state"] async for d in db[COLLECTION].find()}}

    seen = asyncio.run(run())
    assert seen["messages"] == [1]
    assert seen["states"] == {1: "done", 2: "claimed"}, "update 2 marked done without its record"


def test_only_the_bot_apis_own_failures_spare_an_attempt():
    import warnings
    from datetime import timedelta

    from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter, TimedOut
    from telegram.warnings import PTBDeprecationWarning

    from services.bot.inbox import out_of_reach

    with warnings.catch_warnings():  # PTB 22 warns that retry_after becomes a timedelta: not the point here
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        flood = RetryAfter(timedelta(seconds=5))
    assert all(out_of_reach(e) for e in (NetworkError("Bad Gateway"), TimedOut(), flood))
    the_updates_own = (BadRequest("Message is too long"), Forbidden("bot was blocked by the user"), InvalidToken(),
                       ValueError("a handler's bug"))
    assert not any(out_of_reach(e) for e in the_updates_own)


def outage_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "the Bot API is out of reach" in r.getMessage()]


def answered(inbox: Inbox) -> None:
    """The Bot API answered another call, as the rate limiter records it (flood.py)."""
    at = time.monotonic()
    inbox.api_answered_at = lambda: at


async def failed_out_of_reach(inbox: Inbox, update: Update) -> None:
    """Its reply failed with a 502: the Bot API out of reach."""
    inbox.note_error(update, NetworkError("Bad Gateway"))
    await inbox.finished(update)


def test_an_outage_is_told_in_one_line_not_one_per_reply(ferretdb, caplog):
    """Ten replies fail while the Bot API is out of reach: one warning, each update waiting
    uncharged. When it answers again, the next outage is told at once."""
    _, port = ferretdb

    async def run() -> dict:
        async with clients(port) as [client]:
            inbox = dispatcher(client, "replica-0")
            for update in (await stored_and_claimed(inbox, tuple(range(1, 11)))).values():
                await failed_out_of_reach(inbox, update)
            during = outage_lines(caplog)
            await inbox.due_now()  # the first call that works
            [again, *_] = (await stored_and_claimed(inbox, ())).values()
            await failed_out_of_reach(inbox, again)
            counts = [(d.get("attempts", 0), d["outages"]) async for d in client.botstack[COLLECTION].find()]
            return {"during": during, "after": outage_lines(caplog)[len(during):], "counts": counts}

    seen = asyncio.run(run())
    assert seen["during"] == ["the Bot API is out of reach (NetworkError: Bad Gateway): updates wait for it without "
                              "using an attempt (1 failed for it since the last such line; update 1 again in 1 s)"]
    assert len(seen["after"]) == 1 and "; update 1 again in 2 s)" in seen["after"][0], seen["after"]
    assert sorted(seen["counts"]) == [(0, 1)] * 9 + [(0, 2)]


class ComesBackDuring:
    """The inbox's collection, where the Bot API answers again (due_now starts) as the first
    `method` call goes to the database: a failure being recorded as another reply works. The
    call goes on once due_now has done what it can meanwhile (all of it, unless it waits its turn)."""

    def __init__(self, inbox: Inbox, method: str) -> None:
        self.collection, self.inbox, self.method = inbox.collection, inbox, method
        self.due_now: asyncio.Task | None = None

    def __getattr__(self, name: str):
        real = getattr(self.collection, name)
        if name != self.method or self.due_now:
            return real

        async def as_it_comes_back(*args, **kwargs):
            self.due_now = asyncio.create_task(self.inbox.due_now())
            await asyncio.wait({self.due_now}, timeout=0.5)  # bounded: it may be waiting for this call's turn
            return await real(*args, **kwargs)

        return as_it_comes_back


@pytest.mark.parametrize("back", ["before", "find_one_and_update", "update_one"])
def test_a_reply_that_fails_as_the_bot_api_comes_back_is_due_at_once_and_not_told(ferretdb, caplog, back):
    """Replies in flight when the Bot API answers again: their 502s arrive after the call that
    worked, or as they are recorded (two round trips, slow in a loaded CI: counting it, writing
    its backoff). They belong to the outage that ended: no second line for it (a loaded CI told
    one outage twice), and due at once, not after its backoff (due_now, looking while it was
    still claimed, passed it by: it waited 16 s after the Bot API answered). A reply of an
    update taken after that fails in a new outage: told."""
    _, port = ferretdb

    async def run() -> dict:
        async with clients(port) as [client]:
            inbox = dispatcher(client, "replica-0")
            first, late = (await stored_and_claimed(inbox, (1, 2))).values()
            await failed_out_of_reach(inbox, first)  # the outage, told
            if back == "before":
                await inbox.due_now()  # another call went through
            else:
                inbox.collection = ComesBackDuring(inbox, back)
            await failed_out_of_reach(inbox, late)  # its 502 was on its way
            if back != "before":
                await inbox.collection.due_now
                inbox.collection = client.botstack[COLLECTION]
            after_back = outage_lines(caplog)
            docs = {d["update_id"]: d async for d in client.botstack[COLLECTION].find()}
            due = await stored_and_claimed(inbox, ())  # both, at once
            if 2 in due:  # taken after the Bot API came back, it fails in a new outage
                await failed_out_of_reach(inbox, due[2])
            return {"after_back": after_back, "docs": docs, "due": sorted(due), "told": outage_lines(caplog)}

    seen = asyncio.run(run())
    assert len(seen["after_back"]) == 1, f"the outage that ended was told again: {seen['after_back']}"
    late = seen["docs"][2]
    assert late["outages"] == 1 and late.get("attempts", 0) == 0
    assert late["next_at"] <= datetime.now(timezone.utc), f"it waits a backoff until {late['next_at']}"
    assert seen["due"] == [1, 2] and len(seen["told"]) == 2, seen["told"]


def test_a_reply_that_fails_while_other_calls_are_answered_is_due_at_once(ferretdb, caplog):
    """A flaky proxy: a reply fails while other calls go through. The Bot API never counted as
    out of reach (the rate limiter saw a later call answered), so no due_now ends an outage:
    the update must not wait out a backoff grown over its earlier failures (128 s, seen in CI)
    while the Bot API answers: the first step (1 s) instead, uncharged and untold. A reply
    taken after the last answer, failing, is an outage: told, and its backoff grows."""
    _, port = ferretdb

    async def run() -> dict:
        async with clients(port) as [client]:
            inbox = dispatcher(client, "replica-0")
            [flaky] = (await stored_and_claimed(inbox, (1,))).values()
            await client.botstack[COLLECTION].update_one({"update_id": 1}, {"$set": {"outages": 7}})  # grown
            answered(inbox)  # another reply went through meanwhile
            await failed_out_of_reach(inbox, flaky)
            doc = await client.botstack[COLLECTION].find_one({"update_id": 1})
            told = outage_lines(caplog)
            await client.botstack[COLLECTION].update_one({"update_id": 1}, {"$set": {"next_at": doc["received_at"]}})
            [again] = (await stored_and_claimed(inbox, ())).values()
            await failed_out_of_reach(inbox, again)  # taken after the last answer: an outage
            return {"doc": doc, "flaky_told": told, "told": outage_lines(caplog),
                    "then": await client.botstack[COLLECTION].find_one({"update_id": 1})}

    seen = asyncio.run(run())
    assert seen["doc"]["outages"] == 8 and seen["doc"].get("attempts", 0) == 0
    assert seen["doc"]["next_at"] <= datetime.now(timezone.utc) + timedelta(seconds=1), seen["doc"]["next_at"]
    assert seen["flaky_told"] == [], seen["flaky_told"]
    assert len(seen["told"]) == 1 and "update 1 again in 256 s" in seen["told"][0], seen["told"]
    assert seen["then"]["next_at"] > datetime.now(timezone.utc) + timedelta(seconds=200)


def test_a_replica_whose_clock_runs_ahead_leaves_live_claims_alone(ferretdb, monkeypatch):
    """Webhook replicas on machines whose clocks disagree: a claim another replica holds is not
    taken for abandoned by the replica whose clock runs 20 s ahead, past the claim's expiry (it
    ran the update a second time: its reply sent twice). Claims are dated on the server's clock."""
    _, port = ferretdb

    async def run() -> tuple:
        async with clients(port, 2) as [near, far]:
            here, there = dispatcher(near, "replica-0"), dispatcher(far, "replica-1")
            here.claim_ttl_s = 10  # renewed every 3 s while it runs; the other clock is 20 s ahead
            taken = await stored_and_claimed(here, (1,))
            with monkeypatch.context() as m:  # the other replica runs on the other host
                m.setattr(inbox_module, "datetime", ClockAhead)
                recovered = await there._recover_abandoned()
                theirs = await stored_and_claimed(there, ())
            return sorted(taken), recovered, sorted(theirs)

    taken, recovered, theirs = asyncio.run(run())
    assert taken == [1]
    assert recovered == 0 and theirs == [], "a claim still held was taken for abandoned"


def test_a_finished_update_is_marked_done_while_a_claim_takes_long(ferretdb):
    """A claim costs three round trips: with the database far away, a pass of the claim loop
    takes seconds. An update that finishes meanwhile is marked done at once, not after the
    claim: until then a crash would run it again and send its reply twice."""
    _, port = ferretdb
    claim_s = 3.0

    async def run() -> float:
        async with clients(port) as [client]:
            inbox = dispatcher(client, "replica-0")
            updates = await stored_and_claimed(inbox, (1,))
            claiming = asyncio.Event()
            slow_claims(inbox, claim_s, claiming)
            stop = asyncio.Event()
            dispatching = asyncio.create_task(inbox.dispatch(inbox.app, stop))
            await asyncio.wait_for(claiming.wait(), 5)
            finished = asyncio.get_running_loop().time()
            await inbox.finished(updates[1])
            try:
                while (await client.botstack[COLLECTION].find_one({"update_id": 1}))["state"] != "done":
                    assert asyncio.get_running_loop().time() - finished < claim_s, "marked done only after the claim"
                    await asyncio.sleep(0.02)
                return asyncio.get_running_loop().time() - finished
            finally:
                stop.set()
                await dispatching

    assert asyncio.run(run()) < 1.0


def test_done_marks_go_in_batches_while_claims_keep_coming(ferretdb):
    """One update at a time, the window empties during every claim. The marks still go in at
    most every FLUSH_EVERY_S while the claim loop is at work: marking at once whenever nothing
    ran wrote a mark per update or two, and the store's extra work cut throughput from 13 to 8.5
    updates/s. (At once when the claim loop is idle: the last mark of a burst does not wait.)"""
    _, port = ferretdb

    async def run() -> list[float]:
        loop = asyncio.get_running_loop()
        async with clients(port) as [client]:
            inbox = dispatcher(client, "replica-0")
            inbox.window = 2
            await inbox.store([raw_update(i) for i in range(1, 41)])
            flush, flushes = inbox._flush_done, []
            slow_claims(inbox, 0.05)

            async def counted_flush():
                if inbox._done:
                    flushes.append(loop.time())
                await flush()

            async def handle_one_at_a_time():
                while True:
                    update = await inbox.app.update_queue.get()
                    await asyncio.sleep(0.005)
                    await inbox.finished(update)

            inbox._flush_done = counted_flush
            stop = asyncio.Event()
            handling = asyncio.create_task(handle_one_at_a_time())
            dispatching = asyncio.create_task(inbox.dispatch(inbox.app, stop))
            try:
                deadline = loop.time() + 30
                while await client.botstack[COLLECTION].count_documents({"state": "done"}) < 40:
                    assert loop.time() < deadline, "not all 40 updates marked done in 30 s"
                    await asyncio.sleep(0.05)
            finally:
                stop.set()
                await dispatching
                handling.cancel()
            return flushes

    flushes = asyncio.run(run())
    gaps = [b - a for a, b in zip(flushes, flushes[1:-1])]  # the last one: the claim loop idle
    assert gaps and min(gaps) >= 0.9 * FLUSH_EVERY_S, f"{len(flushes)} flushes for 40 updates, gaps {gaps}"


def test_the_last_mark_goes_in_at_once_when_the_claim_loop_is_idle(ferretdb, monkeypatch):
    """Nothing runs and nothing is due: the last finished update is marked done at once, not
    when the next batch of marks would be due (FLUSH_EVERY_S, made 5 s here to tell them apart).
    Until its mark is in, a crash would send its reply again."""
    monkeypatch.setattr(inbox_module, "FLUSH_EVERY_S", 5.0)
    _, port = ferretdb

    async def run() -> float:
        loop = asyncio.get_running_loop()
        async with clients(port) as [client]:
            inbox = dispatcher(client, "replica-0")
            updates = await stored_and_claimed(inbox, (1, 2))
            stop = asyncio.Event()
            dispatching = asyncio.create_task(inbox.dispatch(inbox.app, stop))
            try:
                first = loop.time()
                await inbox.finished(updates[1])  # the first batch of marks: at once
                while (await client.botstack[COLLECTION].find_one({"update_id": 1}))["state"] != "done":
                    assert loop.time() - first < 4.0, "the first mark waited"
                    await asyncio.sleep(0.02)
                finished = loop.time()
                await inbox.finished(updates[2])  # within 5 s of the first batch: at once only if idle
                while (await client.botstack[COLLECTION].find_one({"update_id": 2}))["state"] != "done":
                    assert loop.time() - finished < 4.0, "the last mark waited for the next batch"
                    await asyncio.sleep(0.02)
                return loop.time() - finished
            finally:
                stop.set()
                await dispatching

    assert asyncio.run(run()) < 2.5
