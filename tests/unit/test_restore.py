"""`botstack restore` rolls back the data, not the platform's own state and history
(services/cli/backups.py), against a real MongoDB-wire server."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.errors import AutoReconnect

from services.cli import backups
from services.common.settings import Settings
from services.common.supervisor import rpc
from tests.unit.conftest import ClockAhead, real_supervisord, wait_until


def stack_db(ferretdb, tmp_path, monkeypatch):
    _, port = ferretdb
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    monkeypatch.setenv("MONGODB_URI", uri)
    monkeypatch.setenv("BOTSTACK_BACKUP_DIR", str(tmp_path / "backups"))
    return Settings(), MongoClient(uri, serverSelectionTimeoutMS=5000).botstack


def ids(collection) -> list:
    return sorted(d["_id"] for d in collection.find())


def test_a_restore_keeps_the_live_inbox_and_history_and_rolls_back_the_data(ferretdb, tmp_path, monkeypatch):
    settings, db = stack_db(ferretdb, tmp_path, monkeypatch)
    db.users.insert_one({"_id": 1})
    db.inbox.insert_one({"_id": "b:1", "state": "done"})
    db.audit.insert_one({"_id": "block 1"})
    path = backups.backup(settings, out=lambda line: None)
    db.users.insert_one({"_id": 2})  # written after the backup: rolled back
    db.inbox.insert_many([{"_id": "b:2", "state": "done"}, {"_id": "b:3", "state": "pending"}])
    db.audit.insert_one({"_id": "block 2"})

    said: list[str] = []
    backups._restore(settings, db, path, backups._live(db, said.append))
    assert ids(db.users) == [1]
    assert ids(db.inbox) == ["b:1", "b:2", "b:3"], "the updates on their way were dropped"
    assert ids(db.audit) == ["block 1", "block 2"], "the record of what happened was rolled back"
    assert said == ["kept the live inbox (1 update waiting)", "kept as they are: audit"]


def test_a_restore_into_a_new_database_brings_the_backups_inbox(ferretdb, tmp_path, monkeypatch):
    settings, db = stack_db(ferretdb, tmp_path, monkeypatch)
    db.users.insert_one({"_id": 1})
    db.inbox.insert_one({"_id": "b:1", "state": "pending"})  # waiting when the backup was made
    path = backups.backup(settings, out=lambda line: None)
    db.client.drop_database(db.name)  # the volume lost: a new database

    said: list[str] = []
    backups._restore(settings, db, path, backups._live(db, said.append))
    assert ids(db.users) == [1] and ids(db.inbox) == ["b:1"] and said == []


def test_a_restore_is_refused_while_another_containers_bot_holds_the_lease(ferretdb, tmp_path, monkeypatch):
    """Also when this host's clock runs 20 s ahead of the other's: the lease's expiry is judged
    on the database server's clock (on this host's, it had run out: not refused)."""
    settings, db = stack_db(ferretdb, tmp_path, monkeypatch)
    db.bot_leases.insert_one({"_id": "bot", "holder": "a1b2c3d4e5f6",
                              "expires_at": datetime.now(timezone.utc) + timedelta(seconds=15)})
    monkeypatch.setattr(backups, "datetime", ClockAhead)
    with pytest.raises(backups.Refused, match=r"another botstack container uses this database \(its bot holds "
                                              r"the lease: a1b2c3d4e5f6\); scale to one container"):
        backups._alone(db, watch_s=0.5)


def test_a_restore_is_refused_while_another_containers_api_writes(ferretdb, tmp_path, monkeypatch):
    settings, db = stack_db(ferretdb, tmp_path, monkeypatch)
    db.bot_leases.insert_one({"_id": "bot", "holder": "a1b2c3d4e5f6", "expires_at": datetime.now(timezone.utc)})

    def other_api(stop: threading.Event) -> None:  # its readiness, as its sidecar's check every 2 s makes it write
        while not stop.wait(0.5):
            db.readiness.update_one({"_id": "api"}, {"$set": {"at": datetime.now(timezone.utc)}}, upsert=True)

    refused_while(db, other_api, r"its api wrote to it after this container's stopped")
    backups._alone(db, watch_s=1.0)  # alone again (an expired lease is no one's): not refused


def test_a_restore_is_refused_when_another_containers_standby_takes_the_lease_meanwhile(
        ferretdb, tmp_path, monkeypatch):
    settings, db = stack_db(ferretdb, tmp_path, monkeypatch)
    db.bot_leases.insert_one({"_id": "bot", "holder": socket.gethostname(), "expires_at": datetime(1970, 1, 1,
                                                                                                   tzinfo=timezone.utc)})

    def standby_takes_over(stop: threading.Event) -> None:  # ours let the lease go; 1 s later the other's takes it
        if not stop.wait(1.0):
            db.bot_leases.update_one({"_id": "bot"}, {"$set": {
                "holder": "a1b2c3d4e5f6", "expires_at": datetime.now(timezone.utc) + timedelta(seconds=15)}})

    refused_while(db, standby_takes_over, r"its bot holds the lease: a1b2c3d4e5f6")


def refused_while(db, other_container, reason: str) -> None:
    """The restore's watch (3 s) refuses, for `reason`, while `other_container(stop)` works on a thread."""
    stop = threading.Event()
    thread = threading.Thread(target=other_container, args=(stop,))
    thread.start()
    try:
        with pytest.raises(backups.Refused, match=reason):
            backups._alone(db, watch_s=3.0)
    finally:
        stop.set()
        thread.join()


