"""Whether this container runs its own mongod: decided once, by the entry point, before
supervisord starts (and read again by the sidecar and `botstack doctor`).

Kept apart from services/common/db.py so that the entry point does not import PyMongo (0.3 s
of every container start, measured) for the usual URIs: one host is read with the standard
library; anything else (several hosts, unusual syntax) with PyMongo's own URI parser.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from services.common.settings import Settings

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
MONGOD_PORT = 27017


def _single_host(uri: str) -> tuple[str, int] | None:
    """(host, port) of a plain one-host mongodb:// URI; None when it is anything else."""
    try:
        parts = urlsplit(uri)
        netloc = parts.netloc.rpartition("@")[2]
        if parts.scheme != "mongodb" or not netloc or "," in netloc or "%" in netloc:
            return None
        return parts.hostname, parts.port or MONGOD_PORT
    except ValueError:
        return None


def runs_local_mongod(settings: Settings) -> bool:
    """Whether this container's own mongod is the database (BOTSTACK_MONGODB_LOCAL decides
    when set; otherwise MONGODB_URI pointing at 127.0.0.1/localhost:27017 means yes)."""
    if settings.mongodb_local is not None:
        return settings.mongodb_local
    if not settings.mongodb_uri.startswith("mongodb://"):
        return False  # mongodb+srv:// is always a remote cluster
    host = _single_host(settings.mongodb_uri)
    if host is None:
        from pymongo.uri_parser import parse_uri

        nodes = parse_uri(settings.mongodb_uri)["nodelist"]
        if len(nodes) != 1:
            return False
        host = nodes[0]
    return host[0] in LOCAL_HOSTS and host[1] == MONGOD_PORT
