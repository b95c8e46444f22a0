"""The bot's sign of life: a file touched from inside its event loop.

If the loop is stuck (deadlock, blocking call, SIGSTOP) the file goes stale, which a process
check cannot see; the `bot` probe reads its age.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

PERIOD_S = 1.0
log = logging.getLogger(__name__)


async def beat_forever(path: Path, period_s: float = PERIOD_S) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    while True:
        try:
            os.utime(path)
        except OSError as exc:
            log.warning("heartbeat %s not written: %s", path, exc)
        await asyncio.sleep(period_s)

