"""How the health sidecar knows MongoDB is alive: it answers a ping."""

from services.common.probes import MongoPingProbe
from services.common.settings import Settings


def probe(settings: Settings) -> MongoPingProbe:
    return MongoPingProbe("mongodb", uri=settings.mongodb_uri)
