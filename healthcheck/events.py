"""What the sidecar did and why: counted in memory, logged, and kept in MongoDB.

MongoDB may be the program that is down or hung, so the sidecar's loop never waits for it:
events wait in a bounded queue that a background thread writes whenever MongoDB answers.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

log = logging.getLogger("botstack.healthcheck")

COLLECTION = "health_events"
CAUSES = ("crash", "hang", "fatal")
RETRY_S = 5.0


@dataclass(frozen=True)
class Event:
    time: float
    program: str
    cause: str  # a restart: crash | hang | fatal; otherwise: cycle | escalation | watchdog
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
        from pymongo.errors import PyMongoError

        with self._lock:
            batch = list(self.pending)
        if not batch:
            return True
        docs = [{**asdict(e), "time": datetime.fromtimestamp(e.time, timezone.utc)} for e in batch]
        try:
            self.collection.insert_many(docs, ordered=True)
        except PyMongoError as exc:
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
            while True:
                self._wake.wait(timeout=RETRY_S)
                self._wake.clear()
                self.flush()

        self._writer = threading.Thread(target=loop, name="health-events", daemon=True)
        self._writer.start()

    def summary(self, program: str) -> dict:
        last = self.last.get(program)
        return {
            "restarts": {cause: self.restarts[(program, cause)] for cause in CAUSES},
            "last_reason": f"{last.cause}: {last.reason}" if last else None,
            "last_restart": last.time if last else None,
        }
