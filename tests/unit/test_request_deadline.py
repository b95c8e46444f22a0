"""The request deadline under real uvicorn: clients that send nothing, or a request a byte at a
time, are cut off with 408 when the deadline passes, while the clients served alongside them
(fast ones, a request sent in two parts, a slow answer, a keep-alive connection) are not. A body
cut off mid-way ends its request quietly (bodylimit.py), not with a traceback."""

from __future__ import annotations

import asyncio
import pickle
import time

import httpx
import pytest
from fastapi import FastAPI, Request
from uvicorn.protocols.http.h11_impl import H11Protocol

from services.common import request_deadline
from services.common.bodylimit import BodyLimit
from services.common.logs import Tally
from services.common.request_deadline import Deadline, RequestDeadline, with_request_deadline
from services.emulator.inprocess import serve_in_thread

DEADLINE_S = 1.0
TRICKLE_EVERY_S = 0.2


def app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(BodyLimit, max_bytes=4096)  # as on the API, the dashboard and the webhook door

    @app.get("/ok")
    async def ok() -> dict:
        return {"ok": True}

    @app.get("/slow")
    async def slow() -> dict:  # answering takes longer than the deadline: only arrival is timed
        await asyncio.sleep(2 * DEADLINE_S)
        return {"slow": True}

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        return {"length": len(await request.body())}

    return app


async def slow_client(port: int, first: bytes, trickle: bytes,
                      after_answer: bool = False) -> tuple[float, float, bytes]:
    """Sends `first`, then (after its answer, with after_answer) `trickle` a byte every 0.2 s
    until the server closes. Returns the seconds to the close from before the server can have
    started its deadline (before connecting, or before sending the request it answers first) and
    from after it surely has (connected, or the answer read), and what the server sent meanwhile.
    The server's clock runs between the two: this client's loop may take a while to notice."""
    not_before = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if after_answer:
        not_before = time.monotonic()
    writer.write(first)
    if after_answer:
        answer = await reader.readuntil(b'{"ok":true}')
        assert answer.startswith(b"HTTP/1.1 200"), answer
    surely = time.monotonic()

    async def drip() -> None:
        for byte in trickle * 1000:
            await asyncio.sleep(TRICKLE_EVERY_S)
            writer.write(bytes([byte]))
            await writer.drain()

    dripping = asyncio.create_task(drip())
    try:
        received = await asyncio.wait_for(reader.read(), timeout=10 * DEADLINE_S)  # to EOF
    except ConnectionResetError:  # a drip that crossed the close: the kernel answers it with a reset,
        received = b"(reset)"    # which discards what was still unread
    closed = time.monotonic()
    dripping.cancel()
    writer.close()
    return closed - not_before, closed - surely, received


async def in_two_parts(port: int) -> bytes:
    """A POST whose body arrives in two parts, well within the deadline."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello")
    await asyncio.sleep(DEADLINE_S / 3)
    writer.write(b"world")
    answer = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    return answer


async def scene(base: str) -> tuple[dict[str, list[tuple[float, float, bytes]]], list[int], list[bytes]]:
    port = int(base.rsplit(":", 1)[1])
    head = b"GET /ok HTTP/1.1\r\nHost: t\r\nX-Slow: "
    body_head = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
    slow = {
        "silent": [slow_client(port, b"", b"") for _ in range(30)],
        "head a byte at a time": [slow_client(port, head, b"x") for _ in range(30)],
        "body a byte at a time": [slow_client(port, body_head, b"y") for _ in range(20)],
        "keep-alive, then a head a byte at a time": [
            slow_client(port, b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n", head, after_answer=True) for _ in range(10)],
    }
    gathered = {kind: asyncio.gather(*clients) for kind, clients in slow.items()}

    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        async def fast() -> list[int]:
            statuses = []
            deadline = time.monotonic() + 3 * DEADLINE_S
            while time.monotonic() < deadline:  # bounded: for three deadlines' time
                statuses.append((await client.get("/ok")).status_code)
                await asyncio.sleep(0.02)
            return statuses

        slow_answers = [client.get("/slow") for _ in range(3)]
        fast_statuses, *slows = await asyncio.gather(fast(), *slow_answers)
        parts = await asyncio.gather(*(in_two_parts(port) for _ in range(5)))
    statuses = fast_statuses + [r.status_code for r in slows]
    return {kind: await g for kind, g in gathered.items()}, statuses, parts


class H11Deadline(Deadline, H11Protocol):
    """uvicorn's fallback when httptools is not installed."""


@pytest.mark.parametrize("protocol", [RequestDeadline, H11Deadline])  # httptools (uvicorn's choice here), h11
def test_slow_clients_are_cut_off_at_the_deadline_while_the_others_are_served(protocol, caplog, monkeypatch):
    monkeypatch.setattr(request_deadline, "_cut_offs", Tally(request_deadline.LOG_EVERY_S))  # its line, not suppressed
    with serve_in_thread(app(), http=with_request_deadline(DEADLINE_S, protocol)) as base:
        cut_off, statuses, parts = asyncio.run(scene(base))
        assert httpx.get(base + "/ok").status_code == 200  # and it goes on serving

    assert len(statuses) > 20 and set(statuses) == {200}, statuses  # nobody served was cut off
    assert all(p.startswith(b"HTTP/1.1 200") and p.endswith(b'{"length":10}') for p in parts), parts
    for kind, results in cut_off.items():
        for from_before, from_after, received in results:  # CI: a keep-alive client read its answer 0.11 s late
            assert from_before >= DEADLINE_S - 0.01 and from_after <= DEADLINE_S + 1.0, (kind, from_before, from_after)
            assert received.startswith(b"HTTP/1.1 408 Request Timeout") or received == b"(reset)", (kind, received)
        resets = sum(received == b"(reset)" for _, _, received in results)
        assert resets < len(results) and (kind != "silent" or not resets), (kind, resets)
    said = [r.getMessage() for r in caplog.records if r.name == "botstack.http"]
    assert len(said) == 1 and "no whole request within 1 s" in said[0], said  # once, not 90 times
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_the_protocol_survives_the_reloaders_pickling():
    """Development mode's reloader pickles uvicorn's settings for the server's process (a class
    made inside a function crashed the API and the dashboard there, CI)."""
    made = pickle.loads(pickle.dumps(with_request_deadline(7)))
    assert made.func is RequestDeadline and made.keywords == {"request_deadline_s": 7}
