r"""The durable inbox: no update is lost between Telegram and the end of its handlers.

python-telegram-bot's Updater confirms updates to Telegram as soon as it has queued them, so a
crash loses whatever was queued. Here every update is written to MongoDB (journaled) *before*
Telegram is told it arrived (the next getUpdates offset, or the webhook's 2xx), and it is marked
done only after its handlers finished. In between it is claimed by one process for a while
(`claim_until`, renewed while it runs): a process that dies leaves claims that expire, and the
next one handles those updates again, oldest first.

One document per update, `_id` = "<bot id>:<update_id>", so a second delivery of the same update
(a redelivered webhook, a handover between instances) is recognised and not handled twice. The
update itself is kept as its JSON text: stored exactly as Telegram sent it, and servers without
nested arrays (FerretDB v1; inline keyboards are arrays of arrays) take it too.

  state    pending -> claimed -> done            (done_at; kept `retention`, then deleted)
                         \-> pending (retry, next_at after a backoff)
                         \-> failed  (after max attempts, with the error: a dead letter)

`attempts` counts handler errors. `outages` counts those that were the Bot API's, not the
update's (no connection, a timeout, Telegram's 5xx, flood control): they are retried with the
same backoff but never use up an attempt, so an outage is waited out, not turned into dead
letters (parked only after OUTAGE_MAX). `abandoned` counts claims left behind by a process that died
(or was killed because it hung). Such updates are handled again at once, with the others (most
deaths have nothing to do with the update: a deploy, an OOM kill); an update abandoned twice is
a suspect and is handled one at a time, so an update whose handler kills the bot every time
dies alone, reaches the limit and is parked, instead of taking the bot, and the updates
around it, down forever.

A claim is won by inserting a ticket, `<update>#<claims so far>`, into `inbox_claims`: two
dispatchers that read the same pending update (webhook replicas each run one) try the same
ticket, and the unique `_id` lets exactly one have it. A conditional update alone would do on
MongoDB, which checks the filter again as it writes each document; MongoDB-wire servers that
check it before writing (FerretDB v1) would let both take the update. A ticket left by a process
that died between winning it and marking the update claimed is noticed after the claim TTL, and
the update's claim count moves past it.

Order and concurrency live in InboxUpdateProcessor, python-telegram-bot's own hook: updates of
one chat one at a time in order, different chats concurrently up to a bound.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from pymongo import ASCENDING, ReturnDocument, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, PyMongoError
from telegram import Update
from telegram.error import BadRequest, InvalidToken, NetworkError, RetryAfter
from telegram.ext import Application, BaseUpdateProcessor, ContextTypes

from services.common.collections import INBOX, INBOX_CLAIMS
from services.common.db import DUPLICATE_KEY, already_stored, why
from services.common.logs import Tally
from services.common.serverclock import ServerClock
from services.common.wait import wait_for_either, wait_for_stop

log = logging.getLogger("botstack.bot.inbox")

COLLECTION, TICKETS = INBOX, INBOX_CLAIMS
PENDING, CLAIMED, DONE, FAILED = "pending", "claimed", "done", "failed"
RECOVER_EVERY_S = 2.0  # how often expired claims, due retries and exhausted updates are looked for
SUSPECT_AFTER = 2  # abandoned this often: handled alone
# A claim costs three round trips, marking done one (two with records): each for many updates at a time.
FLUSH_EVERY_S = 0.2  # finished updates are marked done at least this often...
DONE_BATCH = 64  # ...or as soon as this many are waiting
CLEANUP_EVERY_S = 600.0
RETRY_MAX_S = 300.0
ERROR_CHARS = 500
# Tried again this often while the Bot API was out of reach, the update is parked all the same
# (about 7 h at RETRY_MAX_S apart): an outage is waited out, an error that never ends is not.
OUTAGE_MAX = 100
OUTAGE_LOG_S = 60.0  # while the Bot API is out of reach, one line this often, not one per reply tried


def _dig(value: Any, *path: str) -> Any:
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def chat_of(raw: dict) -> int | None:
    """The chat an update belongs to, read from the raw JSON (which may be malformed)."""
    candidates = [_dig(raw, field, "chat", "id") for field in (
        "message", "edited_message", "channel_post", "edited_channel_post", "business_message",
        "edited_business_message")]
    candidates.append(_dig(raw, "callback_query", "message", "chat", "id"))
    candidates += [_dig(raw, field, "from", "id") for field in (
        "callback_query", "inline_query", "chosen_inline_result", "shipping_query", "pre_checkout_query",
        "my_chat_member", "chat_member", "chat_join_request")]
    return next((c for c in candidates if isinstance(c, int) and not isinstance(c, bool)), None)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:ERROR_CHARS]


def out_of_reach(error: BaseException) -> bool:
    """The Bot API did not take a call for reasons of its own or of the network (a timeout, no
    connection, a proxy gone, Telegram's 5xx, flood control past the limiter's retries): not the
    update's fault, so not one of its BOTSTACK_INBOX_MAX_ATTEMPTS. A 400 is the update's own."""
    return isinstance(error, (NetworkError, RetryAfter)) and not isinstance(error, BadRequest)


class Inbox:
    def __init__(self, collection: AsyncCollection, bot_id: str, instance: str, *, claim_ttl_s: float,
                 max_attempts: int, retry_base_s: float, retention_s: float, window: int,
                 api_answered_at: Callable[[], float] = lambda: 0.0) -> None:
        self.collection = collection
        self.durable = collection.with_options(write_concern=WriteConcern(w=1, j=True))
        self.tickets = collection.database[TICKETS]
        # Claims, retries and tickets are dated on the server's clock: replicas on machines whose
        # clocks disagree judge each other's claims expired (or retries due) on the same one.
        self.clock = ServerClock(collection.database)
        self.bot_id = bot_id
        self.instance = instance
        self.claim_ttl_s = claim_ttl_s
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.retention_s = retention_s
        self.window = window
        self.app: Application | None = None
        # update_id -> (claim token, suspect, when it was taken: monotonic)
        self.in_flight: dict[int, tuple[str, bool, float]] = {}
        self._errors: dict[int, BaseException] = {}
        self._done: list[str] = []
        self._records: dict[int, list[tuple[str, dict]]] = {}  # update_id -> its handlers' record() calls
        self._writes: list[tuple[str, dict]] = []  # records of finished updates, written before their done marks
        self._wake = asyncio.Event()  # an update finished: room to claim more
        self._to_mark = asyncio.Event()  # ...and a done mark to write, or the claim loop went idle
        self._claiming = True  # the claim loop is at work: more updates are coming
        # Held by each write to this process's claimed updates (renewals, recoveries, done marks, failures):
        # FerretDB v1 updates a document by reading and writing it whole, so a renewal that read
        # an update before its done mark went in would write it back as claimed (and it would run
        # again on another replica once that claim expired). One write at a time, as when both
        # ran in the claim loop; a done mark waits for one statement (two: a failure's), not a claim.
        # due_now takes it too, to take turns with the failures being recorded (see there).
        self._claimed_writes = asyncio.Lock()
        self._last_cleanup = 0.0
        self._outage_waits = Tally(OUTAGE_LOG_S)  # replies that waited for the Bot API, told once a minute
        # When the Bot API last came back from an outage (due_now), and when it last answered any
        # call (the rate limiter's, flood.py); monotonic. A reply failing after either, since its
        # update was taken, failed in an outage that is over, or in a flaky spell: not one that goes on.
        self._back_at = 0.0
        self.api_answered_at = api_answered_at
        self._suspects_maybe = True  # False once a look found none; looked for again every RECOVER_EVERY_S
        self.stopping = False  # set on SIGTERM: what has not started yet is handed back, not run
        # Set when a handler's Bot API call was refused for the token (revoked while running): the
        # update is not to blame, so no attempt is counted; the bot stops (exit 78) and hands it back.
        self.token_refused = asyncio.Event()

    def key(self, update_id: int) -> str:
        return f"{self.bot_id}:{update_id}"

    # -- receiving ---------------------------------------------------------------------------

    async def store(self, raw_updates: list[Any]) -> int:
        """Write updates durably; returns how many were new. Raises when MongoDB does not take
        them: the caller must then not confirm them to Telegram."""
        now = await self.clock.now()
        docs = []
        for raw in raw_updates:
            update_id = raw.get("update_id") if isinstance(raw, dict) else None
            if isinstance(update_id, int) and not isinstance(update_id, bool):
                docs.append({"_id": self.key(update_id), "bot": self.bot_id, "update_id": update_id,
                             "chat": chat_of(raw), "state": PENDING, "attempts": 0, "abandoned": 0, "claims": 0,
                             "next_at": now,
                             "received_at": now, "update": json.dumps(raw, separators=(",", ":"))})
            else:
                docs.append(self._malformed(raw, now))
        if not docs:
            return 0
        try:
            await self.durable.insert_many(docs, ordered=False)
            new = len(docs)
        except BulkWriteError as exc:
            try:
                new = len(docs) - len(already_stored(exc))
            except BulkWriteError:
                other = next(e for e in exc.details["writeErrors"] if e.get("code") != DUPLICATE_KEY)
                log.error("the inbox refused an update: %s", str(other.get("errmsg"))[:300])
                raise
            log.info("%d update(s) already received; not stored twice", len(docs) - new)
        self._wake.set()
        return new

    def _malformed(self, raw: Any, now: datetime) -> dict:
        text = json.dumps(raw, default=str, sort_keys=True)[:10_000]
        digest = hashlib.sha256(text.encode()).hexdigest()[:24]
        log.error("malformed update parked (no integer update_id): %.200s", text)
        return {"_id": f"{self.bot_id}:malformed:{digest}", "bot": self.bot_id, "update_id": None,
                "chat": None, "state": FAILED, "attempts": 0, "abandoned": 0, "received_at": now, "failed_at": now,
                "error": "malformed update: no integer update_id", "raw_text": text}

    # -- handing updates to the application ----------------------------------------------------

    async def dispatch(self, app: Application, stop: asyncio.Event) -> None:
        """While this process may handle updates (it holds the polling lease, or it is in webhook
        mode): claim what is due, oldest first, and put it on the application's queue; renew
        the claims of what runs; recover abandoned claims; park what exhausted its attempts;
        clean up old done entries. Beside it, mark finished updates done (_mark_done)."""
        self.app = app
        marking = asyncio.create_task(self._mark_done(stop), name="inbox-done")
        try:
            await self._claim_until(stop)
        finally:
            if not stop.is_set():  # cancelled: the marks it had taken are put back (_flush_done)
                marking.cancel()
            await asyncio.gather(marking, return_exceptions=True)

    async def _claim_until(self, stop: asyncio.Event) -> None:
        last_renew = last_recover = 0.0
        while not stop.is_set():
            self._wake.clear()
            try:
                now = time.monotonic()
                if now - last_renew > self.claim_ttl_s / 3:
                    await self._renew()
                    last_renew = now
                if now - last_recover > RECOVER_EVERY_S:
                    await self._recover_abandoned()
                    await self._park_exhausted()
                    await self._cleanup()
                    self._suspects_maybe = True  # and a suspect's retry may have come due
                    last_recover = now
                claimed = await self._claim_suspect() + await self._claim_due()
            except PyMongoError as exc:
                log.warning("inbox unavailable (%s); updates wait in MongoDB and at Telegram", why(exc))
                await wait_for_stop(stop, RECOVER_EVERY_S)
                continue
            if claimed:
                continue  # more may be due
            self._claiming = False
            self._to_mark.set()
            await wait_for_either(self._wake, stop, RECOVER_EVERY_S)
            self._claiming = True

    async def _mark_done(self, stop: asyncio.Event) -> None:
        """Finished updates are marked done in a task of their own, never behind a claim: until
        its mark is in, an update whose reply went out runs again if the process dies (the reply
        is sent twice). With the database 150 ms away, a pass of the claim loop took a second or
        two, and a SIGKILL mid-burst sent 29 of 300 replies twice.

        They go in at most every FLUSH_EVERY_S (or DONE_BATCH at a time), at once only when nothing
        runs and nothing is being claimed. (At once whenever nothing ran: one update at a time
        emptied the window during every claim, and 300 updates took 144 done-mark writes, where
        the claim loop's own marks had taken 41; each is a scan of the inbox on the stand-in.)"""
        last = 0.0
        while not stop.is_set():
            self._to_mark.clear()
            waiting = bool(self._done or self._writes)
            since = time.monotonic() - last
            idle = not (self.in_flight or self._claiming)
            if waiting and (len(self._done) >= DONE_BATCH or idle or since >= FLUSH_EVERY_S):
                last = time.monotonic()
                try:
                    await self._flush_done()
                except Exception as exc:  # the marks are kept (_flush_done) for the next try
                    if not isinstance(exc, PyMongoError):  # an outage the claim loop tells of
                        log.exception("inbox: done marks not written; kept, tried again in %.0f s", RECOVER_EVERY_S)
                    await wait_for_stop(stop, RECOVER_EVERY_S)
                continue
            await wait_for_either(self._to_mark, stop, FLUSH_EVERY_S - since if waiting else None)

    async def _claim_due(self) -> int:
        """Refill the window once half of it is free (or nothing runs), not slot by slot."""
        room = self.window - len(self.in_flight)
        if room < max(1, self.window // 2) and self.in_flight:
            return 0
        which = {"abandoned": {"$lt": min(SUSPECT_AFTER, self.max_attempts)}}
        return await self._claim(which, room)

    async def _claim_suspect(self) -> int:
        """Updates left behind by dead processes twice, one at a time: if one of them kills the
        bot, it dies alone and only its count grows."""
        if not self._suspects_maybe or any(suspect for _, suspect, _ in self.in_flight.values()):
            return 0
        claimed = await self._claim({"abandoned": {"$gte": SUSPECT_AFTER, "$lt": self.max_attempts}}, 1,
                                    suspect=True)
        self._suspects_maybe = bool(claimed)  # the next one is looked for when this one is finished
        return claimed

    async def _claim(self, which: dict, limit: int, suspect: bool = False) -> int:
        """Three round trips: read what is due, win its tickets, mark it claimed; an update
        another process took in between (webhook mode runs a dispatcher per replica) is left to it."""
        now = await self.clock.now()
        due = {"bot": self.bot_id, "state": PENDING, "next_at": {"$lte": now}, **which}
        docs = [d async for d in self.collection.find(due).sort("update_id", ASCENDING).limit(limit)]
        docs = await self._win_tickets(docs, now) if docs else []
        if not docs:
            return 0
        token = uuid.uuid4().hex
        result = await self.collection.update_many(
            {"_id": {"$in": [d["_id"] for d in docs]}, **due},
            {"$set": {"state": CLAIMED, "claimed_by": self.instance, "claim": token,
                      "claim_until": now + timedelta(seconds=self.claim_ttl_s)}, "$inc": {"claims": 1}},
        )
        if result.modified_count < len(docs):  # some were taken by another dispatcher
            mine = {d["_id"] async for d in self.collection.find({"claim": token}, {"_id": 1})}
            docs = [d for d in docs if d["_id"] in mine]
        count = 0
        for doc in docs:
            try:
                update = Update.de_json(json.loads(doc["update"]), self.app.bot)
            except Exception as exc:  # a malformed update is parked, never fatal
                await self._park(doc["_id"], f"malformed update: {describe(exc)}")
                continue
            if suspect:
                log.warning("update %s is handled again on its own: a bot process died while handling it "
                            "(%d of %d times)", doc["update_id"], doc.get("abandoned", 0), self.max_attempts)
            self.in_flight[doc["update_id"]] = (token, suspect, time.monotonic())
            await self.app.update_queue.put(update)
            count += 1
        return count

    async def _win_tickets(self, docs: list[dict], now: datetime) -> list[dict]:
        """The updates among `docs` whose claim tickets this process inserted: the others are
        another dispatcher's, or (a ticket older than the claim TTL on an update still pending)
        a dead one's, which moves the update's claim count on for the next round."""
        tickets = [{"_id": f"{d['_id']}#{d.get('claims', 0)}", "bot": self.bot_id, "at": now} for d in docs]
        try:
            await self.tickets.insert_many(tickets, ordered=False)
            return docs
        except BulkWriteError as exc:
            lost = already_stored(exc)
        held = {t["_id"]: t.get("at") async for t in self.tickets.find({"_id": {"$in": [tickets[i]["_id"] for i in lost]}})}
        for i in lost:
            at = held.get(tickets[i]["_id"])
            if at is not None and now - at.replace(tzinfo=timezone.utc) > timedelta(seconds=self.claim_ttl_s):
                claims = docs[i].get("claims", 0)
                log.warning("update %s: a claim ticket its taker never used; claimable again", docs[i]["update_id"])
                await self.collection.update_one(
                    {"_id": docs[i]["_id"], "state": PENDING, "claims": claims if claims else {"$in": [0, None]}},
                    {"$inc": {"claims": 1}})
        return [d for i, d in enumerate(docs) if i not in lost]

    async def _renew(self) -> None:
        if self.in_flight:
            until = await self.clock.now() + timedelta(seconds=self.claim_ttl_s)
            async with self._claimed_writes:
                await self.collection.update_many(
                    {"claim": {"$in": list({token for token, *_ in self.in_flight.values()})}, "state": CLAIMED},
                    {"$set": {"claim_until": until}},
                )

    async def _recover_abandoned(self, holder: str | None = None) -> int:
        """Claims whose process died: expired ones, or (`holder`) those of this container's
        previous bot process. They are due again (after a second death, as suspects)."""
        now = await self.clock.now()
        which = {"claimed_by": holder} if holder else {"claim_until": {"$lt": now}}
        async with self._claimed_writes:
            result = await self.collection.update_many(
                {"bot": self.bot_id, "state": CLAIMED, **which},
                {"$set": {"state": PENDING, "next_at": now}, "$inc": {"abandoned": 1},
                 "$unset": {"claim": "", "claim_until": ""}},
            )
        if result.modified_count:
            log.warning("%d update(s) a bot process took and did not finish are handled again",
                        result.modified_count)
        return result.modified_count

    async def due_now(self) -> int:
        """The Bot API answers again: the updates that waited out its outage are due at once,
        not after their backoff (grown to minutes in a long outage; their chats wait behind them).
        It takes turns with the failures being recorded (finished): one written before is made due
        here, one written after sees the outage over. (One judged before and written after was told
        as a second outage and waited its backoff after the Bot API answered: a loaded CI.)"""
        now = await self.clock.now()
        async with self._claimed_writes:
            self._outage_waits.reset()  # the next outage is told at once
            self._back_at = time.monotonic()
            result = await self.collection.update_many(
                {"bot": self.bot_id, "state": PENDING, "outages": {"$gt": 0}, "next_at": {"$gt": now}},
                {"$set": {"next_at": now}})
        if result.modified_count:
            self._wake.set()
            log.info("the Bot API answers again: %d update(s) that waited for it are due now", result.modified_count)
        return result.modified_count

    async def _park_exhausted(self) -> None:
        """Abandoned `max_attempts` times: its handler kills or hangs the bot."""
        result = await self.collection.update_many(
            {"bot": self.bot_id, "state": PENDING, "abandoned": {"$gte": self.max_attempts}},
            {"$set": {"state": FAILED, "failed_at": await self.clock.now(),
                      "error": f"the bot died or hung while handling it, {self.max_attempts} times"}},
        )
        if result.modified_count:
            log.error("%d update(s) parked as failed: the bot died or hung while handling them %d times",
                      result.modified_count, self.max_attempts)

    async def _park(self, doc_id: str, error: str) -> None:
        log.error("update %s parked as failed: %s", doc_id, error)
        failed = {"state": FAILED, "failed_at": await self.clock.now(), "error": error[:ERROR_CHARS]}
        await self.collection.update_one({"_id": doc_id}, {"$set": failed})

    async def _flush_done(self) -> None:
        """Finished updates are done whatever their state says now (a claim that expired meanwhile,
        a park after a death): their handlers ran to the end. What they record()ed goes in first,
        so an update marked done has its records stored.

        Both lists are taken at once: updates that finish while the records are being inserted
        wait for the next flush with their done marks too. (Taking the done marks after that
        await marked such updates done before their records went in; a kill in between lost
        the records for good, since a done update never runs again.)"""
        writes, self._writes = self._writes, []
        ids, self._done = self._done, []
        if writes:
            try:
                await self._insert(writes)
            except BaseException:  # a database error, or the task cancelled: kept for the next flush
                self._writes[:0] = writes
                self._done[:0] = ids
                raise
        if not ids:
            return
        try:  # one statement: FerretDB v1 holds a connection per statement of a command until its end
            done = {"$set": {"state": DONE, "done_at": await self.clock.now()},
                    "$unset": {"update": "", "claim": "", "claim_until": ""}}
            async with self._claimed_writes:
                await self.collection.update_many({"_id": {"$in": ids}}, done)
        except BaseException:
            self._done[:0] = ids  # kept for the next flush; at worst they run again after a crash
            raise

    async def _insert(self, writes: list[tuple[str, dict]]) -> None:
        """One insert per collection; a document already there (a re-run of its update) is skipped."""
        by_collection: dict[str, list[dict]] = defaultdict(list)
        for name, doc in writes:
            by_collection[name].append(doc)
        for name, docs in by_collection.items():
            try:
                await self.collection.database[name].insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                already_stored(exc)

    async def _cleanup(self) -> None:
        """Delete done entries past retention (a TTL index does it too where the server has one)."""
        if time.monotonic() - self._last_cleanup < CLEANUP_EVERY_S:
            return
        self._last_cleanup = time.monotonic()
        cutoff = await self.clock.now() - timedelta(seconds=self.retention_s)
        await self.tickets.delete_many({"at": {"$lt": cutoff}})
        result = await self.collection.delete_many({"state": DONE, "done_at": {"$lt": cutoff}})
        if result.deleted_count:
            log.info("inbox: %d done update(s) older than the retention deleted", result.deleted_count)

    # -- results of the handlers ----------------------------------------------------------------

    async def record(self, update: Update, collection: str, doc: dict) -> None:
        """Store `doc`, keyed by the update (its `_id` derived from update_id), together with the
        update's done mark: one insert for many updates instead of one round trip each. Stored
        once whatever happens: a re-run of the update inserts it again and the duplicate is
        skipped; it is stored also when a later handler raises (as if inserted at once)."""
        if "_id" not in doc:  # a generated one would store it again on every re-run
            raise ValueError(f"Inbox.record into {collection}: the document needs an _id derived from "
                             f"update {update.update_id}, so that a re-run of the update stores it once")
        if update.update_id in self.in_flight:
            self._records.setdefault(update.update_id, []).append((collection, doc))
        else:  # not from the inbox
            await self._insert([(collection, doc)])

    def note_error(self, update: object, error: BaseException) -> None:
        if isinstance(update, Update):
            self._errors[update.update_id] = error

    async def finished(self, update: Update) -> None:
        """Called when python-telegram-bot has run every handler for `update`."""
        taken = self.in_flight.pop(update.update_id, None)
        error = self._errors.pop(update.update_id, None)
        self._writes.extend(self._records.pop(update.update_id, ()))
        if taken is None:
            return  # not from the inbox (never happens in production)
        token, suspect, taken_at = taken
        doc_id = self.key(update.update_id)
        self._suspects_maybe = self._suspects_maybe or suspect
        self._wake.set()
        self._to_mark.set()
        if error is None:
            self._done.append(doc_id)
            return
        if isinstance(error, InvalidToken):  # still claimed by this process: hand_back() returns it
            self.token_refused.set()
            return
        outage = out_of_reach(error)
        counter, limit = ("outages", OUTAGE_MAX) if outage else ("attempts", self.max_attempts)
        try:  # taking turns with renewals (as done marks do): a renewal written over this would undo it
            now = await self.clock.now()  # before the lock: a reading of the clock may be a round trip
            async with self._claimed_writes:
                doc = await self.collection.find_one_and_update(
                    {"_id": doc_id, "claim": token}, {"$inc": {counter: 1}, "$set": {"error": describe(error)}},
                    return_document=ReturnDocument.AFTER)  # no projection: FerretDB v1 has none here
                if doc is None:
                    return  # the claim was lost (expired and taken again): its new holder decides
                count = int(doc.get(counter, 1))
                if count >= limit:
                    why_parked = " with the Bot API out of reach" if outage else ""
                    await self._park(doc_id, f"failed {count} times{why_parked}; last error {describe(error)}")
                    return
                # Judged here, in turn with due_now: not when it finished (the Bot API may have come back since).
                # Its reply failed in the outage the Bot API has come back from since (the 502 was on its
                # way as another call went through): not a new outage to tell, and due at once, not after
                # a backoff grown in the old one (due_now has passed it by: it was still claimed).
                came_back = outage and self._back_at > taken_at
                # Or it failed while the Bot API answered other calls (a flaky proxy), so the rate limiter
                # saw no outage and calls no due_now: tried again after the first step of the backoff, not
                # one grown over its earlier failures (such an update waited 128 s with the API answering,
                # CI), nor at once (replies retried at once would hammer the proxy).
                flaky = outage and not came_back and self.api_answered_at() > taken_at
                delay = (0.0 if came_back else self.retry_base_s if flaky
                         else min(RETRY_MAX_S, self.retry_base_s * 2 ** min(count - 1, 16)))
                if came_back or flaky:
                    log.debug("update %s failed while the Bot API answers other calls (%s): again in %.0f s",
                              update.update_id, describe(error), delay)
                elif outage:
                    self._tell_outage_wait(update.update_id, error, delay)
                else:
                    log.warning("update %s failed (%s); attempt %d of %d in %.0f s", update.update_id,
                                describe(error), count + 1, self.max_attempts, delay)
                await self.collection.update_one(
                    {"_id": doc_id, "claim": token},
                    {"$set": {"state": PENDING, "next_at": now + timedelta(seconds=delay)},
                     "$unset": {"claim": "", "claim_until": ""}},
                )
        except PyMongoError as exc:  # the claim expires and the update runs again
            log.warning("could not record the failure of update %s (%s)", update.update_id, exc)

    def _tell_outage_wait(self, update_id: int, error: BaseException, delay: float) -> None:
        """One line per OUTAGE_LOG_S while the Bot API is out of reach, counting the replies that
        waited: one per reply tried (each of hundreds of updates, again and again) buried the log
        in the same words for as long as the outage lasted. The sidecar says it once, too."""
        if (waited := self._outage_waits.count()) is not None:
            log.warning("the Bot API is out of reach (%s): updates wait for it without using an attempt (%d failed "
                        "for it since the last such line; update %s again in %.0f s)", describe(error), waited,
                        update_id, delay)

    # -- starting and stopping -------------------------------------------------------------------

    async def release_predecessors(self) -> int:
        """Claims this container's previous bot process left when it died: due again now,
        instead of after the claim expires (supervisord never runs two bots in one container)."""
        return await self._recover_abandoned(holder=self.instance)

    def skipped(self, update: Update) -> None:
        """Not run because the process is stopping: hand_back() returns it to the inbox."""
        self.in_flight.pop(update.update_id, None)
        self._errors.pop(update.update_id, None)
        self._records.pop(update.update_id, None)

    async def hand_back(self) -> None:
        """On a clean stop, after the application finished what it took: record what is done and
        give back the rest, so the next process handles it at once."""
        try:
            await self._flush_done()
            await self.collection.update_many(
                {"bot": self.bot_id, "state": CLAIMED, "claimed_by": self.instance},
                {"$set": {"state": PENDING, "next_at": await self.clock.now()},
                 "$unset": {"claim": "", "claim_until": ""}},
            )
        except PyMongoError as exc:
            log.warning("inbox hand-back failed (%s); the claims expire in %.0f s", exc, self.claim_ttl_s)
        self.in_flight.clear()


async def counts(collection: AsyncCollection, bot_id: str | None = None) -> dict[str, int]:
    """Updates per state, done aside (every bot sharing the database when `bot_id` is None)."""
    base = {"bot": bot_id} if bot_id else {}
    return {state: await collection.count_documents({**base, "state": state}) for state in (PENDING, CLAIMED, FAILED)}


class InboxUpdateProcessor(BaseUpdateProcessor):
    """python-telegram-bot's update-processor hook: up to `max_concurrent_updates` updates at
    once, but one chat's updates one at a time, in the order they were queued (asyncio locks
    are fair). When the handlers are done the inbox learns whether they raised."""

    def __init__(self, inbox: Inbox, max_concurrent_updates: int) -> None:
        super().__init__(max_concurrent_updates)
        self.inbox = inbox
        self._chats: dict[int | None, asyncio.Lock] = {}
        self._waiting: dict[int | None, int] = defaultdict(int)

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        chat = update.effective_chat.id if isinstance(update, Update) and update.effective_chat else None
        if chat is None and isinstance(update, Update) and update.effective_user:
            chat = update.effective_user.id
        lock = self._chats.setdefault(chat, asyncio.Lock())
        self._waiting[chat] += 1
        try:
            async with lock:
                if self.inbox.stopping and isinstance(update, Update):
                    coroutine.close()  # never started: the next process handles it, at once
                    self.inbox.skipped(update)
                    return
                await coroutine
        finally:
            self._waiting[chat] -= 1
            if not self._waiting[chat]:
                del self._waiting[chat]
                self._chats.pop(chat, None)
        if isinstance(update, Update):
            await self.inbox.finished(update)

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


def install(app: Application, inbox: Inbox) -> None:
    """The first error handler: tells the inbox which update's handlers raised. Handlers find
    the inbox in bot_data["inbox"] (for Inbox.record)."""
    app.bot_data["inbox"] = inbox

    async def note_failure(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        inbox.note_error(update, context.error)

    app.add_error_handler(note_failure)
