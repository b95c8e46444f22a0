"""The `botstack` command inside the container: status, doctor, backup and restore."""

from __future__ import annotations

import json

import httpx
import pytest

pytestmark = pytest.mark.integration

# A snapshot of the events collection, read with the image's own driver inside the container.
SNAPSHOT = (
    "import json; from pymongo import MongoClient; "
    "db = MongoClient('mongodb://127.0.0.1:27017/?directConnection=true').botstack; "
    "print(json.dumps(sorted([[d['key'], d['payload']] for d in db.events.find()])))"
)
CHANGE = (
    "from pymongo import MongoClient; "
    "db = MongoClient('mongodb://127.0.0.1:27017/?directConnection=true').botstack; "
    "db.events.delete_many({'payload.i': {'$lt': 10}}); "
    "db.events.update_one({'key': 'b-20'}, {'$set': {'payload': {'i': -1}}}); "
    "db.events.insert_one({'key': 'after-backup', 'type': 'x', 'payload': {}})"
)


def botstack(stack, *args: str, env: dict | None = None) -> tuple[int, str]:
    result = stack.container.get_wrapped_container().exec_run(["botstack", *args], environment=env or {})
    return result.exit_code, result.output.decode(errors="replace")


def snapshot(stack) -> list:
    code, out = stack.exec(["python", "-c", SNAPSHOT])
    assert code == 0, out
    return json.loads(out.strip().splitlines()[-1])


def test_status_lists_programs_and_health(stack):
    code, out = botstack(stack, "status")
    assert code == 0, out
    for name in ("mongodb", "api", "web", "bot", "healthcheck"):
        assert f"{name} " in out and "RUNNING" in out
    assert "health: healthy" in out or "health: degraded" in out


def test_doctor(start_stack):
    stack = start_stack()
    stack.wait_healthy()
    code, out = botstack(stack, "doctor")
    assert code == 0, out
    assert "FAIL" not in out and "no reload" in out

    code, out = stack.exec(["env", "-u", "TELEGRAM_BOT_TOKEN", "botstack", "doctor"])
    assert code == 1 and "FAIL settings: TELEGRAM_BOT_TOKEN is not set" in out and "BotFather" in out, out

    code, out = botstack(stack, "doctor", env={"TELEGRAM_BOT_TOKEN": "not-a-token"})
    assert code == 1 and "FAIL settings: TELEGRAM_BOT_TOKEN" in out and "->" in out, out

    code, out = botstack(stack, "doctor", env={"MONGODB_URI": "mongodb://127.0.0.1:1/?directConnection=true",
                                               "BOTSTACK_MONGODB_TIMEOUT_MS": "500"})
    assert code == 1 and "FAIL database" in out and "MONGODB_URI" in out, out

    # docker-py takes tmpfs options ("size=…"), whatever testcontainers' docstring says.
    small = start_stack(tmpfs={"/data/backups": "size=1m,mode=1777"})
    small.wait_healthy()
    code, out = botstack(small, "doctor")
    assert code == 1 and "FAIL disk backups" in out and "BOTSTACK_DOCTOR_MIN_FREE_MB" in out, out
    assert "ok   database" in out


def test_backup_restore_roundtrip(start_stack):
    stack = start_stack()
    stack.wait_healthy()
    with httpx.Client(base_url=stack.api, timeout=10) as client:
        for i in range(50):
            assert client.post("/api/v1/events", json={"key": f"b-{i}", "type": "t", "payload": {"i": i}}).status_code == 201
    before = snapshot(stack)

    code, out = botstack(stack, "backup")
    assert code == 0 and "verified" in out, out
    path = out.split("backup ", 1)[1].split(" ", 1)[0]

    code, out = stack.exec(["python", "-c", CHANGE])
    assert code == 0, out
    changed = snapshot(stack)
    assert changed != before

    # A damaged copy is refused, and the database stays as it is.
    code, out = stack.exec(["sh", "-c", f"head -c 300 {path} > /data/backups/damaged.bson.gz"])
    assert code == 0, out
    code, out = botstack(stack, "restore", "damaged.bson.gz")
    assert code == 1 and out.startswith("refused:") and "not touched" in out, out
    assert snapshot(stack) == changed

    code, out = botstack(stack, "restore", path)
    assert code == 0 and "stopped bot" in out and "started api" in out, out
    assert snapshot(stack) == before
    stack.wait_healthy()
