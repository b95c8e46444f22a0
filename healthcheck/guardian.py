"""Who heals the healer: the guardian, the sidecar's watchdog, running inside supervisord.

The sidecar beats into a heartbeat file on every pass of its loop and while it waits on a heal
(services/common/heartbeat.py). Once a second the guardian reads the beat's age; older than
STALE_S while the sidecar is RUNNING means it is hung (or SIGSTOPped): SIGKILL, and
supervisord's autorestart starts a fresh one. A sidecar that has not beaten yet since it
started (the beat is its predecessor's) gets START_GRACE_S to load its plan, counted on the
monotonic clock from when the guardian first saw it (within a second of its start): against
supervisord's start time, on the wall clock, a clock stepped back stretched that grace by the
step, and one stepped forward ended it at once.

Why once a second: supervisord's own ticks come every 5, 60 and 3600 s, and a 5 s tick on top
of the heartbeat's age put a new sidecar 10-15 s after a hang (CI once measured 15.2 s). The
guardian registers a TICK_1 event type with supervisord's plugin API (`events.register`) and adds
it to the periods supervisord's loop rolls over; that loop wakes at least once a second anyway.

Why inside supervisord (an `[rpcinterface:guardian]` whose factory subscribes to TICK_1) and not
an event-listener process: a listener is one more Python interpreter, about 15 MiB for one stat
a tick. In here it costs supervisord next to nothing, and it cannot hang on its own: if
supervisord is stuck, nothing restarts anything anyway. For the same reason it must never block
supervisord's loop: it imports only the standard library, never talks to MongoDB, and catches
everything. What it did goes to stderr (shaped like the sidecar's restart lines) and into a
hand-over file the next sidecar reads at its start and records in `health_events`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from services.common.heartbeat import last_beat, process_life
from services.common.verdict import run_dir

PROGRAM = "healthcheck"
STALE_S = 7.0  # the sidecar beats once a second; its slowest pass stays under 5 s
START_GRACE_S = 15.0


def heartbeat_path(run_dir: str) -> Path:
    return Path(run_dir) / "healthcheck.heartbeat"


def handover_path(run_dir: str) -> Path:
    return Path(run_dir) / "healthcheck.watchdog"


def say(text: str) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    sys.stderr.write(f"{stamp} guardian WARNING botstack.guardian: {text}\n")
    sys.stderr.flush()


def check(process, heartbeat: Path, now: float, running_s: float) -> dict | None:
    """Kill the sidecar when it is hung; what was done, or None.

    `process` is supervisord's Subprocess for the sidecar (state, pid, signal()); `now` the wall
    clock, for the record; `running_s` how long this sidecar has been seen since its start.
    """
    from supervisor.states import ProcessStates

    if process.get_state() != ProcessStates.RUNNING:
        return None
    seen = last_beat(heartbeat)
    if seen is None or seen[0] != process_life(process.pid):  # none from this process yet: getting its plan
        age = running_s
        if age < START_GRACE_S:
            return None
    else:
        age = seen[1]
    if 0 <= age <= STALE_S:
        return None
    old_pid = process.pid
    process.signal(signal.SIGKILL)  # SIGSTOPped processes honour only this
    return {"time": now, "old_pid": old_pid, "reason": f"no heartbeat for {age:.0f} s"}


def hand_over(path: Path, done: dict) -> None:
    """Append what was done for the next sidecar to record (one JSON line per kill)."""
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(done) + "\n")


def take_over(path: Path) -> list[dict]:
    """What the guardian did before this sidecar started; the file is consumed."""
    taken = path.with_name(path.name + f".{os.getpid()}")
    try:
        path.rename(taken)  # a kill handed over meanwhile goes to a new file, for the next reader
    except FileNotFoundError:
        return []
    try:
        lines = taken.read_text(encoding="utf-8").splitlines()
    finally:
        taken.unlink(missing_ok=True)
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and {"time", "old_pid", "reason"} <= record.keys():
            records.append(record)
    return records


class Guardian:
    def __init__(self, supervisord, run_dir: str) -> None:
        self._supervisord = supervisord
        self._heartbeat = heartbeat_path(run_dir)
        self._handover = handover_path(run_dir)
        self._seen: tuple[tuple[int, float], float] | None = None  # ((pid, laststart), first seen, monotonic)

    def _on_tick(self, _event) -> None:
        from supervisor.states import SupervisorStates

        try:
            if self._supervisord.options.mood < SupervisorStates.RUNNING:
                return  # shutting down: supervisord is stopping the sidecar itself
            group = self._supervisord.process_groups.get(PROGRAM)
            process = group.processes.get(PROGRAM) if group is not None else None
            if process is None:
                return
            spawn, now = (process.pid, process.laststart), time.monotonic()
            if self._seen is None or self._seen[0] != spawn:
                self._seen = (spawn, now)
            done = check(process, self._heartbeat, time.time(), now - self._seen[1])
            if done:
                say(f"restart program={PROGRAM} cause=watchdog old_pid={done['old_pid']} reason={done['reason']}")
                hand_over(self._handover, done)
        except Exception as exc:  # never let one bad tick reach supervisord's loop
            say(f"check failed: {type(exc).__name__}: {exc}")


def tick_1_event():
    """supervisord's event type for a one-second tick, registered once as TICK_1."""
    from supervisor import events

    existing = getattr(events.EventTypes, "TICK_1", None)
    if existing is None:
        existing = type("Tick1Event", (events.TickEvent,), {"period": 1})
        events.register("TICK_1", existing)
    if existing not in events.TICK_EVENTS:
        events.TICK_EVENTS.append(existing)
    return existing


def make_guardian(supervisord, **_config):
    """supervisord's rpcinterface factory: start watching. The namespace it returns publishes no
    method (supervisord's RPC serves no name that starts with an underscore)."""
    from supervisor import events

    from healthcheck.wakeup import wake_on_signals

    guardian = Guardian(supervisord, run_dir())
    events.subscribe(tick_1_event(), guardian._on_tick)
    try:
        wake_on_signals(supervisord)
    except Exception as exc:  # supervisord runs as it always did, only slower to act on signals
        say(f"supervisord acts on signals up to a second late: {type(exc).__name__}: {exc}")
    return guardian
