"""`botstack backup` and `botstack restore`: a verified dump, and a restore that refuses a
backup that does not verify, stops every writer (the bot, the API and the sidecar, which writes
health events) until the database is whole, takes a safety backup of what they left, brings the
indexes back with the data, and puts the safety backup back if the restore fails.

A restore rolls the data back, not the platform's own state and history (KEPT): the inbox holds
updates Telegram was told had arrived, and the backup's older inbox would drop those not yet
handled (or hand back as new some handled since); the lease says who polls; the health events,
the deploys and the admins' audit say what happened, which a rollback does not undo. Those the
live database holds are kept as they are. Into a new database (none of them there) the backup's
copies come in: a disaster recovery gets back the updates that were waiting.

A restore can stop only its own container's writers: while another botstack container uses the
database (replicas sharing an external MongoDB), it is refused and nothing is touched.

An operator's session may end in the middle (a dropped SSH connection hangs up the terminal) or
be interrupted (Ctrl-C): a hang-up does not stop a restore, an interruption stops it at the next
batch and puts the database back as it was; either way the writers are started again
(`shielded`). Not at once: an operation cut off in flight could still land after the rollback
dropped its collection (FerretDB then recreates it), and the rollback would fail."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import OperationFailure

from services.cli import archive
from services.common.collections import AUDIT, DEPLOYS, HEALTH_EVENTS, INBOX, INBOX_CLAIMS, LEASES, READINESS
from services.common.db import make_sync_client
from services.common.logs import redact
from services.common.serverclock import server_clock
from services.common.settings import Settings
from services.common.supervisor import rpc

WRITERS = ("healthcheck", "bot", "api")  # stopped in this order during a restore, started in reverse
KEPT = (INBOX, INBOX_CLAIMS, LEASES, READINESS, HEALTH_EVENTS, DEPLOYS, AUDIT)
# Each running api writes its readiness when the sidecar checks it, every 2 s
# (services/api/probe.py): watched longer than that once this container's writers are stopped.
OTHERS_WATCH_S = 3.0


class Refused(Exception):
    """A restore that would not be safe now; the database was not touched."""


class Interrupted(Exception):
    """SIGINT or SIGTERM during a restore (shielded): it stopped between two batches."""


_asked: list[str] = []  # the signals shielded() received, in order


def _name(settings: Settings, suffix: str, label: str = "") -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"botstack-{stamp}-{settings.build_sha[:12]}{label}.{suffix}"


def _client(settings: Settings) -> MongoClient:
    return make_sync_client(settings, "backup")


def _tool(*command: str) -> None:
    """mongodump/mongorestore; a failure is reported without the command line (it holds the URI)."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{command[0]} failed (exit {result.returncode}): "
                           f"{redact((result.stderr or result.stdout).strip()[-300:])}")


def backup(settings: Settings, out=print, label: str = "", spare: Path | None = None) -> Path:
    """A verified backup; the oldest beyond BOTSTACK_BACKUP_KEEP are removed, never `spare`
    (the backup a restore is about to read: its safety backup must not rotate it out)."""
    target = Path(settings.backup_dir)
    target.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    mongodump = shutil.which("mongodump")
    path = target / _name(settings, "mongodump.gz" if mongodump else "bson.gz", label)
    # Written under another name until verified: a backup that fails half-way (a full disk, the
    # database gone) is removed, never listed, rotated in place of a good one, or restored.
    partial = path.with_suffix(".partial")
    try:
        if mongodump:
            _tool("mongodump", f"--uri={settings.mongodb_uri}", f"--db={settings.mongodb_db}",
                  f"--archive={partial}", "--gzip", "--quiet")
            _tool("mongorestore", f"--archive={partial}", "--gzip", "--dryRun", "--quiet")
        else:
            with _client(settings) as client:
                archive.dump(client[settings.mongodb_db], partial,
                             {"db": settings.mongodb_db, "git_sha": settings.build_sha})
            archive.verify(partial)
        partial.rename(path)
    finally:
        partial.unlink(missing_ok=True)
    out(f"backup {path} ({path.stat().st_size} bytes, {time.monotonic() - t0:.1f} s), verified")
    rotated = [old for old in sorted(target.glob("botstack-*.gz")) if not spare or old.resolve() != spare.resolve()]
    for old in rotated[: -settings.backup_keep]:
        old.unlink()
        out(f"removed old backup {old.name} (keeping {settings.backup_keep})")
    return path


def listing(settings: Settings) -> list[dict]:
    """The backups on disk, newest first: name, size, time, build SHA."""
    found = []
    for path in sorted(Path(settings.backup_dir).glob("botstack-*.gz"), reverse=True):
        parts = path.name.split("-")
        found.append({"name": path.name, "path": str(path), "bytes": path.stat().st_size,
                      "time": parts[1] if len(parts) > 2 else "", "git_sha": parts[2].split(".")[0] if len(parts) > 2 else ""})
    return found


