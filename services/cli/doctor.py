"""`botstack doctor`: preflight before anything is touched. One line per check; each failure
says what to do; the exit status is non-zero if any check fails.

Checks what actually goes wrong: settings (the .env.example placeholder included), the token
as Telegram sees it (getMe), the webhook as Telegram delivers it (getWebhookInfo: its URL, its
recent errors), the database (reachable, writable, migrations applied, its clock against ours:
what this host dates), memory ceilings the container's limit leaves room for, every
program RUNNING, and free space on the filesystems
that really hold the data and the backups.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import httpx
from pymongo import WriteConcern

from services.common import oom
from services.common.db import make_sync_client
from services.common.local_mongod import runs_local_mongod
from services.common.logs import redact
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


WEBHOOK_ERROR_WINDOW_S = 3600
DBPATH = re.compile(r"--dbpath[= ](\S+)")


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


def check_bot_api(settings: Settings) -> list[Check]:
    """The token as Telegram sees it, and in webhook mode the webhook as Telegram delivers it."""
    base = f"{settings.telegram_api_base_url}{settings.telegram_bot_token.get_secret_value()}"
    try:
        me = httpx.get(f"{base}/getMe", timeout=10).json()
    except (httpx.HTTPError, ValueError) as exc:
        return [Check("bot api", False, f"the Bot API did not answer ({type(exc).__name__})",
                      f"check the network and TELEGRAM_API_BASE_URL ({settings.telegram_api_base_url})")]
    if not me.get("ok"):
        return [Check("bot api", False, f"Telegram refuses TELEGRAM_BOT_TOKEN: {me.get('description')}",
                      "copy the token again from @BotFather (/mybots -> API Token)")]
    checks = [Check("bot api", True, f"the token is @{me['result'].get('username')}'s")]
    if settings.webhook_url:
        info = httpx.get(f"{base}/getWebhookInfo", timeout=10).json().get("result") or {}
        if info.get("url") != settings.webhook_url:
            checks.append(Check("webhook", False, f"Telegram delivers to {info.get('url') or 'nowhere'}, "
                                f"not {settings.webhook_url}", "restart the bot program: it sets the webhook"))
        elif info.get("last_error_date") and time.time() - info["last_error_date"] < WEBHOOK_ERROR_WINDOW_S:
            checks.append(Check("webhook", False, f"delivery failed recently: {info.get('last_error_message')} "
                                f"({info.get('pending_update_count', 0)} updates waiting)",
                                "make the URL reachable from the internet over https, answered by the API's "
                                "/telegram/webhook (check the proxy and TELEGRAM_WEBHOOK_URL)"))
        else:
            checks.append(Check("webhook", True, f"{info['url']}, no delivery error in the last hour"))
    return checks


def check_schema(settings: Settings) -> Check:
    from services.api.schema import STEPS as API_STEPS
    from services.bot.schema import STEPS as BOT_STEPS

    expected = {"api": max(v for v, _ in API_STEPS), "bot": max(v for v, _ in BOT_STEPS)}
    with make_sync_client(settings, "doctor") as client:
        found = {d["_id"]: d.get("version", 0) for d in client[settings.mongodb_db]["schema_versions"].find()}
    behind = [f"{owner} at {found.get(owner, 0)} of {version}" for owner, version in expected.items()
              if found.get(owner, 0) < version]
    if behind:
        return Check("migrations", False, "not applied: " + ", ".join(behind),
                     "start the programs that own them (botstack status) and look at their logs")
    return Check("migrations", True, ", ".join(f"{o} v{v}" for o, v in expected.items()))


def check_clock(settings: Settings) -> Check:
    """The platform's shared deadlines (the polling lease, the inbox's claims) are on the
    database server's clock, whatever this one says; a clock far off still misdates what runs
    here (logs, the dates in the application's own documents, job slots by time.time())."""
    bound = settings.lease_ttl_s / 3
    with make_sync_client(settings, "doctor") as client:
        t0 = time.time()
        server = client.admin.command("hello").get("localTime")
        t1 = time.time()
    if not isinstance(server, datetime):
        return Check("clock", True, "the database does not report its time; not compared")
    skew = server.timestamp() - (t0 + t1) / 2
    if abs(skew) > bound:
        return Check("clock", False, f"{skew:+.1f} s against the database server (bound {bound:.1f} s, a third "
                     "of BOTSTACK_LEASE_TTL_S)", "sync the clocks with NTP (timedatectl set-ntp true)")
    return Check("clock", True, f"{skew:+.2f} s against the database server")


def check_alerts(settings: Settings) -> Check:
    """Who is told of a heal. Nothing is sent (`botstack alert` does that); an alert URL apprise
    does not know fails here, before a deploy, rather than stopping the sidecar after it."""
    from healthcheck.notify import channels_from, url_problems

    channels = channels_from(settings)
    problems = url_problems(channels.urls)
    if problems:
        return Check("alerts", False, f"BOTSTACK_ALERT_URLS: {problems[0]}", "fix or remove that URL")
    chats = len(channels.chat_ids) if channels.token else 0
    if not channels:
        return Check("alerts", True, "none: nobody is told of a heal (set BOTSTACK_ALERT_CHAT_IDS or "
                                     "BOTSTACK_ALERT_URLS, then try `botstack alert`)")
    return Check("alerts", True, f"{chats} Telegram chat(s), {len(channels.urls)} other channel(s); "
                                 "`botstack alert` sends a test")


def check_memory(settings: Settings, limit_mib: int | None) -> Check:
    """A memory ceiling at or above the container's limit can never act: the kernel's OOM kill
    (a SIGKILL, replies in flight sent twice) comes first."""
    ceilings = settings.memory_ceilings
    shown = ", ".join(f"{name} {mib} MiB" for name, mib in ceilings.items())
    limit = f"the container's limit is {limit_mib} MiB" if limit_mib else "no memory limit on the container"
    too_high = [name for name, mib in ceilings.items() if limit_mib and mib >= limit_mib]
    if too_high:
        return Check("memory", False, f"ceilings {shown}; {limit}",
                     f"set BOTSTACK_MEMORY_CEILING_MB for {', '.join(too_high)} well below {limit_mib} "
                     "(leave the other programs and mongod their room)")
    if not ceilings:
        return Check("memory", True, f"{limit}; no ceilings (a leak ends in the kernel's OOM kill: see "
                                     "BOTSTACK_MEMORY_CEILING_MB)" if limit_mib else limit)
    return Check("memory", True, f"ceilings {shown}; {limit}")


def check_programs(settings: Settings) -> Check:
    from services.common.supervisor import programs, rpc

    try:
        rows = programs(rpc(settings.supervisor_socket))
    except OSError as exc:
        return Check("programs", False, f"supervisord not reachable ({exc})", "is this the botstack container?")
    skip = set() if runs_local_mongod(settings) else {"mongodb"}
    down = [f"{p.name} {p.state}" for p in rows if p.state != "RUNNING" and p.name not in skip]
    if down:
        return Check("programs", False, ", ".join(down),
                     "read why in `docker compose logs botstack` and `botstack status`")
    return Check("programs", True, f"{len(rows) - len(skip)} RUNNING")


def data_dir(config: str = "/app/supervisord.conf") -> str:
    """Where mongod keeps its data: read from its effective command line, not assumed."""
    try:
        from supervisor.options import ServerOptions

        options = ServerOptions()
        options.realize(["-c", config])
        for group in options.process_group_configs:
            for p in group.process_configs:
                if p.name == "mongodb" and (match := DBPATH.search(p.command)):
                    return match.group(1)
    except Exception:  # no supervisord config here: the image's default
        pass
    return "/data/db"


def mount_of(path: Path) -> Path:
    """The mount point of the filesystem that holds `path`."""
    path = path.resolve()
    device = path.stat().st_dev
    while path != path.parent and path.parent.stat().st_dev == device:
        path = path.parent
    return path


def check_space(settings: Settings, path: str, label: str) -> Check:
    target = Path(path)
    while not target.exists() and target != target.parent:
        target = target.parent
    free_mb = shutil.disk_usage(target).free // (1 << 20)
    where = f"{path} (filesystem at {mount_of(target)})"
    if free_mb < settings.doctor_min_free_mb:
        return Check(f"disk {label}", False, f"{free_mb} MiB free on {where}",
                     f"free space or grow the volume (needs {settings.doctor_min_free_mb} MiB, "
                     f"BOTSTACK_DOCTOR_MIN_FREE_MB)")
    return Check(f"disk {label}", True, f"{free_mb} MiB free on {where}")


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


def guarded(name: str, check: Callable[[], Check | list[Check]]) -> list[Check]:
    try:
        result = check()
    except Exception as exc:  # a check that cannot run is a failing check, not a traceback
        return [Check(name, False, f"{type(exc).__name__}: {redact(str(exc))[:160]}",
                      "check MONGODB_URI and that the database answers (botstack status)")]
    return result if isinstance(result, list) else [result]


def run(args=None, out: Callable[[str], None] = print) -> int:
    checks: list[Check] = []
    settings_check, settings = check_settings()
    checks.append(settings_check)
    if settings is not None:
        if settings.telegram_bot_token is not None and settings_check.ok:
            checks += guarded("bot api", lambda: check_bot_api(settings))
        database = check_database(settings)
        checks.append(database)
        if database.ok:
            checks += guarded("migrations", lambda: check_schema(settings))
            checks += guarded("clock", lambda: check_clock(settings))
        checks += guarded("alerts", lambda: check_alerts(settings))
        checks.append(check_memory(settings, oom.limit_mib()))
        if Path(settings.supervisor_socket).exists():
            checks.append(check_programs(settings))
        data = data_dir()
        checks.append(check_space(settings, data, "data"))
        checks.append(check_space(settings, settings.backup_dir, "backups"))
        for path in (data, settings.backup_dir, settings.run_dir):
            checks.append(check_writable(path))
    if Path(CONFIG).exists():
        checks.append(check_no_reload())
    failed = [c for c in checks if not c.ok]
    if args is not None and getattr(args, "json", False):
        import json

        out(redact(json.dumps({"checks": [c.__dict__ for c in checks], "failed": len(failed)})))
    else:
        for check in checks:
            out(redact(check.line()))
        out(f"doctor: {len(checks)} checks, {len(failed)} failing")
    return 1 if failed else 0
