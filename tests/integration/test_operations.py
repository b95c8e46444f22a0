"""The `botstack` command inside the container: status, doctor, backup and restore."""

from __future__ import annotations

import json
import re
import subprocess
import threading

import httpx
import pytest

from tests.integration.harness import Injector, all_answered, figure, new_token, wait_until

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


def backed_up(stack) -> str:
    """`botstack backup` in the stack: the path of the verified backup."""
    code, out = botstack(stack, "backup")
    assert code == 0 and "verified" in out, out
    return out.split("backup ", 1)[1].split(" ", 1)[0]


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
    assert re.search(r"\nmemory: \d+ MiB resident in the programs; no memory limit on the container\n", out), out


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
    small = start_stack(tmpfs={"/data/backups": "size=1m,uid=10001,gid=10001"})
    small.wait_healthy()
    code, out = botstack(small, "doctor")
    assert code == 1 and "FAIL disk backups" in out and "BOTSTACK_DOCTOR_MIN_FREE_MB" in out, out
    assert "ok   database" in out
    # A backup that fills the disk half-way leaves nothing behind to be listed, rotated in
    # place of a good one, or restored.
    assert small.db("db.blobs.insert_many([{'b': __import__('os').urandom(700_000)} for _ in range(3)]).acknowledged")
    code, out = botstack(small, "backup")
    assert code == 1 and "No space left on device" in out, out
    assert small.exec(["ls", "-A", "/data/backups"])[1].split() == [], "a failed backup left a file"


def test_backup_restore_roundtrip(start_stack):
    # Keeping one backup: the restore's safety backup must not rotate out the one it restores.
    stack = start_stack(BOTSTACK_BACKUP_KEEP="1")
    stack.wait_healthy()
    with httpx.Client(base_url=stack.api, timeout=10) as client:
        for i in range(50):
            assert client.post("/api/v1/events", json={"key": f"b-{i}", "type": "t", "payload": {"i": i}}).status_code == 201
    before = snapshot(stack)

    path = backed_up(stack)

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
    assert code == 0 and "stopped bot" in out and "started api" in out and "stopped healthcheck" in out, out
    assert "-before-restore" in out, "no safety backup was taken"
    assert snapshot(stack) == before
    stack.wait_healthy()


def test_restore_while_users_write_loses_no_update(start_stack, emulator):
    """A restore rolls the data back to the backup, not the updates on their way: a burst of
    users' messages is being handled when `botstack restore` stops the bot; the updates already
    taken from Telegram but not yet handled wait in the live inbox, which the restore keeps (the
    backup's inbox, older, would drop them: Telegram was told they arrived). Every update is
    answered, none twice; what was written after the backup is gone."""
    stack = start_stack()
    stack.wait_healthy()
    bot = stack.bot_id

    def users(first: int, count: int) -> list[int]:
        return emulator.inject_many(bot, [(f"/remember note-{n}", {"id": 7_800_000 + n, "first_name": f"U{n}"})
                                          for n in range(first, first + count)])

    ids = users(0, 10)
    all_answered(emulator, bot, ids, 60)
    path = backed_up(stack)
    with httpx.Client(base_url=stack.api, timeout=10) as client:
        assert client.post("/api/v1/events", json={"key": "after-backup", "type": "t", "payload": {}}).status_code == 201
    ids += users(100, 150)
    code, out = botstack(stack, "restore", path)
    assert code == 0 and "stopped bot" in out, out
    ids += users(300, 10)
    counts = all_answered(emulator, bot, ids, 120)
    waiting = re.search(r"kept the live inbox \((\d+) updates? waiting\)", out)
    figure(f"restore while users write (150 /remember at once, then the restore): "
           f"{waiting and waiting[1]} updates waiting in the inbox kept; all {len(ids)} answered, "
           f"{sum(n - 1 for n in counts.values())} twice")
    assert waiting and int(waiting[1]) > 0, f"nothing was waiting at the restore: nothing proven\n{out}"
    assert set(counts.values()) == {1}, f"sent twice: {[u for u, n in counts.items() if n > 1]}"
    assert "after-backup" not in json.dumps(snapshot(stack)), "the restore did not roll the data back"


