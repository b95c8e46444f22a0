"""How the health sidecar knows MongoDB is alive: it answers a ping.

The start grace is long because a real mongod replays its journal after an unclean stop
before it answers; killing it during recovery would only start the recovery again. The grace
ends when mongod first answers: a hang after that is healed in seconds.
"""

from services.common.probes import MongoPingProbe
from services.common.settings import Settings


def probe(settings: Settings) -> MongoPingProbe:
    return MongoPingProbe("mongodb", settings=settings,
                          period_s=1.0, timeout_s=0.8, failure_threshold=3, start_grace_s=30.0)
