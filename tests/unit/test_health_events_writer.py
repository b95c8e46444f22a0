"""Health events reach MongoDB through short-lived writer processes (healthcheck/events.py),
tested against a real MongoDB-wire server with the database hung while events are recorded:
nothing is lost, nothing is stored twice."""

from __future__ import annotations

import os
import signal
from datetime import datetime, timezone

from pymongo import MongoClient

from healthcheck.events import COLLECTION, Event, EventLog, WriterProcess
from tests.unit.conftest import wait_until


def test_events_recorded_while_mongodb_hangs_are_stored_once_when_it_answers(ferretdb, monkeypatch):
    [server], port = ferretdb
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    monkeypatch.setenv("MONGODB_URI", uri)
    stored = MongoClient(uri, serverSelectionTimeoutMS=5000).botstack[COLLECTION]
    events = EventLog(WriterProcess())
    events.record(Event(1_000.0, "api", "crash", "crash #1", 11, 12))
    assert events.flush() is True

    os.kill(server.pid, signal.SIGSTOP)  # mongod hung while the sidecar heals something
    try:
        events.record(Event(1_001.0, "web", "hang", "hang #1", 21, 22))
        events.record(Event(1_002.0, "bot", "crash", "crash #2", 31, 32))
        assert events.flush() is False and len(events.pending) == 2
    finally:
        os.kill(server.pid, signal.SIGCONT)

    # A writer cut off after MongoDB took its batch: the same events are sent again.
    WriterProcess().insert_many([{"_id": "web:hang:1001.000000:21", "time": datetime.now(timezone.utc),
                                  "program": "web", "cause": "hang", "reason": "hang #1", "old_pid": 21,
                                  "new_pid": 22}])
    wait_until(events.flush, 30, 0.5, "the pending events written")
    reasons = sorted(d["reason"] for d in stored.find())
    assert reasons == ["crash #1", "crash #2", "hang #1"] and not events.pending
