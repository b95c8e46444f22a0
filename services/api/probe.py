"""How the health sidecar knows the api program is alive: /health answers (no DB involved)."""

from services.common.probes import HttpProbe
from services.common.settings import Settings


def probe(settings: Settings) -> HttpProbe:
    return HttpProbe("api", url=f"http://127.0.0.1:{settings.api_port}/health")
