"""healthcheck/wakeup.py in a real supervisord (with the guardian's rpcinterface, as botstack's
supervisord.conf has it): a killed program is started again at once, not a second later; the
programs start at once; a SIGTERM stops it at once; a reload keeps all that and never spins.

Nothing here asks supervisord over its socket while it measures: a request wakes its loop too,
and would hide the wait this removes. Its children are read from /proc instead."""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.unit.conftest import real_supervisord, wait_until

GUARDIAN = """
[rpcinterface:guardian]
supervisor.rpcinterface_factory = healthcheck.guardian:make_guardian
"""


@pytest.fixture
def supervisord(tmp_path):
    """With the guardian's plugin, as botstack's supervisord.conf has it."""
    with real_supervisord(tmp_path, GUARDIAN) as proc:
        yield proc, tmp_path / "supervisord.log"


def children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def logged_at(log: Path, pattern: str) -> list[float]:
    """When supervisord logged lines matching `pattern` (its own millisecond timestamps)."""
    stamps = re.findall(r"^(\S+ \S+) \w+ " + pattern, log.read_text(), re.M)
    return [datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f").timestamp() for s in stamps]


def restart_after_kill(proc) -> float:
    [old] = wait_until(lambda: children(proc.pid), 10, what="the program running")
    t0 = time.monotonic()
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: [c for c in children(proc.pid) if c != old], 10, interval_s=0.002, what="a new program")
    return time.monotonic() - t0


def test_the_programs_start_at_once_and_a_killed_one_again_at_once(supervisord):
    proc, log = supervisord
    wait_until(lambda: children(proc.pid), 10, what="the program started")
    [started], [spawned] = logged_at(log, "supervisord started with pid"), logged_at(log, "spawned:")
    restarts = []
    for pause in (0.2, 0.5, 0.9, 0.3, 0.7):  # wherever supervisord is in its second-long wait
        time.sleep(pause)
        restarts.append(restart_after_kill(proc))
    assert spawned - started < 0.3, f"the first start waited {spawned - started:.2f} s"
    assert max(restarts) < 0.4, f"restarted after {[round(r, 2) for r in restarts]} s (it was 1.0 s each)"


def test_a_sigterm_stops_it_at_once(supervisord):
    proc, _ = supervisord
    wait_until(lambda: children(proc.pid), 10, what="the program started")
    time.sleep(0.4)
    t0 = time.monotonic()
    proc.terminate()
    proc.wait(10)
    assert time.monotonic() - t0 < 0.6, "supervisord began its shutdown a second late (2.0 s in all, measured)"


def test_a_reload_keeps_it_and_never_spins(supervisord):
    proc, log = supervisord
    wait_until(lambda: children(proc.pid), 10, what="the program started")
    os.kill(proc.pid, signal.SIGHUP)  # supervisorctl reload: supervisord closes the descriptors it did not open
    wait_until(lambda: len(logged_at(log, "spawned:")) == 2 and children(proc.pid), 10, what="started again")

    def cpu_s() -> float:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    before = cpu_s()
    time.sleep(2)
    assert cpu_s() - before < 0.2, "supervisord's loop spins"
    assert restart_after_kill(proc) < 0.4
