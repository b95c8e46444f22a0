"""Liveness probes: "alive" means running *and* answering within a timeout.

Each program declares its probe next to its code (`services/<program>/probe.py`); the health
sidecar runs them. A probe answers one question quickly and never raises.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.common.heartbeat import last_beat
from services.common.probe import check as http_check

OP_MSG = 2013  # MongoDB's wire protocol message


@dataclass
class Probe:
    program: str
    period_s: float = 2.0
    timeout_s: float = 1.0
    failure_threshold: int = 3
    start_grace_s: float = 5.0  # after a start, failures do not count until it first answers, at most this long

    def check(self) -> tuple[bool, str]:
        raise NotImplementedError


@dataclass
class HttpProbe(Probe):
    url: str = ""

    def check(self) -> tuple[bool, str]:
        return http_check(self.url, self.timeout_s)


@dataclass
class HeartbeatProbe(Probe):
    """Fresh when the program's event loop beat into `path` within `max_age_s` (heartbeat.py)."""

    path: Path = Path("/dev/null")
    max_age_s: float = 6.0

    def check(self) -> tuple[bool, str]:
        seen = last_beat(self.path)
        if seen is None:
            return False, f"no heartbeat at {self.path}"
        age = seen[1]
        return 0 <= age <= self.max_age_s, f"heartbeat {age:.1f} s old"


@dataclass
class MongoPingProbe(Probe):
    """mongod answers `ping` on its wire protocol (one OP_MSG), on a connection kept open.

    PyMongo's client is not used here: loading it would add about 20 MiB to the sidecar, which
    runs for the container's whole life, for one command a second to the container's own mongod
    (no TLS, no authentication: `ping` needs neither). The BSON is PyMongo's own `bson` package.
    """

    host: str = "127.0.0.1"
    port: int = 27017
    _conn: socket.socket | None = field(default=None, repr=False, compare=False)
    _request_id: int = field(default=0, repr=False, compare=False)
    # The sidecar stops waiting for a probe at its timeout, but the probe's thread may still be
    # finishing when the next check starts: one exchange at a time on the connection.
    _busy: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def check(self) -> tuple[bool, str]:
        if not self._busy.acquire(blocking=False):
            return False, "the previous ping has not returned"
        deadline = time.monotonic() + self.timeout_s
        try:
            kept = self._conn is not None
            try:
                reply = self._command({"ping": 1, "$db": "admin"}, deadline)
            except (ConnectionError, EOFError):
                if not kept:
                    raise
                # The kept connection was closed by the server's end (mongod restarted since the
                # last ping): once more, on a new one. A server that is stopped or hung closes
                # nothing; its ping times out instead, and that is not retried.
                self.close()
                reply = self._command({"ping": 1, "$db": "admin"}, deadline)
        except Exception as exc:  # refused, timed out, closed, garbled: not answering
            self.close()
            return False, f"{type(exc).__name__}: {str(exc)[:200]}"
        finally:
            self._busy.release()
        if reply.get("ok") == 1:
            return True, "ping ok"
        return False, f"ping refused: {str(reply.get('errmsg'))[:200]}"

    def _command(self, command: dict, deadline: float) -> dict:
        import bson

        if self._conn is None:
            self._conn = socket.create_connection((self.host, self.port),
                                                  timeout=max(0.001, deadline - time.monotonic()))
        self._request_id = self._request_id % 2**31 + 1
        body = struct.pack("<IB", 0, 0) + bson.encode(command)  # flags, section kind 0: the command
        self._conn.settimeout(max(0.001, deadline - time.monotonic()))
        self._conn.sendall(struct.pack("<iiii", 16 + len(body), self._request_id, 0, OP_MSG) + body)
        length, _, response_to, opcode = struct.unpack("<iiii", self._read(16, deadline))
        payload = self._read(length - 16, deadline)
        if opcode != OP_MSG or response_to != self._request_id or payload[4] != 0:
            raise ValueError(f"unexpected reply (opcode {opcode}, to {response_to})")
        size = int.from_bytes(payload[5:9], "little")  # the document, without a trailing checksum
        return bson.decode(payload[5:5 + size])

    def _read(self, n: int, deadline: float) -> bytes:
        data = b""
        while len(data) < n:
            self._conn.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = self._conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("connection closed")
            data += chunk
        return data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __getstate__(self) -> dict:  # handed to the sidecar (healthcheck/plan.py) without its connection
        return {k: v for k, v in self.__dict__.items() if k not in ("_conn", "_busy")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _conn=None, _busy=threading.Lock())
