"""An autoheal-equivalent watcher for the benchmark's alternative setup (not shipped).

docker-autoheal's image cannot be pulled on these machines, so this does what it does, with its
defaults: every AUTOHEAL_INTERVAL seconds, list the containers labelled autoheal=true that Docker
reports unhealthy and restart each (stop timeout AUTOHEAL_DEFAULT_STOP_TIMEOUT). It talks to the
Docker engine over the mounted unix socket with the standard library only.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import time
import urllib.parse

SOCKET = "/var/run/docker.sock"
INTERVAL_S = float(os.environ.get("AUTOHEAL_INTERVAL", "5"))
STOP_TIMEOUT_S = int(os.environ.get("AUTOHEAL_DEFAULT_STOP_TIMEOUT", "10"))


class UnixConnection(http.client.HTTPConnection):
    def __init__(self) -> None:
        super().__init__("localhost", timeout=STOP_TIMEOUT_S + 30)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(SOCKET)


def call(method: str, path: str):
    conn = UnixConnection()
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body else None
    finally:
        conn.close()


def unhealthy() -> list[dict]:
    filters = urllib.parse.quote(json.dumps({"health": ["unhealthy"], "label": ["autoheal=true"]}))
    status, containers = call("GET", f"/containers/json?filters={filters}")
    return containers if status == 200 else []


def main() -> None:
    print(f"autoheal-equivalent watcher: every {INTERVAL_S:.0f} s, restart unhealthy containers", flush=True)
    while True:
        for container in unhealthy():
            name = container["Names"][0].lstrip("/")
            status, _ = call("POST", f"/containers/{container['Id']}/restart?t={STOP_TIMEOUT_S}")
            print(f"{time.strftime('%H:%M:%S')} restarted unhealthy {name}: HTTP {status}", flush=True)
        time.sleep(INTERVAL_S)


if __name__ == "__main__":
    sys.exit(main())
