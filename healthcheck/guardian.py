"""Who heals the healer: `guardian`, the sidecar's watchdog, a supervisord event listener that
restarts a sidecar which stopped beating.

The sidecar touches a heartbeat file on every pass of its loop and while it waits on a heal.
On each TICK_5 event, this listener reads the file's age; older than STALE_S while the sidecar
has been RUNNING past its start grace means it is hung (or SIGSTOPped): SIGKILL, and supervisord
starts it again. The same mechanism superlance's httpok uses; tiny on purpose: no threads, one
file read and at most two RPC calls per tick, and it never touches another program.

Its own output is supervisord's event protocol on stdout; what it has to say goes to stderr,
shaped like the sidecar's restart lines, and into `health_events` when MongoDB answers quickly.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from supervisor import childutils

from services.common.supervisor import rpc

PROGRAM = "healthcheck"
STALE_S = 7.0  # the sidecar beats every half second; its slowest pass stays under 5 s
START_GRACE_S = 15.0
# Read without the settings object: importing pydantic would double this listener's memory
# (measured: 44 MiB resident with it, 22 without). The settings load only to record an event.
RUN_DIR_ENV, RUN_DIR_DEFAULT = "BOTSTACK_RUN_DIR", "/run/botstack"
SOCKET_ENV, SOCKET_DEFAULT = "BOTSTACK_SUPERVISOR_SOCKET", "/run/botstack/supervisor.sock"


def heartbeat_path(run_dir: str) -> Path:
    return Path(run_dir) / "healthcheck.heartbeat"


def say(text: str) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    sys.stderr.write(f"{stamp} guardian WARNING botstack.guardian: {text}\n")
    sys.stderr.flush()


def check(proxy, heartbeat: Path, now: float) -> str | None:
    """Restart the sidecar when it is hung; what was done, or None."""
    info = proxy.supervisor.getProcessInfo(PROGRAM)
    if info["statename"] != "RUNNING" or now - info["start"] < START_GRACE_S:
        return None
    try:
        age = now - heartbeat.stat().st_mtime
    except OSError:
        age = now - info["start"]
    if age <= STALE_S:
        return None
    proxy.supervisor.signalProcess(PROGRAM, "KILL")  # SIGSTOPped processes honour only this
    return f"restart program={PROGRAM} cause=watchdog old_pid={info['pid']} reason=no heartbeat for {age:.0f} s"


def record(text: str, pid: int | None) -> None:
    try:
        from services.common.db import make_sync_client
        from services.common.settings import load_settings

        settings = load_settings("guardian")

        with make_sync_client(settings, "guardian", timeout_ms=1000) as client:
            client[settings.mongodb_db]["health_events"].insert_one(
                {"time": datetime.now(timezone.utc), "program": PROGRAM, "cause": "watchdog", "reason": text,
                 "old_pid": pid, "new_pid": None})
    except Exception as exc:  # the log line above is the record that always exists
        say(f"event not stored in MongoDB: {type(exc).__name__}")


def main() -> None:
    proxy = rpc(os.environ.get(SOCKET_ENV, SOCKET_DEFAULT), timeout_s=3)
    heartbeat = heartbeat_path(os.environ.get(RUN_DIR_ENV, RUN_DIR_DEFAULT))
    while True:
        headers, _payload = childutils.listener.wait(sys.stdin, sys.stdout)
        try:
            if headers.get("eventname", "").startswith("TICK"):
                done = check(proxy, heartbeat, time.time())
                if done:
                    say(done)
                    record(done, None)
        except Exception as exc:  # never let the listener die on one bad tick
            say(f"check failed: {type(exc).__name__}: {exc}")
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