MARK = ("from pymongo import MongoClient; "
        "MongoClient('mongodb://127.0.0.1:27017/?directConnection=true').botstack.events.insert_one("
        "{'key': 'after-backup', 'type': 'x', 'payload': {}})")
# Sends the signal named in argv[1] to the `botstack restore` processes in the container.
SIGNAL_RESTORE = """
import os, signal, sys
restoring = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
    except OSError:  # gone meanwhile
        continue
    if args[1:4] == [b"-m", b"services.cli", b"restore"]:  # what the `botstack` script runs
        os.kill(int(pid), getattr(signal, sys.argv[1]))
        restoring.append(int(pid))
print(restoring)
"""


def restore_signalled(stack, path: str, after: str, sig: str) -> tuple[int, str]:
    """`botstack restore` run as an operator's session runs it (docker exec), sent `sig` once a
    line starting with `after` is out; its exit code and all it printed."""
    session = subprocess.Popen(["docker", "exec", stack.container.get_wrapped_container().id, "botstack",
                                "restore", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(session.stdout), daemon=True)
    reader.start()
    wait_until(lambda: any(line.startswith(after) for line in lines), 60, f"the restore at {after!r}", 0.05)
    code, signalled = stack.exec(["python", "-c", SIGNAL_RESTORE, f"SIG{sig}"])
    assert code == 0 and signalled.strip() not in ("", "[]"), signalled
    code = session.wait(timeout=120)
    reader.join(timeout=10)
    return code, "".join(lines)


def test_a_hangup_does_not_stop_a_restore_and_an_interrupt_puts_the_database_back(start_stack):
    """An operator's session ends in the middle of a restore: the terminal hangs up (SIGHUP)
    and the restore goes on to the end; or Ctrl-C (SIGINT) as it writes: the database is put
    back as it was, not left half restored. Either way the writers run again."""
    stack = start_stack()
    stack.wait_healthy()
    code, out = stack.exec(["python", "-c", USERS])  # 10,000 users: a restore of a second or two
    assert code == 0, out
    path = backed_up(stack)
    assert stack.exec(["python", "-c", MARK])[0] == 0

    code, out = restore_signalled(stack, path, "stopped api", "HUP")
    assert code == 0 and "restored" in out and "started healthcheck" in out, out
    stack.wait_healthy()
    assert "after-backup" not in json.dumps(snapshot(stack)), "not restored"

    assert stack.exec(["python", "-c", MARK])[0] == 0
    before = snapshot(stack)
    code, out = restore_signalled(stack, path, "kept", "INT")
    assert code == 1 and "failed (Interrupted: SIGINT); putting back the database as it was" in out, out
    assert "restore interrupted (SIGINT); the database is as it was before it" in out, out
    assert "started healthcheck" in out and "Traceback" not in out, out
    stack.wait_healthy()
    assert snapshot(stack) == before and stack.db("db.users.count_documents({})") >= 10_000


def test_a_restore_is_refused_while_another_container_uses_the_database(start_stack, shared_db, emulator):
    """Two containers on one external database, as replicas run: a restore in one cannot stop
    the other's writers, which would write into a database half restored. It is refused in
    either (the one whose bot polls, and the standby), nothing touched, its own writers started
    again; users writing meanwhile are all answered, once. Alone, the same restore goes through."""
    a = start_stack(MONGODB_URI=shared_db)
    b = start_stack(MONGODB_URI=shared_db)
    a.wait_healthy()
    b.wait_healthy()
    paths = [backed_up(stack) for stack in (a, b)]  # each on its own volume
    with Injector(emulator, a.bot_id, every_s=0.5) as writing:
        for stack, path in zip((a, b), paths):
            code, out = botstack(stack, "restore", path)
            assert code == 1 and "refused: another botstack container uses this database" in out, out
            assert "the database was not touched" in out and "started bot" in out and "restored" not in out, out
            stack.wait_healthy()
    counts = all_answered(emulator, a.bot_id, writing.ids, 60)
    figure(f"restore refused in each of two containers sharing a database: {len(counts)} updates meanwhile, "
           f"all answered, {sum(n - 1 for n in counts.values())} twice")
    assert set(counts.values()) == {1}, f"sent twice: {[u for u, n in counts.items() if n > 1]}"
    b.container.get_wrapped_container().stop(timeout=120)
    code, out = botstack(a, "restore", paths[0])
    assert code == 0 and "restored" in out, out


INDEXES = ("import json; from pymongo import MongoClient; "
           "db = MongoClient('mongodb://127.0.0.1:27017/?directConnection=true').botstack; "
           "print(json.dumps({c: sorted(i['name'] for i in db[c].list_indexes()) for c in "
           "('events', 'inbox', 'users', 'audit')} | {'schema': sorted((d['_id'], d['version']) for d in "
           "db.schema_versions.find())}))")
USERS = ("from pymongo import MongoClient; "
         "db = MongoClient('mongodb://127.0.0.1:27017/?directConnection=true').botstack; "
         "db.users.insert_many([{'_id': 10_000_000 + i, 'first_name': f'u{i}', 'username': f'u{i}'} "
         "for i in range(10000)])")
# A backup that verifies (counts and trailer match) but cannot go in: two events with one key,
# while the backup's own unique index on `key` is created first. It fails half-way through.
CONFLICTING = """
import gzip, sys
from pathlib import Path
import bson
from services.cli import archive
src = Path(sys.argv[1])
docs = list(archive.read(src))
head = archive.header(src)
head["counts"]["events"] += 1
with gzip.open("/data/backups/conflicting.bson.gz", "wb") as f:
    f.write(bson.encode(head))
    for c, d in docs:
        f.write(bson.encode({"c": c, "d": d}))
    f.write(bson.encode({"c": "events", "d": {"_id": "dup", "key": "k-0", "type": "t", "payload": {}}}))
    f.write(bson.encode({"magic": archive.MAGIC, "end": True, "counts": head["counts"]}))
"""


def post_event(stack, key: str) -> httpx.Response:
    return httpx.post(f"{stack.api}/api/v1/events", json={"key": key, "type": "t", "payload": {}}, timeout=10)


def indexes(stack) -> dict:
    code, out = stack.exec(["python", "-c", INDEXES])
    assert code == 0, out
    return json.loads(out.strip().splitlines()[-1])


def test_restore_keeps_indexes(start_stack):
    stack = start_stack()
    stack.wait_healthy()
    for i in range(20):
        assert post_event(stack, f"k-{i}").status_code == 201
    code, out = stack.exec(["python", "-c", USERS])
    assert code == 0, out
    indexes_before = indexes(stack)
    code, out = botstack(stack, "backup", "--json")
    assert code == 0, out
    path = json.loads(out.strip().splitlines()[-1])["path"]

    code, out = botstack(stack, "restore", path)
    assert code == 0, out
    seconds = float(out.split("restored ", 1)[1].split(" in ", 1)[1].split(" s", 1)[0])
    figure(f"restore of 10,000 users and 20 events: {seconds:.1f} s")
    stack.wait_healthy()
    assert indexes(stack) == indexes_before
    assert "key_1" in indexes_before["events"] and "username_1" in indexes_before["users"]
    again = post_event(stack, "k-3")
    assert again.status_code == 200 and again.json()["created"] is False, again.text

    # A restore that fails half-way leaves the database as it was before it.
    before = snapshot(stack)
    code, out = stack.exec(["python", "-c", CONFLICTING, path])
    assert code == 0, out
    code, out = botstack(stack, "restore", "conflicting.bson.gz")
    assert code == 1, out
    assert "putting back the database as it was" in out and "is as it was before the restore" in out, out
    assert snapshot(stack) == before
    assert indexes(stack) == indexes_before
    stack.wait_healthy()
    assert post_event(stack, "k-4").json()["created"] is False


def test_doctor_catches_mistakes(start_stack):
    stack = start_stack()
    stack.wait_healthy()
    code, out = botstack(stack, "doctor")
    assert code == 0, out
    for name in ("bot api", "migrations", "clock", "programs", "disk data"):
        assert f"ok   {name}" in out, out
    assert "ok   alerts: none: nobody is told of a heal" in out, out

    code, out = botstack(stack, "doctor", env={"BOTSTACK_ALERT_CHAT_IDS": "4242",
                                               "BOTSTACK_ALERT_URLS": "json://hooks.example/x slak://T/B/C"})
    assert code == 1 and "FAIL alerts: BOTSTACK_ALERT_URLS: slak://... is not an alert URL apprise knows" in out, out
    code, out = botstack(stack, "doctor", env={"BOTSTACK_ALERT_CHAT_IDS": "4242",
                                               "BOTSTACK_ALERT_URLS": "json://hooks.example/x"})
    assert "ok   alerts: 1 Telegram chat(s), 1 other channel(s)" in out, out

    placeholder = "123456789:replace-with-the-token-from-BotFather-xxxxxxxx"
    code, out = botstack(stack, "doctor", env={"TELEGRAM_BOT_TOKEN": placeholder})
    assert code == 1 and "placeholder from .env.example" in out and "->" in out, out

    refused = f"{stack.bot_id}:{'z' * 35}"  # the right bot id, the wrong secret: the emulator says 401
    code, out = botstack(stack, "doctor", env={"TELEGRAM_BOT_TOKEN": refused})
    assert code == 1 and "FAIL bot api: Telegram refuses TELEGRAM_BOT_TOKEN" in out and "BotFather" in out, out

    assert stack.rpc("stopProcess('web')") == "True"
    code, out = botstack(stack, "doctor")
    assert code == 1 and "FAIL programs: web STOPPED" in out, out
    assert stack.rpc("startProcess('web')") == "True"


def test_doctor_catches_webhook_delivery_errors(start_stack, emulator):
    token = new_token()
    # A host that resolves (the emulator's own) on a port where nothing listens: every delivery fails.
    stack = start_stack(TELEGRAM_BOT_TOKEN=token, TELEGRAM_WEBHOOK_URL="https://telegram:9/telegram/webhook")
    stack.wait_healthy()
    wait_until(lambda: emulator.call(token, "getWebhookInfo")["result"].get("url"), 30, "the webhook set")
    emulator.inject(token.split(":")[0], "/start")
    wait_until(lambda: emulator.call(token, "getWebhookInfo")["result"].get("last_error_date"), 30,
               "a delivery error")
    code, out = botstack(stack, "doctor")
    assert code == 1 and "FAIL webhook: delivery failed recently" in out, out


def test_no_password_from_the_uri_in_any_output(start_stack, external_db):
    password = "pw-Secret-4711"
    uri = external_db.uri.replace("mongodb://", f"mongodb://botstack:{password}@")
    stack = start_stack(MONGODB_URI=uri, BOTSTACK_MONGODB_TIMEOUT_MS="500")
    outputs = []
    for args in (("status",), ("status", "--json"), ("doctor",), ("doctor", "--json"), ("backup",),
                 ("backup", "--json"), ("inbox",), ("restore", "nothing-here.bson.gz")):
        outputs.append(botstack(stack, *args)[1])
    text = "\n".join(outputs)
    assert password not in text, text
    assert password not in stack.logs()
