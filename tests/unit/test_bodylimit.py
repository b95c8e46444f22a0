"""BodyLimit under real uvicorn: a body over the limit gets 413, declared or streamed (chunked),
whatever the route does with it, and the handler never holds more than the limit."""

from __future__ import annotations

import httpx
from fastapi import FastAPI, Request
from pydantic import BaseModel

from services.common.bodylimit import BodyLimit
from services.emulator.inprocess import serve_in_thread

LIMIT = 4096


class Note(BaseModel):
    text: str


def limited_app(read: list[int]) -> FastAPI:
    app = FastAPI()
    app.add_middleware(BodyLimit, max_bytes=LIMIT)

    @app.post("/model")
    async def model(note: Note) -> dict:  # FastAPI reads and parses the body itself
        read.append(len(note.text))
        return {"length": len(note.text)}

    @app.post("/raw")
    async def raw(request: Request) -> dict:  # the route reads the body itself
        body = await request.body()
        read.append(len(body))
        return {"length": len(body)}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    return app


def chunks(total: int, size: int = 1024):
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


def test_a_body_over_the_limit_gets_413_declared_or_streamed(caplog):
    read: list[int] = []
    with serve_in_thread(limited_app(read)) as base, httpx.Client(base_url=base, timeout=10) as client:
        small = client.post("/model", json={"text": "hi"})
        assert small.status_code == 200 and small.json() == {"length": 2}
        assert client.post("/raw", content=b"y" * LIMIT).json() == {"length": LIMIT}  # at the limit: fine

        for path in ("/model", "/raw"):
            declared = client.post(path, content=b"x" * (LIMIT + 1))  # Content-Length over the limit
            assert declared.status_code == 413, (path, declared.text)
            assert "at most 4096 bytes" in declared.json()["detail"]
            streamed = client.post(path, content=chunks(50 * LIMIT), headers={"content-type": "application/json"})
            assert streamed.status_code == 413, (path, streamed.text)
            assert streamed.headers["connection"] == "close"

        assert client.get("/health").status_code == 200  # and it goes on serving
    assert read == [2, LIMIT]  # no handler ever got a body over the limit
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]  # no traceback either
