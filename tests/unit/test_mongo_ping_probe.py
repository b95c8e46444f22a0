"""The sidecar's mongod probe (services/common/probes.py: MongoPingProbe), against a real
MongoDB-wire server: FerretDB, the offline stand-in that scripts/setup-host.sh builds."""

from __future__ import annotations

import os
import pickle
import signal
import time

from services.common.probes import MongoPingProbe
from tests.unit.conftest import free_port, start_ferretdb, stop_ferretdb, wait_until


def test_ping_passes_fails_on_a_stopped_server_within_its_timeout_and_recovers(ferretdb):
    [server], port = ferretdb
    probe = MongoPingProbe("mongodb", port=port, timeout_s=0.5)
    assert probe.check() == (True, "ping ok")
    assert probe.check() == (True, "ping ok")  # on the same connection

    os.kill(server.pid, signal.SIGSTOP)
    wait_until(lambda: open(f"/proc/{server.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "T", 5, 0.01,
               "every thread of the server stopped")
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
