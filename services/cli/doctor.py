"""`botstack doctor`: preflight before anything is touched. One line per check; each failure
says what to do; the exit status is non-zero if any check fails."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from pymongo import WriteConcern

from services.common.db import make_sync_client

from services.common.settings import ConfigError, Settings, load_settings

WATCHERS = re.compile(r"--reload|\breload\b|watchfiles|watchgod|--watch", re.I)
CONFIG = "/app/supervisord.conf"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    advice: str = ""

    def line(self) -> str:
        text = f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"
        return text if self.ok else f"{text} -> {self.advice}"


def check_settings() -> tuple[Check, Settings | None]:
    try:
        settings = load_settings()
    except ConfigError as exc:
        return Check("settings", False, str(exc), f"fix {exc.variable} (see .env.example)"), None
    if settings.telegram_bot_token is None:
        return Check("settings", False, "TELEGRAM_BOT_TOKEN is not set",
                     "set TELEGRAM_BOT_TOKEN to the token from BotFather"), settings
    return Check("settings", True, f"valid ({settings.env})"), settings


def check_database(settings: Settings) -> Check:
    try:
        with make_sync_client(settings, "doctor") as client:
            probe = client[settings.mongodb_db].get_collection("doctor", write_concern=WriteConcern(w=1, j=True))
            key = f"doctor-{os.getpid()}"
            probe.replace_one({"_id": key}, {"_id": key, "at": datetime.now(timezone.utc)}, upsert=True)
            probe.delete_one({"_id": key})
    except Exception as exc:
        return Check("database", False, f"{type(exc).__name__}: {str(exc)[:160]}",
                     "check MONGODB_URI and that the mongodb program is RUNNING (botstack status)")
    return Check("database", True, "reachable and writable")


def check_space(settings: Settings, path: str, label: str) -> Check:
    target = Path(path)
    while not target.exists() and target != target.parent:
        target = target.parent
    free_mb = shutil.disk_usage(target).free // (1 << 20)
    if free_mb < settings.doctor_min_free_mb:
        return Check(f"disk {label}", False, f"{free_mb} MiB free on {path}",
                     f"free space or grow the volume (needs {settings.doctor_min_free_mb} MiB, "
                     f"BOTSTACK_DOCTOR_MIN_FREE_MB)")
    return Check(f"disk {label}", True, f"{free_mb} MiB free on {path}")


def check_writable(path: str) -> Check:
    target = Path(path)
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f".doctor-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return Check(f"writable {path}", False, str(exc), f"make {path} writable by uid {os.getuid()}")
    return Check(f"writable {path}", True, "yes")


def check_no_reload(config: str = CONFIG) -> Check:
    from supervisor.options import ServerOptions

    options = ServerOptions()
    options.realize(["-c", config])
    bad = [f"{p.name}: {p.command}" for g in options.process_group_configs for p in g.process_configs
           if WATCHERS.search(p.command)]
    if bad:
        return Check("no reload", False, "; ".join(bad), "remove reload flags and file watchers from the programs")
    return Check("no reload", True, "no program reloads or watches files")


def run(out: Callable[[str], None] = print) -> int:
    checks: list[Check] = []
    settings_check, settings = check_settings()
    checks.append(settings_check)
    if settings is not None:
        checks.append(check_database(settings))
        checks.append(check_space(settings, "/data/db", "data"))
        checks.append(check_space(settings, settings.backup_dir, "backups"))
        for path in ("/data/db", settings.backup_dir, settings.run_dir):
            checks.append(check_writable(path))
    if Path(CONFIG).exists():
        checks.append(check_no_reload())
    for check in checks:
        out(check.line())
    failed = [c for c in checks if not c.ok]
    out(f"doctor: {len(checks)} checks, {len(failed)} failing")
    return 1 if failed else 0
