"""The bot's sign of life: a heartbeat written from inside its event loop.

If the loop is stuck (deadlock, blocking call, SIGSTOP) the heartbeat goes stale, which a
process check cannot see; the `bot` probe reads its age (services/common/heartbeat.py).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from services.common.heartbeat import beat

PERIOD_S = 1.0
log = logging.getLogger(__name__)


async def beat_forever(path: Path, period_s: float = PERIOD_S) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            beat(path)
        except OSError as exc:
            log.warning("heartbeat %s not written: %s", path, exc)
        await asyncio.sleep(period_s)

