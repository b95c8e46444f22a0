"""Heartbeat files, aged on the monotonic clock.

A program shows that its loop turns by writing into its file; a watcher reads how long ago that
was. What is written is the monotonic clock, which every process of the container shares and
no clock step moves, with the writer's identity, its pid and start time (so a watcher tells its
program's first beat from a predecessor's: after `docker restart` the run directory may be kept
and the new process have the old one's pid). The file's mtime, read against the wall clock, made both wrong whenever the
clock was stepped (NTP correcting a drifted machine, a virtual machine resumed): stepped
forward, every heartbeat looked stale and healthy programs were restarted mid-work; stepped
back, a hung program's looked fresh for as long as the step.

Only the standard library: supervisord's guardian and the sidecar read these.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

_mine: tuple[int, str] | None = None  # (pid, process_life(pid)) of this process, read once


def process_life(pid: int) -> str:
    """A process's pid and start time (clock ticks since boot): unlike the pid alone, never the
    same for two processes, across container restarts included."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return f"{pid}:{stat.rsplit(')', 1)[1].split()[19]}"  # field 22, starttime
    except (OSError, IndexError):
        return ""  # unknown: no predecessor's verdict or mark is trusted


def beat(path: Path) -> None:
    """Write this process's identity and the time, in place and always the same length: a
    reader sees the previous beat or this one, never an empty file."""
    global _mine
    pid = os.getpid()
    if _mine is None or _mine[0] != pid:
        _mine = (pid, process_life(pid) or f"{pid}:unknown")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
    # Truncated to the millisecond, never rounded up: a beat read at once must not lie in the
    # future (an age below 0 means "from before a reboot", and the watchdog killed a healthy
    # sidecar for a beat 0.4 ms ahead: "no heartbeat for -0 s", CI of ce5bb99).
    at = math.floor(time.monotonic() * 1000) / 1000
    try:
        os.pwrite(fd, f"{_mine[1]:>24} {at:>20.3f}\n".encode(), 0)
    finally:
        os.close(fd)


def last_beat(path: Path) -> tuple[str, float] | None:
    """(the writer's process_life, seconds since its last beat), or None when there is no beat to
    read. The age is negative for a beat from before the machine restarted (a run directory kept)."""
    try:
        life, at = path.read_text().split()
        return life, time.monotonic() - float(at)
    except (OSError, ValueError):
        return None
