"""The health sidecar's verdict, as a file in the run directory: written by the sidecar,
read by `python -m healthcheck status` (Docker's HEALTHCHECK), the dashboard and /metrics.
A file keeps working when MongoDB is the thing that is down."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

STALE_AFTER_S = 20  # the watchdog restarts a sidecar whose heartbeat is 7 s old
# Read without the settings object by what must stay small or quick: the watchdog inside
# supervisord, and `healthcheck status`, which Docker runs every few seconds (pydantic would
# make each check take 0.3 s of CPU). A unit test keeps these equal to the settings' own.
RUN_DIR_ENV, RUN_DIR_DEFAULT = "BOTSTACK_RUN_DIR", "/run/botstack"


def run_dir() -> str:
    return os.environ.get(RUN_DIR_ENV) or RUN_DIR_DEFAULT


def verdict_path(run_dir: str) -> Path:
    return Path(run_dir) / "health.json"


def read_verdict(run_dir: str) -> dict | None:
    """The latest verdict, or None when there is none, it is unreadable, or it is stale."""
    try:
        verdict = json.loads(verdict_path(run_dir).read_text())
        if not isinstance(verdict, dict) or not isinstance(verdict.get("status"), str) \
                or not isinstance(verdict.get("reasons"), list):
            return None
        if not 0 <= time.monotonic() - verdict["monotonic"] <= STALE_AFTER_S:  # a clock step moves "time"
            return None
        return verdict
    except (OSError, ValueError, KeyError, TypeError):
        return None
