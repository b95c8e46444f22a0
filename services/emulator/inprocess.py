"""Serve an ASGI app (the emulator, or a test's webhook receiver) on 127.0.0.1 from a thread.

For tests in one process that need real HTTP: a real socket lets a client time out and disconnect,
and lets code in another event loop (python-telegram-bot's Bot, the emulator's webhook delivery)
talk to the app. The port is an ephemeral one, chosen by the kernel.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import uvicorn

START_TIMEOUT_S = 10.0


@contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", **more) -> Iterator[str]:
    """Yields the base URL, e.g. "http://127.0.0.1:43817"; stops the server on exit. `more`:
    more of uvicorn.Config's settings."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=2, **more)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="asgi-in-thread", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the in-thread server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT_S)
        sock.close()
