"""How the health sidecar knows the web program is alive: /health answers."""

from services.common.probes import HttpProbe
from services.common.settings import Settings


def probe(settings: Settings) -> HttpProbe:
    return HttpProbe("web", url=f"http://127.0.0.1:{settings.web_port}/health")
