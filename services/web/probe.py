"""How the health sidecar knows the web program is alive: /health answers."""

from services.common.probes import HttpProbe
from services.common.settings import Settings


def probe(settings: Settings) -> HttpProbe:
    return HttpProbe("web", url=f"http://127.0.0.1:{settings.web_port}/health",
                     period_s=1.0, timeout_s=0.8, failure_threshold=3, start_grace_s=15.0)
