"""Which build is running and since when: the answer to "is the new code live?"."""

from __future__ import annotations

import platform
import socket
import time
from datetime import datetime, timezone

from services.common.settings import Settings

# Taken when the program's interpreter imports this module, i.e. at process start.
STARTED_AT = datetime.now(timezone.utc)
_STARTED_MONOTONIC = time.monotonic()


def uptime_s() -> float:
    return round(time.monotonic() - _STARTED_MONOTONIC, 3)


def build_info(settings: Settings, program: str) -> dict[str, object]:
    return {
        "program": program,
        # Which container answered: with several replicas behind one address, the way to tell.
        "instance": socket.gethostname(),
        "version": settings.version,
        "git_sha": settings.build_sha,
        "build_time": settings.build_time,
        "started_at": STARTED_AT.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "uptime_s": uptime_s(),
        "python": platform.python_version(),
    }