SHIELDED = """
import os, signal
from services.cli.backups import Interrupted, _check, shielded
shielded()
os.kill(os.getpid(), signal.SIGHUP)  # the terminal went away: ignored
_check()
os.kill(os.getpid(), signal.SIGINT)  # asked to stop: at the next safe point
os.kill(os.getpid(), signal.SIGTERM)
try:
    _check()
except Interrupted as exc:
    print("interrupted by", exc)
"""


def test_a_restoring_process_ignores_a_hangup_and_stops_when_asked_at_a_safe_point():
    done = subprocess.run([sys.executable, "-c", SHIELDED], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.splitlines() == ["interrupted by SIGINT"], done


def test_a_restore_asked_to_stop_stops_between_batches(ferretdb, tmp_path, monkeypatch):
    settings, db = stack_db(ferretdb, tmp_path, monkeypatch)
    db.users.insert_many([{"_id": n} for n in range(2500)])
    path = backups.backup(settings, out=lambda line: None)
    checks = []

    def asked_after_the_first_batch() -> None:
        checks.append(db.users.count_documents({}))
        if len(checks) == 2:
            raise backups.Interrupted("SIGINT")

    with pytest.raises(backups.Interrupted):
        backups._restore(settings, db, path, set(), check=asked_after_the_first_batch)
    assert checks == [0, 1000], "not stopped between two batches"


# PyMongo's monitor finds a frozen server in a heartbeat (10 s) and its connect timeout (2 s), then
# cancels the operations waiting on it: a restore or a backup ends; it never waits for ever.
GIVES_UP_S = 12
WRITERS = "".join(f"[program:{name}]\ncommand=sleep 600\nstartsecs=0\nstopwaitsecs=2\n" for name in backups.WRITERS)


def raised(call, limit_s: float) -> Exception | None:
    """What `call` raised (None: nothing); a test failure if it still runs `limit_s` later."""
    ended: list[Exception | None] = []

    def run() -> None:
        try:
            call()
            ended.append(None)
        except Exception as exc:
            ended.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(limit_s)
    assert ended, f"still waiting on the frozen database {limit_s:.0f} s later"
    return ended[0]


def test_a_restore_whose_database_hangs_fails_in_bounded_time_says_what_to_do_and_starts_the_writers(
        ferretdb, tmp_path, monkeypatch):
    (tmp_path / "sv").mkdir()
    monkeypatch.setenv("BOTSTACK_SUPERVISOR_SOCKET", str(tmp_path / "sv" / "supervisor.sock"))
    settings, db = stack_db(ferretdb, tmp_path, monkeypatch)
    db.users.insert_many([{"_id": n} for n in range(5000)])
    path = backups.backup(settings, out=lambda line: None)
    safe_points: list[int] = []

    def freeze_after_the_first_batch() -> None:  # the restore's own safe points (backups._check)
        safe_points.append(db.users.count_documents({}))
        if len(safe_points) == 4:  # after: the check for other containers, the live state, the indexes, a batch
            assert safe_points[-1] == 1000, safe_points
            os.kill(ferretdb[0][0].pid, signal.SIGSTOP)

    monkeypatch.setattr(backups, "_check", freeze_after_the_first_batch)

    with real_supervisord(tmp_path / "sv", extra=WRITERS):
        wait_until(Path(settings.supervisor_socket).exists, 20, 0.05, "supervisord's socket")
        supervisor = rpc(settings.supervisor_socket).supervisor
        wait_until(lambda: all(supervisor.getProcessInfo(n)["statename"] == "RUNNING" for n in backups.WRITERS),
                   20, 0.1, "the writers running")
        said: list[str] = []
        error = raised(lambda: backups.restore(settings, path, out=said.append),
                       backups.OTHERS_WATCH_S + GIVES_UP_S + 30)
        running = [n for n in backups.WRITERS if supervisor.getProcessInfo(n)["statename"] == "RUNNING"]
    assert isinstance(error, AutoReconnect), error  # cancelled, or timed out
    assert running == list(backups.WRITERS), "the writers were left stopped"
    assert re.fullmatch(r"putting it back failed too \(\w+\); the database may be half restored: once it "
                        r"answers, run: botstack restore botstack-\w+-\w+-before-restore\.bson\.gz",
                        said[-len(backups.WRITERS) - 1]), said
