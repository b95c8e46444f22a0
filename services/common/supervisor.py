"""Talking to supervisord: only over its unix socket, with supervisor's own XML-RPC client."""

from __future__ import annotations

import os
import xmlrpc.client
from dataclasses import dataclass
from datetime import datetime, timezone

from supervisor.xmlrpc import SupervisorTransport


def rpc(socket_path: str, timeout_s: float = 5.0) -> xmlrpc.client.ServerProxy:
    """A proxy for supervisord's API. supervisord passes its URL to children as
    SUPERVISOR_SERVER_URL; the configured socket path is the fallback."""
    url = os.environ.get("SUPERVISOR_SERVER_URL") or f"unix://{socket_path}"
    if not url.startswith("unix://"):
        raise ValueError(f"supervisord must be reached over a unix socket, not {url!r}")
    transport = SupervisorTransport(None, None, serverurl=url)
    transport.timeout = timeout_s
    # The host part is ignored by the unix-socket transport.
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


@dataclass(frozen=True)
class ProgramInfo:
    name: str
    state: str
    pid: int
    started_at: datetime | None
    uptime_s: int | None
    description: str

    @classmethod
    def from_rpc(cls, info: dict) -> "ProgramInfo":
        running = info["statename"] == "RUNNING"
        start = info.get("start") or 0
        return cls(
            name=info["name"],
            state=info["statename"],
            pid=info.get("pid") or 0,
            started_at=datetime.fromtimestamp(start, timezone.utc) if start else None,
            uptime_s=(info["now"] - start) if running and start else None,
            description=info.get("description", ""),
        )


def programs(proxy: xmlrpc.client.ServerProxy) -> list[ProgramInfo]:
    return [ProgramInfo.from_rpc(i) for i in proxy.supervisor.getAllProcessInfo()]