def shielded() -> None:
    """This process's signals while it restores: SIGHUP (the terminal went away) is ignored;
    SIGINT or SIGTERM asks it to stop, which it does at the next safe point (`_check`)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    for asked in (signal.SIGINT, signal.SIGTERM):
        signal.signal(asked, lambda signum, frame: _asked.append(signal.Signals(signum).name))


def _check() -> None:
    """A safe point: no operation is in flight. Raise Interrupted if a stop was asked."""
    if _asked:
        raise Interrupted(_asked[0])


def restore(settings: Settings, path: Path, out=print) -> None:
    """Call shielded() first (the CLI does): a restore asked to stop half-way is rolled back."""
    if not path.is_file():
        raise archive.BadArchive(f"no such backup: {path}")
    mongodump = path.name.endswith(".mongodump.gz")
    if mongodump:
        if subprocess.run(["mongorestore", f"--archive={path}", "--gzip", "--dryRun", "--quiet"],
                          capture_output=True).returncode:
            raise archive.BadArchive(f"{path.name} does not verify with mongorestore")
    else:
        counts = archive.verify(path)
        out(f"{path.name} verifies: {sum(counts.values())} documents in {len(counts)} collections")
    t0 = time.monotonic()
    supervisor = rpc(settings.supervisor_socket, timeout_s=60).supervisor
    stopped: list[str] = []
    try:
        for name in WRITERS:
            if supervisor.getProcessInfo(name)["statename"] == "RUNNING":
                stopped.append(name)
                supervisor.stopProcess(name)
                out(f"stopped {name}")
        with _client(settings) as client:
            db = client[settings.mongodb_db]
            _alone(db)
            _check()
            safety = backup(settings, out, label="-before-restore", spare=path)
            kept = _live(db, out)
            _check()
            try:
                _restore(settings, db, path, kept, check=_check)
            except Exception as exc:  # Interrupted too: not left half restored
                out(f"restore of {path.name} failed ({type(exc).__name__}: {redact(str(exc))[:200]}); "
                    f"putting back the database as it was ({safety.name})")
                _put_back(settings, db, safety, kept, out, exc)
                raise
        out(f"restored {path.name} in {time.monotonic() - t0:.1f} s (indexes included)")
    finally:
        for name in reversed(stopped):
            if supervisor.getProcessInfo(name)["statename"] != "RUNNING":  # its stop failed half-way
                supervisor.startProcess(name)
            out(f"started {name}")


def _put_back(settings: Settings, db: Database, safety: Path, kept: set[str], out, failed: Exception) -> None:
    """The safety backup back in place of a restore that `failed`. If that fails too (the
    database went away or hangs), say what is left to do and raise `failed`."""
    try:
        _restore(settings, db, safety, kept)
    except Exception as again:
        out(f"putting it back failed too ({type(again).__name__}); the database may be half "
            f"restored: once it answers, run: botstack restore {safety.name}")
        raise failed from again
    out(f"the database is as it was before the restore ({safety.name})")


def _alone(db: Database, watch_s: float = OTHERS_WATCH_S) -> None:
    """Refuse while another botstack container uses the database (its writers would write into
    it half restored): its bot holds the lease (polling; a standby takes it within a second of
    this container's bot letting it go), or its api writes its readiness. Watched for `watch_s`."""
    seen = db[READINESS].find_one({"_id": "api"})
    deadline = time.monotonic() + watch_s
    now = server_clock(db)  # the lease's expiry is on the server's clock, not this host's
    while True:
        lease = db[LEASES].find_one({"holder": {"$ne": socket.gethostname()}, "expires_at": {"$gt": now()}})
        if lease:
            other = f"its bot holds the lease: {lease['holder']}"
            break
        if db[READINESS].find_one({"_id": "api"}) != seen:
            other = "its api wrote to it after this container's stopped"
            break
        if time.monotonic() >= deadline:
            return
        time.sleep(0.25)
    raise Refused(f"another botstack container uses this database ({other}); scale to one container "
                  f"before a restore (with Swarm: docker service scale <stack>_botstack=1)")


def _live(db: Database, out) -> set[str]:
    """The KEPT collections the live database holds documents in (the writers are stopped)."""
    kept = {name for name in KEPT if db[name].find_one({}, {"_id": 1}) is not None}
    if INBOX in kept:
        waiting = db[INBOX].count_documents({"state": {"$in": ["pending", "claimed"]}})  # not yet handled
        out(f"kept the live inbox ({waiting} update{'s' * (waiting != 1)} waiting)")
    if kept - {INBOX}:
        out(f"kept as they are: {', '.join(sorted(kept - {INBOX}))}")
    return kept


def _restore(settings: Settings, db: Database, path: Path, kept: set[str], check=lambda: None) -> None:
    """`check` is called at each safe point, between two batches (mongorestore: at its end)."""
    if path.name.endswith(".mongodump.gz"):
        _tool("mongorestore", f"--uri={settings.mongodb_uri}", f"--archive={path}", "--gzip", "--drop", "--quiet",
              *(f"--nsExclude={settings.mongodb_db}.{name}" for name in sorted(kept)))
        check()
    else:
        _restore_archive(db, path, kept, check)


def _restore_archive(db: Database, path: Path, kept: set[str], check) -> None:
    """Drop what the backup holds (but the kept collections), recreate each collection's indexes
    (so the unique ones guard the data as it goes in), then insert the documents."""
    names = [name for name in archive.collections(path) if name not in kept]
    for name in names:
        db.drop_collection(name)
    definitions = archive.indexes(path)
    for name in names:
        db.create_collection(name)
        for spec in definitions.get(name, []):
            _create_index(db[name], spec)
    check()
    batch: list[dict] = []
    current = None

    def flush() -> None:
        if batch:
            db[current].insert_many(batch)
            batch.clear()
            check()

    for collection, doc in archive.read(path):
        if collection in kept:
            continue
        if collection != current:
            flush()
            current = collection
        batch.append(doc)
        if len(batch) >= 1000:
            flush()
    flush()


def _create_index(collection, spec: dict) -> None:
    keys = list(spec["key"].items())
    options = {k: v for k, v in spec.items() if k not in ("key", "v", "ns")}
    try:
        collection.create_index(keys, **options)
    except OperationFailure:
        if "expireAfterSeconds" not in options:
            raise
        options.pop("expireAfterSeconds")  # a server without TTL indexes (FerretDB): a plain one
        collection.create_index(keys, **options)
