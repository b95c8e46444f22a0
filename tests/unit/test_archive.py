"""services/cli/archive.py: the backup format round-trips MongoDB's types and refuses damage."""

from __future__ import annotations

import gzip
from datetime import datetime, timezone

import pytest
from bson import ObjectId

from services.cli import archive


class FakeCollection:
    def __init__(self, docs):
        self.docs = docs

    def count_documents(self, _filter):
        return len(self.docs)

    def find(self, _filter, sort=None):
        return sorted(self.docs, key=lambda d: str(d["_id"]))

    def list_indexes(self):
        return [{"v": 2, "key": {"_id": 1}, "name": "_id_"},
                {"v": 2, "key": {"key": 1}, "name": "key_1", "unique": True}]


class FakeDatabase:
    def __init__(self, collections):
        self.collections = collections

    def list_collection_names(self):
        return list(self.collections)

    def __getitem__(self, name):
        return FakeCollection(self.collections[name])


@pytest.fixture
def data():
    return {
        "users": [{"_id": i, "name": f"u{i}", "seen": datetime(2026, 1, 1, tzinfo=timezone.utc)} for i in range(5)],
        "events": [{"_id": ObjectId(), "key": "k", "payload": {"nested": [1, 2.5, None]}}],
        "empty": [],
        "system.views": [{"_id": "x"}],
    }


def test_round_trip_keeps_every_document_and_type(tmp_path, data):
    path = tmp_path / "b.bson.gz"
    written = archive.dump(FakeDatabase(data), path, {"db": "botstack"})

    assert written == {"users": 5, "events": 1, "empty": 0}
    read = {}
    for collection, doc in archive.read(path):
        read.setdefault(collection, []).append(doc)
    assert read["events"][0]["payload"] == {"nested": [1, 2.5, None]}
    assert isinstance(read["events"][0]["_id"], ObjectId)
    assert [d["_id"] for d in read["users"]] == list(range(5))
    assert archive.collections(path) == ["empty", "events", "users"]
    assert archive.verify(path) == {"users": 5, "events": 1}


@pytest.mark.parametrize("damage", ["truncate", "flip", "not-gzip", "no-trailer"])
def test_damaged_backup_is_refused(tmp_path, data, damage):
    path = tmp_path / "b.bson.gz"
    archive.dump(FakeDatabase(data), path, {})
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        path.write_bytes(raw[:40] + bytes([raw[40] ^ 0xFF]) + raw[41:])
    elif damage == "not-gzip":
        path.write_bytes(b"hello")
    else:  # a whole gzip stream whose content stops before the trailer
        body = gzip.decompress(raw)
        path.write_bytes(gzip.compress(body[: len(body) - 20]))
    with pytest.raises(archive.BadArchive):
        archive.verify(path)


def test_index_definitions_travel_with_the_backup(tmp_path, data):
    path = tmp_path / "b.bson.gz"
    archive.dump(FakeDatabase(data), path, {"db": "botstack"})
    assert archive.indexes(path)["events"] == [{"v": 2, "key": {"key": 1}, "name": "key_1", "unique": True}]
