"""services/common/supervisor.py: supervisord's API over its unix socket, against a real
supervisord; a supervisord that stops answering costs a caller its timeout, not its life."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import xmlrpc.client

import pytest

from services.common.supervisor import programs, rpc
from tests.unit.conftest import real_supervisord, wait_until


@pytest.fixture
def supervisord(tmp_path):
    sock = str(tmp_path / "supervisor.sock")

    def running() -> bool:
        try:
            return rpc(sock, timeout_s=1).supervisor.getProcessInfo("sleeper")["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Error):
            return False

    with real_supervisord(tmp_path):
        wait_until(running, 20, what="supervisord and its program running")
        yield sock


def test_rpc_drives_a_real_supervisord_over_its_socket(supervisord):
    proxy = rpc(supervisord)
    assert proxy.supervisor.getState()["statename"] == "RUNNING"
    [sleeper] = programs(proxy)
    assert (sleeper.name, sleeper.state) == ("sleeper", "RUNNING") and sleeper.pid > 0
    assert proxy.supervisor.stopProcess("sleeper") is True  # waits for the stop, on the same kept-alive connection
    assert proxy.supervisor.getProcessInfo("sleeper")["statename"] == "STOPPED"
    with pytest.raises(xmlrpc.client.Fault, match="BAD_NAME"):
        proxy.supervisor.startProcess("nobody")
    assert proxy.supervisor.startProcess("sleeper") is True


def test_a_supervisord_that_stops_answering_costs_the_caller_its_timeout(tmp_path, monkeypatch):
    monkeypatch.delenv("SUPERVISOR_SERVER_URL", raising=False)
    path = str(tmp_path / "mute.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)  # accepts (the kernel does) and never answers, like a hung supervisord
    outcome: list[object] = []

    def call() -> None:
        t0 = time.monotonic()
        try:
            rpc(path, timeout_s=0.5).supervisor.getState()
        except OSError as exc:
            outcome.append((type(exc), time.monotonic() - t0))

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(10)
    server.close()
    assert not caller.is_alive(), "the call to a mute supervisord never gave up"
    [(kind, took)] = outcome
    assert issubclass(kind, TimeoutError) and took < 3


def test_talking_to_supervisord_does_not_load_supervisors_server():
    """The sidecar imports this for its whole life; supervisor's package would add its HTTP server."""
    code = "import sys, services.common.supervisor; print(sorted(m for m in sys.modules if m.startswith('supervisor')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
