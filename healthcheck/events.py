"""What the sidecar did and why: counted in memory, logged, and kept in MongoDB.

MongoDB may be the program that is down or hung, so the sidecar's loop never waits for it:
events wait in a bounded queue that a background thread writes whenever MongoDB answers.

The sidecar runs for the container's whole life and records an event only when something
happened, so it does not load PyMongo and the settings (about 25 MiB) to stay ready for that:
`WriterProcess` hands each batch to a short-lived `python -m healthcheck.events`, which writes
it with the one client factory. Each event's `_id` is derived from the event, so a batch that
reached MongoDB before its writer was cut off is not stored twice when it is sent again.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections import Counter, deque
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from healthcheck.child import run_child
from services.common.collections import HEALTH_EVENTS

log = logging.getLogger("botstack.healthcheck")

COLLECTION = HEALTH_EVENTS
CAUSES = ("crash", "hang", "fatal", "memory")
RETRY_S = 5.0  # after a failed write; doubled after each further failure, up to RETRY_MAX_S
RETRY_MAX_S = 60.0
WRITER_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Event:
    time: float
    program: str
    cause: str  # a restart: crash | hang | fatal | memory; otherwise: cycle | escalation | watchdog
    reason: str
    old_pid: int
    new_pid: int | None = None


class EventLog:
    def __init__(self, collection=None, keep: int = 200) -> None:
        self.collection = collection  # a pymongo Collection, or None (memory and log only)
        self.pending: deque[Event] = deque(maxlen=keep)
        self.restarts: Counter[tuple[str, str]] = Counter()
        self.last: dict[str, Event] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None

    def record(self, event: Event) -> None:
        self.restarts[(event.program, event.cause)] += 1
        self.last[event.program] = event
        log.warning(
            "restart program=%s cause=%s old_pid=%s new_pid=%s reason=%s",
            event.program, event.cause, event.old_pid, event.new_pid, event.reason,
        )
        self._queue(event)

    def note(self, event: Event) -> None:
        """Something the sidecar saw or did that is not a restart (a crash cycle, an escalation)."""
        log.warning("event program=%s kind=%s reason=%s", event.program, event.cause, event.reason)
        self._queue(event)

    def _queue(self, event: Event) -> None:
        with self._lock:
            self.pending.append(event)
        self._wake.set()

    def flush(self) -> bool:
        """Write what is pending; False when MongoDB did not take it (it stays pending)."""
        if self.collection is None:
            return True
        with self._lock:
            batch = list(self.pending)
        if not batch:
            return True
        docs = [{"_id": event_id(e), **asdict(e), "time": datetime.fromtimestamp(e.time, timezone.utc)}
                for e in batch]
        try:
            self.collection.insert_many(docs, ordered=True)
        except Exception as exc:  # whatever failed, the events stay queued for the next try
            log.debug("health events kept for later: %s", exc)
            return False
        with self._lock:
            for event in batch:  # by identity: a full queue may have dropped some meanwhile
                if self.pending and self.pending[0] is event:
                    self.pending.popleft()
        return True

    def start_writer(self) -> None:
        """Write events to MongoDB from a daemon thread, retrying every RETRY_S while it is down."""

        def loop() -> None:
            wait_s = RETRY_S
            while True:
                self._wake.wait(timeout=wait_s)
                self._wake.clear()
                wait_s = RETRY_S if self.flush() else min(RETRY_MAX_S, wait_s * 2)

        self._writer = threading.Thread(target=loop, name="health-events", daemon=True)
        self._writer.start()

    def summary(self, program: str) -> dict:
        last = self.last.get(program)
        return {
            "restarts": {cause: self.restarts[(program, cause)] for cause in CAUSES},
            "last_reason": f"{last.cause}: {last.reason}" if last else None,
            "last_restart": last.time if last else None,
        }


def event_id(event: Event) -> str:
    return f"{event.program}:{event.cause}:{event.time:.6f}:{event.old_pid}"


class WriterProcess:
    """A collection's insert_many, done by a short-lived `python -m healthcheck.events`."""

    def insert_many(self, docs: list[dict], ordered: bool = True) -> None:
        run_child("healthcheck.events", json.dumps([{**d, "time": d["time"].isoformat()} for d in docs]),
                  WRITER_TIMEOUT_S)


def write(docs: list[dict]) -> None:
    """The writer process's work: the events, into `health_events`, once each."""
    from pymongo.errors import BulkWriteError

    from services.common.db import already_stored, make_sync_client
    from services.common.settings import settings_or_exit

    settings = settings_or_exit("healthcheck")
    with make_sync_client(settings, "healthcheck", timeout_ms=5000) as client:
        try:
            client[settings.mongodb_db][COLLECTION].insert_many(
                [{**d, "time": datetime.fromisoformat(d["time"])} for d in docs], ordered=False)
        except BulkWriteError as exc:
            already_stored(exc)  # by an earlier writer that was cut off: fine


if __name__ == "__main__":
    try:
        write(json.load(sys.stdin))
    except Exception as exc:
        sys.stderr.write(f"health events not stored: {type(exc).__name__}: {str(exc)[:200]}\n")
        sys.exit(1)
