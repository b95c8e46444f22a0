"""A deadline for receiving a request: a client must send a whole request, head and body,
within BOTSTACK_REQUEST_TIMEOUT seconds of connecting (or of the answer to its previous request
on the connection); one that does not gets 408 and the connection is closed.

uvicorn has no such timeout. Its keep-alive timer covers only the idle time between requests
and is disarmed by the first byte of the next one, and a connection that never sends a byte is
not timed at all: measured, a client that sent nothing, or half a request head, was still
connected 30 s later, and stays for as long as it likes. Such clients (slowloris) hold as many
sockets and buffers: 1200 of them, at Docker 25's limit of 1024 open files (services/start.py
now raises it), and the API stopped answering anyone, its probe included: restarted as hung.
bodylimit.py bounds a body's size; this bounds how long a request may take to arrive.

Only the arrival is timed: once the request is whole, the app takes as long as it needs to
answer, and the deadline starts again when the answer is complete. A connection upgraded to a
WebSocket is no longer timed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Callable

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from services.common.logs import Tally

log = logging.getLogger("botstack.http")

TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
LOG_EVERY_S = 60.0  # under a flood of slow clients, one line a minute with the count, not one each
_cut_offs = Tally(LOG_EVERY_S)


class Deadline:
    """Mixed into one of uvicorn's HTTP protocol classes (RequestDeadline below)."""

    def __init__(self, *args, request_deadline_s: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._deadline_s = request_deadline_s
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request on this connection has as long again

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self._deadline = self.loop.call_later(self._deadline_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # closed already, or upgraded to a WebSocket
        cycle = self.cycle
        if cycle is not None and not cycle.more_body and not cycle.response_complete:
            return  # the whole request is here and the app is answering it
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(TIMED_OUT)
        self.transport.close()
        if (count := _cut_offs.count()) is not None:
            log.warning("closed %d connection(s) that sent no whole request within %g s (408; the last from %s): "
                        "slow or idle clients; BOTSTACK_REQUEST_TIMEOUT sets the time",
                        count, self._deadline_s, "%s:%d" % self.client if self.client else "a unix socket")


class RequestDeadline(Deadline, AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol (httptools, or h11 without it) with the deadline."""


def with_request_deadline(seconds: float, protocol: type[Deadline] = RequestDeadline) -> Callable[..., asyncio.Protocol]:
    """What uvicorn's `http=` takes. A partial of a class of this module, not a class made here:
    development mode's reloader pickles it for the server's process."""
    return functools.partial(protocol, request_deadline_s=seconds)

