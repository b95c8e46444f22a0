"""`botstack backup` and `botstack restore`: a verified dump, and a restore that stops the
writers first and refuses a backup that does not verify."""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

from pymongo import MongoClient

from services.cli import archive
from services.common.db import make_sync_client
from services.common.settings import Settings
from services.common.supervisor import rpc

WRITERS = ("bot", "api")  # stopped during a restore, started again afterwards


def _name(settings: Settings, suffix: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"botstack-{stamp}-{settings.build_sha[:12]}.{suffix}"


def _client(settings: Settings) -> MongoClient:
    return make_sync_client(settings, "backup")


def backup(settings: Settings, out=print) -> Path:
    target = Path(settings.backup_dir)
    target.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if shutil.which("mongodump"):
        path = target / _name(settings, "mongodump.gz")
        subprocess.run(["mongodump", f"--uri={settings.mongodb_uri}", f"--db={settings.mongodb_db}",
                        f"--archive={path}", "--gzip", "--quiet"], check=True)
        subprocess.run(["mongorestore", f"--archive={path}", "--gzip", "--dryRun", "--quiet"], check=True)
    else:
        path = target / _name(settings, "bson.gz")
        tmp = path.with_suffix(".partial")
        with _client(settings) as client:
            archive.dump(client[settings.mongodb_db], tmp, {"db": settings.mongodb_db, "git_sha": settings.build_sha})
        archive.verify(tmp)
        tmp.rename(path)
    out(f"backup {path} ({path.stat().st_size} bytes, {time.monotonic() - t0:.1f} s), verified")
    for old in sorted(target.glob("botstack-*.gz"))[: -settings.backup_keep]:
        old.unlink()
        out(f"removed old backup {old.name} (keeping {settings.backup_keep})")
    return path


def restore(settings: Settings, path: Path, out=print) -> None:
    if not path.is_file():
        raise archive.BadArchive(f"no such backup: {path}")
    mongodump = path.name.endswith(".mongodump.gz")
    if mongodump:
        if subprocess.run(["mongorestore", f"--archive={path}", "--gzip", "--dryRun", "--quiet"]).returncode:
            raise archive.BadArchive(f"{path.name} does not verify with mongorestore")
    else:
        counts = archive.verify(path)
        out(f"{path.name} verifies: {sum(counts.values())} documents in {len(counts)} collections")
    supervisor = rpc(settings.supervisor_socket, timeout_s=60).supervisor
    stopped = [name for name in WRITERS if supervisor.getProcessInfo(name)["statename"] == "RUNNING"]
    for name in stopped:
        supervisor.stopProcess(name)
        out(f"stopped {name}")
    try:
        if mongodump:
            subprocess.run(["mongorestore", f"--uri={settings.mongodb_uri}", f"--archive={path}", "--gzip",
                            "--drop", "--quiet"], check=True)
        else:
            _restore_archive(settings, path)
        out(f"restored {path.name}")
    finally:
        for name in reversed(stopped):
            supervisor.startProcess(name)
            out(f"started {name}")


def _restore_archive(settings: Settings, path: Path) -> None:
    with _client(settings) as client:
        db = client[settings.mongodb_db]
        for name in archive.collections(path):
            db.drop_collection(name)
        batch: list[dict] = []
        current = None
        for collection, doc in archive.read(path):
            if collection != current and batch:
                db[current].insert_many(batch)
                batch = []
            current = collection
            batch.append(doc)
            if len(batch) >= 1000:
                db[current].insert_many(batch)
                batch = []
        if batch:
            db[current].insert_many(batch)
