"""healthcheck/: the sidecar's verdict from supervisord's view plus probes, and `status`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pytest

from healthcheck.__main__ import STALE_AFTER_S, status
from healthcheck.sidecar import Sidecar
from services.common.probes import Probe

START = 1_000_000.0


def proc(name: str, statename: str = "RUNNING", start: float = START, now: float = START,
         description: str = "") -> dict:
    """One entry shaped like supervisord's getAllProcessInfo()."""
    running = statename == "RUNNING"
    return {
        "name": name,
        "group": name,
        "statename": statename,
        "state": {"RUNNING": 20, "FATAL": 200, "BACKOFF": 30, "STARTING": 10}.get(statename, 100),
        "pid": 4242 if running else 0,
        "start": int(start),
        "now": int(now),
        "description": description or (f"pid 4242, uptime 0:00:{int(now - start):02d}" if running else ""),
    }


class FakeSupervisor:
    def __init__(self, infos: list[dict]) -> None:
        self.infos = infos

    def getAllProcessInfo(self) -> list[dict]:  # noqa: N802 - supervisord's name
        if isinstance(self.infos, Exception):
            raise self.infos
        return self.infos


class FakeRpc:
    def __init__(self, infos) -> None:
        self.supervisor = FakeSupervisor(infos)


@dataclass
class ScriptedProbe(Probe):
    """Answers from a script, one entry per call; the last entry repeats."""

    script: list[bool] = field(default_factory=lambda: [True])
    calls: int = 0

    def check(self) -> tuple[bool, str]:
        ok = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        return ok, "answers" if ok else f"no answer #{self.calls}"


@pytest.fixture
def verdict_path(tmp_path):
    return tmp_path / "health.json"


def _sidecar(infos, probes, verdict_path, clock) -> Sidecar:
    return Sidecar(FakeRpc(infos), probes, verdict_path, clock=clock)


def test_program_not_running_makes_verdict_unhealthy_naming_it(verdict_path, clock):
    infos = [
        proc("mongodb"),
        proc("bot", "FATAL", description="Exited too quickly (process log may have details)"),
        proc("healthcheck", "STARTING"),  # the sidecar does not judge itself
    ]

    verdict = _sidecar(infos, [], verdict_path, clock).tick()

    assert verdict["status"] == "unhealthy"
    assert verdict["reasons"] == ["bot: FATAL Exited too quickly (process log may have details)"]


def test_probe_failures_below_threshold_stay_healthy_and_at_threshold_turn_unhealthy(verdict_path, clock):
    clock.advance(60)  # well past the start grace
    probe = ScriptedProbe("api", period_s=2.0, failure_threshold=3, script=[False, False, False, True])
    sidecar = _sidecar([proc("api")], [probe], verdict_path, clock)

    statuses = []
    for _ in range(4):
        statuses.append(sidecar.tick()["status"])
        clock.advance(probe.period_s)
    assert statuses == ["healthy", "healthy", "unhealthy", "healthy"]
    assert probe.calls == 4


def test_unhealthy_probe_verdict_names_the_program_and_failure_count(verdict_path, clock):
    clock.advance(60)
    probe = ScriptedProbe("web", period_s=1.0, failure_threshold=2, script=[False])
    sidecar = _sidecar([proc("web")], [probe], verdict_path, clock)

    sidecar.tick()
    clock.advance(1.0)
    verdict = sidecar.tick()

    assert verdict["status"] == "unhealthy"
    assert verdict["reasons"] == ["web: probe failed 2 times: no answer #2"]


def test_probe_runs_once_per_period_not_once_per_tick(verdict_path, clock):
    clock.advance(60)
    probe = ScriptedProbe("api", period_s=5.0)
    sidecar = _sidecar([proc("api")], [probe], verdict_path, clock)

    for _ in range(10):  # ten one-second ticks
        sidecar.tick()
        clock.advance(1.0)

    assert probe.calls == 2


def test_start_grace_is_honoured_before_the_first_probe(verdict_path, clock):
    probe = ScriptedProbe("bot", start_grace_s=5.0, period_s=1.0, script=[False])
    sidecar = _sidecar([proc("bot", start=clock.now)], [probe], verdict_path, clock)

    for _ in range(5):  # t = start .. start+4
        assert sidecar.tick()["status"] == "healthy"
        clock.advance(1.0)
    assert probe.calls == 0

    clock.advance(0.5)  # start + 5.5: grace over
    sidecar.tick()
    assert probe.calls == 1


def test_probe_of_a_program_that_is_not_running_is_not_called(verdict_path, clock):
    clock.advance(60)
    probe = ScriptedProbe("bot", script=[True])

    verdict = _sidecar([proc("bot", "BACKOFF")], [probe], verdict_path, clock).tick()

    assert probe.calls == 0
    assert verdict["status"] == "unhealthy"


def test_unreachable_supervisord_is_unhealthy(verdict_path, clock):
    verdict = _sidecar(FileNotFoundError(2, "No such file or directory"), [], verdict_path, clock).tick()

    assert verdict["status"] == "unhealthy"
    assert verdict["reasons"][0].startswith("supervisord: ")
    assert json.loads(verdict_path.read_text()) == verdict


def test_verdict_file_is_written_atomically_as_json(verdict_path, clock):
    sidecar = _sidecar([proc("api", "EXITED")], [], verdict_path, clock)

    verdict = sidecar.tick()

    assert json.loads(verdict_path.read_text()) == verdict
    assert sorted(p.name for p in verdict_path.parent.iterdir()) == ["health.json"]  # no temp file left


# --- python -m healthcheck status ----------------------------------------------------------------

def _write(tmp_path, **verdict) -> None:
    (tmp_path / "health.json").write_text(json.dumps(verdict))


def test_status_is_0_for_a_fresh_healthy_verdict(tmp_path, capsys):
    _write(tmp_path, status="healthy", reasons=[], time=time.time())

    assert status(str(tmp_path)) == 0
    assert capsys.readouterr().out.strip() == "healthy"


@pytest.mark.parametrize(
    "case",
    ["missing", "stale", "unhealthy", "corrupt"],
)
def test_status_is_1_when_verdict_is_not_fresh_and_healthy(tmp_path, capsys, case):
    if case == "stale":
        _write(tmp_path, status="healthy", reasons=[], time=time.time() - STALE_AFTER_S - 5)
    elif case == "unhealthy":
        _write(tmp_path, status="unhealthy", reasons=["bot: FATAL"], time=time.time())
    elif case == "corrupt":
        (tmp_path / "health.json").write_text("{not json")

    assert status(str(tmp_path)) == 1
    out = capsys.readouterr().out
    assert out.startswith("unhealthy")
    if case == "unhealthy":
        assert "- bot: FATAL" in out


def test_http_probe_reports_a_non_http_answer_as_failure_instead_of_raising():
    import socket
    import threading

    from services.common.probes import HttpProbe

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer_garbage():
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"garbage\r\n\r\n")

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    try:
        ok, detail = HttpProbe("api", url=f"http://127.0.0.1:{port}/health", timeout_s=2).check()
    finally:
        thread.join(5)
        server.close()

    assert ok is False
    assert detail
