"""The sidecar's mongod probe (services/common/probes.py: MongoPingProbe), against a real
MongoDB-wire server: FerretDB, the offline stand-in that scripts/setup-host.sh builds."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import time

import pytest

from services.common.probes import MongoPingProbe
from tests.unit.conftest import ROOT

FERRETDB = ROOT / "tests" / "integration" / "offline" / "build" / "ferretdb"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ferretdb(data, port: int) -> subprocess.Popen:
    server = subprocess.Popen([str(FERRETDB), "--handler=sqlite", f"--sqlite-url=file:{data}/",
                               f"--listen-addr=127.0.0.1:{port}", "--state-dir=-", "--telemetry=disable",
                               "--debug-addr=-", "--log-level=error"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while MongoPingProbe("mongodb", port=port).check()[0] is False:  # a probe of its own
        assert time.monotonic() < deadline, "FerretDB did not start"
        time.sleep(0.05)
    return server


def stop_ferretdb(server: subprocess.Popen) -> None:
    os.kill(server.pid, signal.SIGCONT)
    server.kill()
    server.wait()


@pytest.fixture
def ferretdb(tmp_path):
    if not FERRETDB.exists():
        pytest.skip("no FerretDB stand-in built here (scripts/setup-host.sh builds it)")
    port = free_port()
    servers = [start_ferretdb(tmp_path, port)]
    try:
        yield servers, port
    finally:
        for server in servers:
            stop_ferretdb(server)


def test_ping_passes_fails_on_a_stopped_server_within_its_timeout_and_recovers(ferretdb):
    [server], port = ferretdb
    probe = MongoPingProbe("mongodb", port=port, timeout_s=0.5)
    assert probe.check() == (True, "ping ok")
    assert probe.check() == (True, "ping ok")  # on the same connection

    os.kill(server.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while open(f"/proc/{server.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "T":  # every thread stopped
        assert time.monotonic() < deadline
        time.sleep(0.01)
    t0 = time.monotonic()
    ok, detail = probe.check()
    assert not ok and "timed out" in detail and time.monotonic() - t0 < 0.8
    ok, _ = probe.check()  # a new connection: the kernel accepts it, the stopped server never answers
    assert not ok

    os.kill(server.pid, signal.SIGCONT)
    assert probe.check() == (True, "ping ok")


def test_the_first_ping_after_a_restart_passes(ferretdb, tmp_path):
    """A kept connection to a server that was killed and started again is closed at its end:
    the probe must not take that for a hang (the sidecar would then wait out the start grace)."""
    servers, port = ferretdb
    probe = MongoPingProbe("mongodb", port=port, timeout_s=0.5)
    assert probe.check() == (True, "ping ok")
    stop_ferretdb(servers.pop())
    servers.append(start_ferretdb(tmp_path, port))

    assert probe.check() == (True, "ping ok")


def test_nothing_listening_fails_at_once():
    ok, detail = MongoPingProbe("mongodb", port=free_port(), timeout_s=0.5).check()
    assert not ok and "ConnectionRefused" in detail


def test_handed_over_without_its_connection_and_one_exchange_at_a_time(ferretdb):
    _, port = ferretdb
    probe = MongoPingProbe("mongodb", port=port, timeout_s=0.5)
    assert probe.check()[0]
    copy = pickle.loads(pickle.dumps(probe))
    assert copy._conn is None and copy.check() == (True, "ping ok")

    with probe._busy:  # the previous check's thread is still in its exchange
        assert probe.check() == (False, "the previous ping has not returned")
    assert probe.check() == (True, "ping ok")
