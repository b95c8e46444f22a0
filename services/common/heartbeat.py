"""Heartbeat files, aged on the monotonic clock.

A program shows that its loop turns by writing into its file; a watcher reads how long ago that
was. What is written is the monotonic clock, which every process of the container shares and
no clock step moves, with the writer's pid (so a watcher tells its program's first beat from a
predecessor's). The file's mtime, read against the wall clock, made both wrong whenever the
clock was stepped (NTP correcting a drifted machine, a virtual machine resumed): stepped
forward, every heartbeat looked stale and healthy programs were restarted mid-work; stepped
back, a hung program's looked fresh for as long as the step.

Only the standard library: supervisord's guardian and the sidecar read these.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def beat(path: Path) -> None:
    """Write this process's pid and the time, in place and always the same length: a reader sees
    the previous beat or this one, never an empty file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        os.pwrite(fd, f"{os.getpid():>10} {time.monotonic():>20.3f}\n".encode(), 0)
    finally:
        os.close(fd)


def last_beat(path: Path) -> tuple[int, float] | None:
    """(the writer's pid, seconds since its last beat), or None when there is no beat to read.
    The age is negative for a beat from before the machine restarted (a run directory kept)."""
    try:
        pid, at = path.read_text().split()
        return int(pid), time.monotonic() - float(at)
    except (OSError, ValueError):
        return None
