"""What the request deadline (services/common/request_deadline.py) costs a request, measured
side by side in one run (not a test: it asserts nothing).

    python bench/request_deadline.py [--requests 3000] [--repeat 5]

Starts uvicorn in a process of its own twice, as serve.py does (one worker, no access log)
with a trivial app behind the API's body limit: once with uvicorn's own HTTP protocol, once
with the deadline (one timer armed per connection and re-armed per answer). The setups take
turns, --repeat times; each round sends N requests one after another, on one keep-alive
connection and then each on a new connection (a timer armed at connect too). A trivial app is
the worst case for the deadline's share: the API's own routes do a database round trip each.
Reports, per setup, the median of the server's CPU time per request (read from /proc: the
client, in Python too, is the bottleneck, and requests/s swings with it by half) and of
requests/s, every round's in brackets, and the ratios deadline/plain.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.unit.conftest import free_port  # noqa: E402

SETUPS = ("plain", "deadline")
MODES = (("keep-alive", True), ("new connection each", False))
START_TIMEOUT_S = 15.0


def app():
    from fastapi import FastAPI

    from services.common.bodylimit import BodyLimit

    made = FastAPI()
    made.add_middleware(BodyLimit, max_bytes=1 << 20)

    @made.get("/ok")
    async def ok() -> dict:
        return {"ok": True}

    return made


def serve(setup: str, port: int) -> None:
    import uvicorn

    from services.common.request_deadline import with_request_deadline

    http = with_request_deadline(30.0) if setup == "deadline" else "auto"
    uvicorn.run(app(), host="127.0.0.1", port=port, log_config=None, access_log=False, http=http)


def started(setup: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", setup, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/ok").status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.kill()
    raise SystemExit(f"the {setup} server did not answer within {START_TIMEOUT_S:.0f} s")


def cpu_s(pid: int) -> float:
    """User and system CPU seconds a process has used (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(server: subprocess.Popen, base: str, requests: int, keep_alive: bool) -> tuple[float, float]:
    """(the server's CPU microseconds per request, requests per second)"""
    limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
    with httpx.Client(base_url=base, limits=limits) as client:
        cpu, began = cpu_s(server.pid), time.perf_counter()
        for _ in range(requests):
            client.get("/ok").raise_for_status()
        took = time.perf_counter() - began
        return (cpu_s(server.pid) - cpu) / requests * 1e6, requests / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--serve", choices=SETUPS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.port)

    rounds: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.repeat):
        for setup in SETUPS:
            server, base = started(setup)
            try:
                for mode, keep_alive in MODES:
                    rounds.setdefault((mode, setup), []).append(measured(server, base, args.requests, keep_alive))
            finally:
                server.terminate()
                server.wait(START_TIMEOUT_S)
    print(f"medians of {args.repeat} rounds of {args.requests} requests (every round in brackets)")
    for what, unit, index in (("server CPU per request", "us", 0), ("requests per second", "/s", 1)):
        print(what)
        for mode, _ in MODES:
            medians = {setup: statistics.median(r[index] for r in rounds[mode, setup]) for setup in SETUPS}
            for setup in SETUPS:
                print(f"  {mode:20} {setup:9} {medians[setup]:7.0f} {unit}  "
                      f"[{', '.join(f'{r[index]:.0f}' for r in rounds[mode, setup])}]")
            print(f"  {mode:20} ratio deadline/plain {medians['deadline'] / medians['plain']:.3f}")


if __name__ == "__main__":
    main()
