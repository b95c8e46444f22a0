"""A ceiling on request bodies, enforced while they arrive (413, not a full memory).

FastAPI and Starlette read a whole body into memory before a handler sees it, and neither has
a limit of its own; uvicorn bounds only the headers. A check of Content-Length alone misses a
chunked body, which has none. So this ASGI middleware refuses a declared length over the limit
before reading anything, and counts a streamed body as it comes, answering 413 the moment it
passes the limit; the handler's read ends there, and whatever the app then answers is replaced
by the 413. The connection is closed after it, so the client stops sending. A client that goes
away before its body is whole (or is cut off by request_deadline.py) ends the request quietly:
there is nobody to answer.

Used by the API (BOTSTACK_API_MAX_BODY_BYTES, your routes included), the dashboard (its forms)
and the bot's own webhook receiver.
"""

from __future__ import annotations

import json

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TELEGRAM_UPDATE_MAX_BYTES = 1 << 20  # a webhook call carries one update, far smaller than this


class BodyTooLarge(Exception):
    """Raised into the app's read of the body once it passes the limit."""


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return

        seen = 0
        over = False
        answered = False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    raise BodyTooLarge(f"request body over {self.max_bytes} bytes")
            return message

        async def guarded(message: Message) -> None:
            nonlocal answered
            if over:  # the app's own answer to the broken read (FastAPI's 400): the 413 instead
                if message["type"] == "http.response.start" and not answered:
                    answered = True
                    await self._refuse(send)
                return
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except BodyTooLarge:
            if answered:
                raise
            answered = True
            await self._refuse(send)
        except ClientDisconnect:  # gone (or cut off: request_deadline.py) before its body was whole:
            pass  # nobody to answer, and not the app's error (uvicorn logged each as a traceback)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body too large: at most {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
