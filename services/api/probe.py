"""How the health sidecar checks the api program.

Liveness (/health, no database): failing it means the process is hung, and it is restarted.
Readiness (/ready: MongoDB answers a ping and takes a write): failing it means a dependency is
down or refuses writes; the container is reported degraded and nothing is restarted.
"""

from services.common.probes import HttpProbe
from services.common.settings import Settings


def probe(settings: Settings) -> HttpProbe:
    return HttpProbe("api", url=f"http://127.0.0.1:{settings.api_port}/health",
                     period_s=1.0, timeout_s=0.8, failure_threshold=3, start_grace_s=15.0)


def readiness(settings: Settings) -> HttpProbe:
    return HttpProbe("api", url=f"http://127.0.0.1:{settings.api_port}/ready",
                     period_s=2.0, timeout_s=1.5, failure_threshold=1)
