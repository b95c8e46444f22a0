"""How the health sidecar knows the bot is alive: its event loop keeps the heartbeat fresh."""

from pathlib import Path

from services.bot.heartbeat import PERIOD_S
from services.common.probes import HeartbeatProbe
from services.common.settings import Settings


def probe(settings: Settings) -> HeartbeatProbe:
    return HeartbeatProbe(
        "bot", path=Path(settings.run_dir) / "bot.heartbeat", max_age_s=3 * PERIOD_S
    )
