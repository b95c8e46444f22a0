"""How the health sidecar knows the bot is alive: its event loop keeps the heartbeat fresh.

A process check cannot see a stuck event loop; a stale heartbeat can. The start grace covers
imports on a cold, busy machine (two stacks starting at once on 2 cores took over 5 s).
"""

from pathlib import Path

from services.bot.heartbeat import PERIOD_S
from services.common.probes import HeartbeatProbe
from services.common.settings import Settings


def probe(settings: Settings) -> HeartbeatProbe:
    return HeartbeatProbe("bot", path=Path(settings.run_dir) / "bot.heartbeat", max_age_s=3 * PERIOD_S,
                          period_s=1.0, failure_threshold=2, start_grace_s=15.0)
