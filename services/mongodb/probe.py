"""How the health sidecar knows MongoDB is alive: it answers a ping.

The start grace is long because a real mongod replays its journal after an unclean stop
before it answers; killing it during recovery would only start the recovery again. The grace
ends when mongod first answers: a hang after that is healed in seconds.
"""

from services.common.local_mongod import MONGOD_PORT
from services.common.probes import MongoPingProbe
from services.common.settings import Settings


def probe(settings: Settings) -> MongoPingProbe:
    """The container's own mongod (probed only when it runs: services/common/local_mongod.py)."""
    return MongoPingProbe("mongodb", host="127.0.0.1", port=MONGOD_PORT,
                          period_s=1.0, timeout_s=0.8, failure_threshold=3, start_grace_s=30.0)
