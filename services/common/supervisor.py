"""Talking to supervisord: only over its unix socket, with the standard library's XML-RPC client.

Not supervisor's own `SupervisorTransport`: it opens the socket with no timeout at all (a
supervisord that stops answering would hang the caller for good, whatever it asked for), and
importing it loads supervisor's HTTP server too (medusa, about 2.7 MiB in every process that
talks to supervisord, the health sidecar included). The stdlib transport needs only a
connection that dials a unix socket; it keeps it alive between calls and retries once when a
kept-alive connection was closed under it.
"""

from __future__ import annotations

import http.client
import os
import socket
import xmlrpc.client
from dataclasses import dataclass
from datetime import datetime, timezone


class UnixSocketHTTP(http.client.HTTPConnection):
    """HTTP over a unix socket; `timeout_s` bounds the connect and every read."""

    def __init__(self, socket_path: str, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class UnixSocketTransport(xmlrpc.client.Transport):
    def __init__(self, socket_path: str, timeout_s: float) -> None:
        super().__init__()
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    def make_connection(self, host):
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        self._connection = host, UnixSocketHTTP(self.socket_path, self.timeout_s)
        return self._connection[1]


def rpc(socket_path: str, timeout_s: float = 5.0) -> xmlrpc.client.ServerProxy:
    """A proxy for supervisord's API; each call gives up after `timeout_s` (OSError). A call that
    waits for a program (stopProcess, startProcess) needs more than its stopwaitsecs or startsecs.
    supervisord passes its URL to children as SUPERVISOR_SERVER_URL; the configured socket path
    is the fallback."""
    url = os.environ.get("SUPERVISOR_SERVER_URL") or f"unix://{socket_path}"
    if not url.startswith("unix://"):
        raise ValueError(f"supervisord must be reached over a unix socket, not {url!r}")
    # The host part only goes into the Host header.
    return xmlrpc.client.ServerProxy("http://localhost/RPC2",
                                     transport=UnixSocketTransport(url[len("unix://"):], timeout_s))


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
