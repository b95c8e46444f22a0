"""`botstack restore` rolls back the data, not the platform's own state and history
(services/cli/backups.py), against a real MongoDB-wire server."""

from __future__ import annotations

from pymongo import MongoClient

from services.cli import backups
from services.common.settings import Settings


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
    backups._restore(settings, path, backups._live(settings, said.append))
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
    backups._restore(settings, path, backups._live(settings, said.append))
    assert ids(db.users) == [1] and ids(db.inbox) == ["b:1"] and said == []
