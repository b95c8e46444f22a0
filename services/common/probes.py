"""Liveness probes: "alive" means running *and* answering within a timeout.

Each program declares its probe next to its code (`services/<program>/probe.py`); the health
sidecar runs them. A probe answers one question quickly and never raises.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from services.common.probe import check as http_check


@dataclass
class Probe:
    program: str
    period_s: float = 2.0
    timeout_s: float = 1.0
    failure_threshold: int = 3
    start_grace_s: float = 5.0  # after a start, failures do not count until it first answers, at most this long

    def check(self) -> tuple[bool, str]:
        raise NotImplementedError


@dataclass
class HttpProbe(Probe):
    url: str = ""

    def check(self) -> tuple[bool, str]:
        return http_check(self.url, self.timeout_s)


@dataclass
class HeartbeatProbe(Probe):
    """Fresh when the program's event loop touched `path` within `max_age_s`."""

    path: Path = Path("/dev/null")
    max_age_s: float = 6.0

    def check(self) -> tuple[bool, str]:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False, f"no heartbeat at {self.path}"
        return age <= self.max_age_s, f"heartbeat {age:.1f} s old"


@dataclass
class MongoPingProbe(Probe):
    settings: object = None  # Settings; the client comes from services/common/db.py
    _client: object = field(default=None, repr=False)

    def check(self) -> tuple[bool, str]:
        from pymongo.errors import PyMongoError

        from services.common.db import make_sync_client

        if self._client is None:
            self._client = make_sync_client(self.settings, "healthcheck", timeout_ms=int(self.timeout_s * 1000))
        try:
            self._client.admin.command("ping")
            return True, "ping ok"
        except PyMongoError as exc:
            return False, f"{type(exc).__name__}: {str(exc)[:200]}"
