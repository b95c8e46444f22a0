"""healthcheck/: the healing sidecar, driven one tick at a time against a fake supervisord.

In the style of superlance's tests: the sidecar gets a `FakeSupervisord` that plays
supervisord's XML-RPC `supervisor` namespace (with a small state machine and a record of
every call), scripted probes, a clock that only moves when told and a sleep that moves it.
Nothing inside the Sidecar is mocked; what it does is read off the fake's call record.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import threading
import time
import xmlrpc.client
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from pymongo.errors import ServerSelectionTimeoutError

from healthcheck.__main__ import status
from healthcheck.alerts import Alerts
from healthcheck.events import Event, EventLog
from healthcheck.policy import HealPolicy
from healthcheck.sidecar import Sidecar
from services.common.probes import Probe
from services.common.verdict import STALE_AFTER_S
from tests.unit.conftest import wait_until

START = 1_000_000.0  # the conftest clock's epoch: every program below was started then
PROGRAMS = ("mongodb", "api", "web", "bot", "healthcheck")

# supervisor.xmlrpc.Faults and supervisor.states, spelled out as supervisord answers them.
SHUTDOWN_STATE, BAD_NAME, ALREADY_STARTED, NOT_RUNNING = 6, 10, 60, 70
PROCESS_STATE_CODES = {"STOPPED": 0, "STARTING": 10, "RUNNING": 20, "BACKOFF": 30, "STOPPING": 40,
                       "EXITED": 100, "FATAL": 200, "UNKNOWN": 1000}
SUPERVISOR_STATE_CODES = {"FATAL": 2, "RUNNING": 1, "RESTARTING": 0, "SHUTDOWN": -1}
RUNNING_STATES = ("RUNNING", "BACKOFF", "STARTING")  # startProcess refuses these
SIGNALLABLE_STATES = ("RUNNING", "STARTING", "STOPPING")  # signalProcess accepts only these
READ_ONLY = ("getState", "getAllProcessInfo", "getProcessInfo")


# --- the fake supervisord -------------------------------------------------------------------------

@dataclass
class Call:
    t: float
    method: str
    args: tuple


@dataclass
class Program:
    name: str
    statename: str = "RUNNING"
    pid: int = 0
    start: int = 0
    stop: int = 0
    description: str = ""
    exit_at: float | None = None  # a TERM being honoured: the process exits at this time
    stopped_at: float | None = None  # a stopProcess being honoured: STOPPED at this time
    restart_in: int | None = None  # RPC calls during which it still shows EXITED before autorestart


class FakeSupervisord:
    """supervisord's `supervisor` namespace with a little state machine.

    - signalProcess(name, "KILL") makes the program exit; like supervisord's autorestart it
      comes back with a new pid and a new start time. `reap_window` (default 0) is how many
      further RPC calls still see it EXITED (pid 0) first: real supervisord reaps a child at
      the end of one loop pass and autorestarts it at the end of the next, so one request can
      land in between;
    - signalProcess(name, "TERM") follows `on_term[name]`: "exit" (default), "ignore" (a hung
      process) or a number of seconds after which the process exits;
    - stopProcess(name, wait) makes it STOPPING for `stop_takes[name]` seconds (default 0),
      then STOPPED, as supervisord's stop does (its stop signal, its stopwaitsecs);
    - startProcess on a program that is not running makes it RUNNING, or FATAL again when
      `start_outcomes[name]` says so (one entry per attempt, the last repeats);
    - in SHUTDOWN/RESTARTING every call faults with SHUTDOWN_STATE, as supervisord 4 does
      (getState included); `answers_in_shutdown=True` makes the read-only calls answer instead;
    - `unreachable` (an exception) is raised by every call; `broken[method]` by one method.
    Every call is recorded in `calls`, with the fake clock's time.
    """

    def __init__(self, clock, names=PROGRAMS, started: float = START) -> None:
        self.clock = clock
        self.mood = "RUNNING"
        self.answers_in_shutdown = False
        self.unreachable: Exception | None = None
        self.broken: dict[str, Exception] = {}
        self.reap_window = 0
        self.on_term: dict[str, object] = {}
        self.stop_takes: dict[str, float] = {}
        self.start_outcomes: dict[str, list[str]] = {}
        self.calls: list[Call] = []
        self._pids = itertools.count(4000)
        self.programs = {n: Program(n) for n in names}
        for p in self.programs.values():
            self._spawn(p, started)

    # .. the XML-RPC methods ..........................................................
    def getState(self) -> dict:  # noqa: N802 - supervisord's names
        self._call("getState")
        return {"statecode": SUPERVISOR_STATE_CODES[self.mood], "statename": self.mood}

    def getAllProcessInfo(self) -> list[dict]:  # noqa: N802
        self._call("getAllProcessInfo")
        return [self._info(p) for _, p in sorted(self.programs.items())]

    def getProcessInfo(self, name: str) -> dict:  # noqa: N802
        return self._info(self._program(self._call("getProcessInfo", name)))

    def signalProcess(self, name: str, signal: str) -> bool:  # noqa: N802
        p = self._program(self._call("signalProcess", name, signal))
        if p.statename not in SIGNALLABLE_STATES:
            raise xmlrpc.client.Fault(NOT_RUNNING, f"NOT_RUNNING: {name}")
        if signal == "KILL":
            self._exit(p)
        elif signal == "TERM":
            behaviour = self.on_term.get(name, "exit")
            if behaviour == "exit":
                self._exit(p)
            elif behaviour != "ignore":
                p.exit_at = self.clock.monotonic() + float(behaviour)
        return True

    def stopProcess(self, name: str, wait: bool = True) -> bool:  # noqa: N802
        p = self._program(self._call("stopProcess", name, wait))
        if p.statename not in SIGNALLABLE_STATES:
            raise xmlrpc.client.Fault(NOT_RUNNING, f"NOT_RUNNING: {name}")
        p.statename, p.stopped_at = "STOPPING", self.clock.monotonic() + self.stop_takes.get(name, 0.0)
        self._transition()
        return True

    def startProcess(self, name: str, wait: bool = True) -> bool:  # noqa: N802
        p = self._program(self._call("startProcess", name, wait))
        if p.statename in RUNNING_STATES:
            raise xmlrpc.client.Fault(ALREADY_STARTED, f"ALREADY_STARTED: {name}")
        outcomes = self.start_outcomes.get(name) or ["RUNNING"]
        outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        if outcome == "RUNNING":
            self._spawn(p)
        else:
            self._fatal(p)
        return True

    def shutdown(self) -> bool:
        self._call("shutdown")
        self.mood = "SHUTDOWN"
        return True

    # .. what happens to programs without the sidecar ...................................
    def crash(self, name: str) -> None:
        """The program dies on its own; supervisord's autorestart brings it back."""
        self._exit(self.programs[name])

    def go_fatal(self, name: str) -> None:
        """The program crash-looped through startretries: supervisord gave up on it."""
        self._fatal(self.programs[name])

    def operator_stop(self, name: str) -> None:
        """`supervisorctl stop name`."""
        p = self.programs[name]
        p.statename, p.pid, p.stop, p.description = "STOPPED", 0, int(self.clock()), "Stopped"

    # .. what the tests read ..........................................................
    def pid(self, name: str) -> int:
        return self.programs[name].pid

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def actions(self) -> list[tuple]:
        """Every call that changes something, as (method, *args) without start's wait flag."""
        return [(c.method, *c.args[:2]) if c.method == "signalProcess" else (c.method, *c.args[:1])
                for c in self.calls if c.method not in READ_ONLY]

    def named(self) -> set[str]:
        """Every program some call was about."""
        return {c.args[0] for c in self.calls if c.args}

    # .. internals ....................................................................
    def _call(self, method: str, *args) -> str | None:
        self.calls.append(Call(self.clock.monotonic(), method, args))
        if self.unreachable is not None:
            raise self.unreachable
        if method in self.broken:
            raise self.broken[method]
        if self.mood in ("SHUTDOWN", "RESTARTING") and not (self.answers_in_shutdown and method in READ_ONLY):
            raise xmlrpc.client.Fault(SHUTDOWN_STATE, "SHUTDOWN_STATE")
        self._transition()
        return args[0] if args else None

    def _transition(self) -> None:
        for p in self.programs.values():
            if p.stopped_at is not None and self.clock.monotonic() >= p.stopped_at:
                p.statename, p.pid, p.stop, p.stopped_at, p.description = "STOPPED", 0, int(self.clock()), None, "Stopped"
            elif p.exit_at is not None and self.clock.monotonic() >= p.exit_at:
                self._exit(p)
            elif p.restart_in is not None:
                if p.restart_in == 0:
                    self._spawn(p)
                else:
                    p.restart_in -= 1

    def _program(self, name: str) -> Program:
        if name not in self.programs:
            raise xmlrpc.client.Fault(BAD_NAME, f"BAD_NAME: {name}")
        return self.programs[name]

    def _exit(self, p: Program) -> None:
        p.statename, p.pid, p.stop, p.exit_at = "EXITED", 0, int(self.clock()), None
        p.description = "terminated by SIGKILL"
        p.restart_in = self.reap_window
        if self.reap_window == 0:
            self._spawn(p)

    def _spawn(self, p: Program, started: float | None = None) -> None:
        p.statename, p.pid, p.exit_at, p.restart_in = "RUNNING", next(self._pids), None, None
        p.start = int(self.clock() if started is None else started)
        p.description = f"pid {p.pid}"

    def _fatal(self, p: Program) -> None:
        p.statename, p.pid, p.exit_at, p.restart_in = "FATAL", 0, None, None
        p.stop = int(self.clock())
        p.description = "Exited too quickly (process log may have details)"

    def _info(self, p: Program) -> dict:
        """Shaped like supervisord's getProcessInfo()."""
        return {"name": p.name, "group": p.name, "statename": p.statename,
                "state": PROCESS_STATE_CODES[p.statename], "pid": p.pid, "start": p.start,
                "stop": p.stop, "now": int(self.clock()), "description": p.description,
                "exitstatus": 0, "spawnerr": "", "logfile": "", "stdout_logfile": "", "stderr_logfile": ""}


@dataclass
class ScriptedProbe(Probe):
    """Answers from a script, one entry per call (the last repeats): True/False, (ok, detail), or an
    exception to raise."""

    script: list = field(default_factory=lambda: [True])
    calls: int = 0

    def check(self) -> tuple[bool, str]:
        answer = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, tuple):
            return answer
        return answer, "answers" if answer else f"no answer #{self.calls}"


def live(program: str, script=(True,), **kw) -> ScriptedProbe:
    kw = {"period_s": 1.0, "failure_threshold": 3, "start_grace_s": 5.0, **kw}
    return ScriptedProbe(program, script=list(script), **kw)


class FakeCollection:
    """A pymongo collection's insert_many, which fails while `down` is set."""

    def __init__(self) -> None:
        self.docs: list[dict] = []
        self.down: Exception | None = None
        self.during_insert = None  # called while insert_many runs, before it returns
        self.attempts = 0

    def insert_many(self, docs, ordered=True):
        self.attempts += 1
        if self.during_insert is not None:
            self.during_insert()
        if self.down is not None:
            raise self.down
        self.docs.extend(docs)


# --- fixtures and helpers -------------------------------------------------------------------------

@pytest.fixture
def sup(clock) -> FakeSupervisord:
    return FakeSupervisord(clock)


@pytest.fixture
def make(sup, clock, tmp_path):
    """A Sidecar wired to the fake supervisord, the fake clock and a sleep that advances it."""

    def build(probes=(), readiness=None, events=None, tick_s=0.5, alerts=None, **options) -> Sidecar:
        extra = {k: options.pop(k) for k in ("config_problems", "not_run", "heartbeat", "bot_status", "oom_kills",
                                            "resident_mib", "supervisord_life")
                 if k in options}
        return Sidecar(
            SimpleNamespace(supervisor=sup), list(probes), tmp_path / "health.json",
            readiness=readiness, policy=HealPolicy(**options), events=events or EventLog(),
            alerts=alerts or Alerts(None), tick_s=tick_s, clock=clock, monotonic=clock.monotonic,
            sleep=clock.advance, **extra,
        )

    return build


def run_for(sidecar: Sidecar, seconds: float) -> dict:
    """Let the sidecar's own loop run for `seconds` of fake time; the last verdict."""
    until = sidecar.monotonic() + seconds
    sidecar.runforever(lambda: sidecar.monotonic() >= until)
    return json.loads(sidecar.verdict_path.read_text())


def healthy_probes(**hung) -> list[ScriptedProbe]:
    return [hung.get(n) or live(n) for n in ("mongodb", "api", "web", "bot")]


# --- hangs: TERM, CONT, then KILL after a grace ---------------------------------------------------

def test_hung_program_is_restarted_term_and_cont_then_kill_after_grace_only_it_is_touched(sup, make, clock):
    clock.advance(60)
    sup.on_term["api"] = "ignore"  # hung hard: does not honour SIGTERM
    api = live("api", [False, False, False, True])
    sidecar = make(healthy_probes(api=api), hang_term_grace_s=2.0)
    old_pid = sup.pid("api")

    for _ in range(3):  # the third consecutive failure reaches failure_threshold
        sidecar.tick()
        clock.advance(1.0)

    assert sup.actions() == [("signalProcess", "api", "TERM"), ("signalProcess", "api", "CONT"),
                             ("signalProcess", "api", "KILL")]
    term, kill = sup.calls_to("signalProcess")[0], sup.calls_to("signalProcess")[2]
    assert 2.0 - 1e-6 <= kill.t - term.t <= 2.2  # KILL only once the grace ran out, on the fake clock
    assert sup.named() == {"api"}  # mongodb, web and bot got no call at all
    assert sup.pid("api") != old_pid
    event = sidecar.events.last["api"]
    assert (event.cause, event.old_pid, event.new_pid) == ("hang", old_pid, sup.pid("api"))
    assert event.reason == "liveness probe failed 3 times: no answer #3"
    assert dict(sidecar.events.restarts) == {("api", "hang"): 1}


def test_a_clock_stepped_back_stalls_neither_probes_nor_heals(sup, make, clock):
    """NTP steps the wall clock back an hour, then the api hangs: the sidecar probes on and
    heals it within seconds. Its next probe was due at a time the clock now reaches an hour
    later, and a heal's wait for the program to exit ended then too."""
    clock.advance(60)
    sup.on_term["api"] = "ignore"
    api = live("api", [True, True] + [False] * 50)
    sidecar = make(healthy_probes(api=api), hang_term_grace_s=2.0)
    run_for(sidecar, 2)
    clock.step(-3600)
    run_for(sidecar, 10)
    assert ("signalProcess", "api", "KILL") in sup.actions(), sup.actions()
    assert api.calls >= 5, "the probes stopped"


def test_a_clock_stepped_forward_while_a_program_starts_keeps_its_start_grace(sup, make, clock):
    """The api was started by supervisord a second ago and does not answer yet; NTP sets the
    clock an hour forward. It keeps the rest of its start grace (30 s from its start), and only
    a program still not answering after that is healed. Aged on the wall clock, the grace was
    over at once and the api restarted mid-start, 3 probes after the step."""
    sup.on_term["api"] = "ignore"
    api = live("api", [False], start_grace_s=30.0)
    sidecar = make(healthy_probes(api=api))
    run_for(sidecar, 2)
    clock.step(3600)
    run_for(sidecar, 25)
    assert sup.actions() == [], "restarted within its start grace"
    run_for(sidecar, 10)
    assert [a[2] for a in sup.actions()] == ["TERM", "CONT", "KILL"], "its start grace never ended"


def test_hung_program_that_honours_term_within_the_grace_is_not_killed(sup, make, clock):
    clock.advance(60)
    sup.on_term["web"] = 0.5  # exits half a second after SIGTERM
    sidecar = make(healthy_probes(web=live("web", [False, True], failure_threshold=1)), hang_term_grace_s=2.0)
    old_pid = sup.pid("web")

    sidecar.tick()

    assert sup.actions() == [("signalProcess", "web", "TERM"), ("signalProcess", "web", "CONT")]
    event = sidecar.events.last["web"]
    assert (event.cause, event.old_pid, event.new_pid) == ("hang", old_pid, sup.pid("web"))
    assert sup.pid("web") != old_pid


def test_restarted_program_is_not_recorded_again_as_a_crash_and_is_left_alone_in_its_start_grace(sup, make, clock):
    clock.advance(60)
    sup.on_term["api"] = "ignore"
    api = live("api", [False], failure_threshold=1, start_grace_s=5.0)  # never answers
    sidecar = make(healthy_probes(api=api))

    sidecar.tick()  # restart #1
    run_for(sidecar, 4.5)  # the new api is inside its start grace and never answered: not touched

    assert [a[2] for a in sup.actions()] == ["TERM", "CONT", "KILL"]
    assert dict(sidecar.events.restarts) == {("api", "hang"): 1}


@pytest.mark.parametrize("program, term", [
    ("bot", "honour"),  # exits on SIGTERM: the CONT that follows finds it EXITED
    ("mongodb", "ignore"),  # needs SIGKILL: the next request still sees it EXITED
], ids=["reaped-before-cont", "reaped-before-autorestart"])
def test_hang_is_recorded_as_hang_when_the_exit_is_seen_before_the_restart(sup, make, clock, program, term):
    clock.advance(60)
    if term == "ignore":
        sup.on_term[program] = "ignore"
    sup.reap_window = 1
    sidecar = make(healthy_probes(**{program: live(program, [False, True], failure_threshold=1)}))
    old_pid = sup.pid(program)

    sidecar.tick()
    clock.advance(1.0)
    sidecar.tick()

    assert [(e.cause, e.old_pid) for e in sidecar.events.pending] == [("hang", old_pid)]


def test_liveness_failures_below_the_threshold_do_nothing(sup, make, clock):
    clock.advance(60)
    api = live("api", [False, False, True, False, False, True], failure_threshold=3)
    sidecar = make(healthy_probes(api=api))

    statuses = []
    for _ in range(6):
        statuses.append(sidecar.tick()["status"])
        clock.advance(1.0)

    assert api.calls == 6
    assert statuses == ["healthy"] * 6
    assert sup.actions() == []


def test_liveness_failures_at_the_threshold_make_the_verdict_unhealthy_when_not_acting(sup, make, clock):
    clock.advance(60)
    sup.mood, sup.answers_in_shutdown = "SHUTDOWN", True
    sidecar = make(healthy_probes(web=live("web", [False], failure_threshold=2)))

    sidecar.tick()
    clock.advance(1.0)
    verdict = sidecar.tick()

    assert verdict["status"] == "unhealthy"
    assert verdict["reasons"] == ["web: not answering (no answer #2)"]


def test_failures_in_the_start_grace_do_not_count_until_the_program_first_answers(sup, make, clock):
    bot = live("bot", [False], period_s=1.0, failure_threshold=1, start_grace_s=5.0)
    sidecar = make(healthy_probes(bot=bot))  # every program started just now

    for _ in range(5):  # t = start .. start+4: never answered, so still starting
        assert sidecar.tick()["status"] == "healthy"
        clock.advance(1.0)
    assert sup.actions() == []

    sidecar.tick()  # start+5: the grace is over, and the failure counts
    assert [e.cause for e in sidecar.events.pending] == ["hang"]


def test_a_starting_program_is_shown_as_probed_but_its_failures_are_not_reported(sup, make, clock, caplog):
    bot = live("bot", [False, False, True], period_s=1.0, start_grace_s=5.0)
    sidecar = make(healthy_probes(bot=bot))

    with caplog.at_level("INFO", logger="botstack.healthcheck"):
        view = sidecar.tick()["programs"]["bot"]
        assert (view["probe_ok"], view["probe_detail"]) == (None, "no answer #1")
        assert view["probe_latency_s"] is not None
        run_for(sidecar, 3.0)
    assert [r.getMessage() for r in caplog.records if "bot probe" in r.getMessage()] == ["bot probe passes: answers"]


def test_a_program_that_answered_once_is_healed_inside_its_start_grace(sup, make, clock):
    mongodb = live("mongodb", [True, True, False], period_s=1.0, failure_threshold=2, start_grace_s=30.0)
    sidecar = make(healthy_probes(mongodb=mongodb))  # started just now; answers, then hangs
    old_pid = sup.pid("mongodb")

    run_for(sidecar, 5.0)  # well inside the 30 s grace

    assert [(e.program, e.cause, e.old_pid) for e in sidecar.events.pending] == [("mongodb", "hang", old_pid)]


def test_probe_runs_once_per_period_not_once_per_tick(sup, make, clock):
    clock.advance(60)
    api = live("api", period_s=5.0)
    sidecar = make([api])

    run_for(sidecar, 10.0)  # twenty half-second ticks

    assert api.calls == 2


def test_probe_of_a_program_that_is_not_running_is_not_called(sup, make, clock):
    clock.advance(60)
    sup.go_fatal("bot")
    bot = live("bot")

    make([bot]).tick()

    assert bot.calls == 0


def test_probe_exception_counts_as_a_failure_and_does_not_crash_the_tick(sup, make, clock):
    clock.advance(60)
    api = live("api", [RuntimeError("probe bug"), ConnectionResetError(104, "reset"), True], failure_threshold=3)
    sidecar = make([api])

    first = sidecar.tick()
    clock.advance(1.0)
    second = sidecar.tick()

    assert first["status"] == second["status"] == "healthy"  # two failures, threshold three
    assert sidecar.watched["api"].failures == 2
    assert second["programs"]["api"]["probe_ok"] is False
    assert second["programs"]["api"]["probe_detail"] == "ConnectionResetError: [Errno 104] reset"

    sup.on_term["api"] = "exit"
    api.script = [RuntimeError("still broken")]
    clock.advance(1.0)
    sidecar.tick()  # the third failure in a row, an exception again: restarted
    assert sidecar.events.last["api"].cause == "hang"


def test_probe_that_does_not_answer_within_its_timeout_counts_as_a_failure(sup, make, clock):
    clock.advance(60)
    release = threading.Event()

    class Stuck(Probe):
        def check(self) -> tuple[bool, str]:
            release.wait(10)
            return True, "too late"

    sidecar = make(healthy_probes(web=Stuck("web", timeout_s=0.05, failure_threshold=3)))
    try:
        t0 = time.monotonic()
        verdict = sidecar.tick()
        assert time.monotonic() - t0 < 1.0  # bounded by the probe's timeout, not by the probe
    finally:
        release.set()

    assert verdict["programs"]["web"]["probe_ok"] is False
    assert verdict["programs"]["web"]["probe_detail"] == "no answer within 0.05 s"
    assert sidecar.watched["web"].failures == 1
    assert sup.actions() == []


# --- readiness and operators -----------------------------------------------------------------------

def test_readiness_failure_makes_the_verdict_degraded_and_touches_nothing(sup, make, clock):
    clock.advance(60)
    ready = ScriptedProbe("api", period_s=2.0, failure_threshold=1, script=[False])  # /ready: MongoDB down
    sidecar = make(healthy_probes(), readiness=ready)

    verdict = run_for(sidecar, 30.0)

    assert verdict["status"] == "degraded"
    assert verdict["reasons"] == [f"api: not ready (no answer #{ready.calls})"]
    assert ready.calls == 15  # once per readiness period
    assert sup.actions() == []


def test_readiness_failure_while_mongodb_is_stopped_restarts_nothing(sup, make, clock):
    clock.advance(60)
    sup.operator_stop("mongodb")
    ready = ScriptedProbe("api", period_s=2.0, script=[ServerSelectionTimeoutError("no mongod")])
    sidecar = make(healthy_probes(), readiness=ready)

    verdict = run_for(sidecar, 30.0)

    assert verdict["status"] == "degraded"
    assert verdict["reasons"] == ["mongodb: stopped by an operator",
                                  "api: not ready (ServerSelectionTimeoutError: no mongod)"]
    assert sup.actions() == []


def test_readiness_lost_for_long_is_one_alert_and_its_return_another(sup, make, clock, caplog):
    clock.advance(60)
    refused = (False, "mongodb refuses writes: OperationFailure: database or disk is full (13)")
    ready = ScriptedProbe("api", period_s=2.0, failure_threshold=1, script=[True] * 3 + [refused] * 30 + [True])
    sent = Sent()
    sidecar = make(healthy_probes(), readiness=ready, alerts=Alerts(sent, group_s=300, clock=clock.monotonic))

    with caplog.at_level(logging.INFO, logger="botstack.healthcheck"):
        run_for(sidecar, 10.0)  # ready, then refused for 4 s: logged at once, too short to alert
        assert [r.getMessage() for r in caplog.records if "not ready" in r.getMessage()] == \
            [f"api not ready: {refused[1]}; nothing is restarted for it"]
        sidecar.alerts.drain(5)
        assert sent == []
        verdict = run_for(sidecar, 60.0)
    assert verdict["status"] == "healthy" and sup.actions() == []
    texts = wait_sent(sent, 2)
    assert len(texts) == 2, texts
    assert texts[0].startswith("botstack: api not ready for 16 s: mongodb refuses writes: OperationFailure: "
                               "database or disk is full (13). Nothing is restarted"), texts[0]
    assert texts[1] == "botstack: api is ready again after 60 s"
    assert any(r.getMessage() == "api ready again after 60 s" for r in caplog.records)


def test_not_ready_at_start_is_news_only_past_the_alert_time(sup, make, clock, caplog):
    clock.advance(60)
    ready = ScriptedProbe("api", period_s=2.0, failure_threshold=1, script=[False] * 4 + [True])  # MongoDB starting
    sent = Sent()
    sidecar = make(healthy_probes(), readiness=ready, alerts=Alerts(sent, group_s=300, clock=clock.monotonic))
    with caplog.at_level(logging.INFO, logger="botstack.healthcheck"):
        run_for(sidecar, 30.0)
    assert not [r for r in caplog.records if "ready" in r.getMessage()]
    sidecar.alerts.drain(5)
    assert sent == []

    never = ScriptedProbe("api", period_s=2.0, failure_threshold=1, script=[False])  # a wrong MONGODB_URI
    sidecar = make(healthy_probes(), readiness=never, alerts=Alerts(sent, group_s=300, clock=clock.monotonic))
    run_for(sidecar, 30.0)
    assert [t.split(":")[1] for t in wait_sent(sent, 1)] == [" api not ready for 16 s"]


def test_bot_api_out_of_reach_is_degraded_told_once_and_its_return_told(sup, make, clock, caplog):
    """The bot runs and beats while every getUpdates fails (DNS, a firewall, a proxy gone): no
    restart helps, so nothing is restarted; past 15 s the verdict is degraded naming the error
    and the admins are told once; its return is told too."""
    clock.advance(60)
    bot = {"role": "active", "api_failing_since": None, "api_error": ""}
    sent = Sent()
    sidecar = make(healthy_probes(), alerts=Alerts(sent, group_s=300, clock=clock.monotonic), bot_status=lambda: dict(bot))
    run_for(sidecar, 5.0)
    error = "getUpdates: NetworkError: httpx.ConnectError: [Errno -3] Temporary failure in name resolution"
    bot.update(api_failing_since=clock(), api_error=error)
    assert run_for(sidecar, 10.0)["status"] == "healthy", "a blip is not news"
    with caplog.at_level(logging.INFO, logger="botstack.healthcheck"):
        verdict = run_for(sidecar, 40.0)
    assert verdict["status"] == "degraded"
    assert verdict["reasons"] == [f"bot: the Bot API has failed for 50 s ({error})"], verdict["reasons"]
    assert [r.getMessage() for r in caplog.records if "Bot API" in r.getMessage()] == \
        [f"bot: the Bot API has failed for 15 s ({error}); updates wait until it answers, nothing is restarted for it"]
    bot.update(api_failing_since=None, api_error="")
    assert run_for(sidecar, 2.0)["status"] == "healthy"
    assert wait_sent(sent, 2) == [
        f"botstack: bot: the Bot API has failed for 15 s ({error}). Updates wait until it answers; nothing is "
        "restarted for it", "botstack: the Bot API answers the bot again after 50 s"]
    assert sup.actions() == []


def test_a_bot_api_that_fails_often_but_never_long_is_degraded_and_told(sup, make, clock):
    """A flaky proxy: two calls in three fail, and each call that works clears the bot's outage
    mark, so it never fails 15 s in a row. The share of failing passes over a minute says it."""
    clock.advance(60)
    error = "sendMessage: NetworkError: Bad Gateway"
    passes, flaky = [0], [True]

    def bot_status() -> dict:
        passes[0] += 1
        failing = flaky[0] and passes[0] % 3 != 0
        return {"role": "active", "api_failing_since": clock() - 1 if failing else None,
                "api_error": error if failing else ""}

    sent = Sent()
    sidecar = make(healthy_probes(), alerts=Alerts(sent, group_s=300, clock=clock.monotonic), bot_status=bot_status)
    assert run_for(sidecar, 20.0)["status"] == "healthy", "not judged on less than 30 s"
    verdict = run_for(sidecar, 20.0)
    assert verdict["status"] == "degraded"
    [reason] = verdict["reasons"]
    assert re.fullmatch(rf"bot: the Bot API failed at \d+ of the last \d+ checks, \d+ s \({error}\)", reason), reason
    flaky[0] = False
    assert run_for(sidecar, 30.0)["status"] == "healthy"
    assert run_for(sidecar, 30.0)["status"] == "healthy"
    told = wait_sent(sent, 2)
    assert len(told) == 2 and told[0].startswith("botstack: bot: the Bot API failed at ") and \
        told[0].endswith("Replies are late and tried again; nothing is restarted for it"), told
    assert told[1] == "botstack: the Bot API answers the bot steadily again"
    assert sup.actions() == []


def test_a_bot_api_whose_failures_fall_between_the_checks_is_told_flaky(sup, make, clock):
    """A flaky proxy under load: calls fail all the time, but one that works comes after each
    failure before the sidecar looks, so it never sees the bot's outage mark (two calls in three
    failing, CI: judged fine for 90 s). The bot's time of its last failed call, changed since
    the pass before, counts that pass as failing."""
    clock.advance(60)
    passes, flaky = [0], [True]

    def bot_status() -> dict:
        passes[0] += 1
        failed_at = 1_000_000.0 + (passes[0] if flaky[0] else 0)
        return {"role": "active", "api_failing_since": None, "api_error": "", "api_failed_at": failed_at}

    sent = Sent()
    sidecar = make(healthy_probes(), alerts=Alerts(sent, group_s=300, clock=clock.monotonic), bot_status=bot_status)
    assert run_for(sidecar, 20.0)["status"] == "healthy", "not judged on less than 30 s"
    verdict = run_for(sidecar, 20.0)
    assert verdict["status"] == "degraded", verdict
    [reason] = verdict["reasons"]
    assert re.fullmatch(r"bot: the Bot API failed at \d+ of the last \d+ checks, \d+ s \(no answer\)", reason), reason
    flaky[0] = False  # its last failure stays where it was: not a new one
    assert run_for(sidecar, 70.0)["status"] == "healthy"
    told = wait_sent(sent, 2)
    assert told[0].startswith("botstack: bot: the Bot API failed at ") and \
        told[1] == "botstack: the Bot API answers the bot steadily again", told
    assert sup.actions() == []


def test_readiness_is_not_asked_while_the_program_is_not_running(sup, make, clock):
    clock.advance(60)
    sup.go_fatal("api")
    ready = ScriptedProbe("api", period_s=2.0, script=[False])

    verdict = make(healthy_probes(), readiness=ready).tick()

    assert ready.calls == 0
    assert verdict["reasons"] == ["api: FATAL (crash loop), next start attempt in 10 s"]


def test_operator_stopped_program_is_degraded_and_not_started(sup, make, clock):
    clock.advance(60)
    sup.operator_stop("bot")
    sidecar = make(healthy_probes(), backoff_base_s=1.0, tick_s=2.0)

    verdict = run_for(sidecar, 600.0)

    assert verdict["status"] == "degraded"
    assert verdict["reasons"] == ["bot: stopped by an operator"]
    assert verdict["programs"]["bot"]["state"] == "STOPPED"
    assert sup.actions() == []


# --- FATAL: crash loops, started again with backoff ------------------------------------------------

def test_fatal_program_makes_the_verdict_unhealthy_naming_it(sup, make, clock):
    clock.advance(60)
    sup.go_fatal("bot")

    verdict = make(healthy_probes(), backoff_base_s=10.0).tick()

    assert verdict["status"] == "unhealthy"
    assert verdict["reasons"] == ["bot: FATAL (crash loop), next start attempt in 10 s"]
    assert "healthcheck" not in verdict["programs"]


def test_a_program_that_refused_to_start_is_fatal_for_the_reason_it_gave(sup, make, clock, tmp_path):
    """mongodb's start refuses a data folder it cannot write and leaves its line in the run
    folder (services/mongodb/run): the verdict and the admins' alert say why, not only FATAL."""
    clock.advance(60)
    sup.go_fatal("mongodb")
    said = ("mongodb: configuration error: /data/db: not writable by this user (uid 10001, gid 0; it is uid 0, "
            "gid 0, mode 755): on the host, give the folder mounted there to uid 10001 and group 0")
    (tmp_path / "mongodb.refused").write_text(said + "\n")
    sent = Sent()

    verdict = make(healthy_probes(), backoff_base_s=10.0, alerts=Alerts(sent, clock=clock.monotonic)).tick()

    assert verdict["reasons"] == [f"mongodb: FATAL (crash loop): {said.removeprefix('mongodb: ')}, "
                                  "next start attempt in 10 s"]
    assert said.removeprefix("mongodb: ") in wait_sent(sent, 1)[0]


def test_a_crash_looping_program_stays_unhealthy_while_an_attempt_starts(sup, make, clock):
    clock.advance(60)
    sup.go_fatal("web")
    sidecar = make(healthy_probes(), backoff_base_s=2.0)
    sidecar.tick()  # FATAL: an attempt in 2 s
    clock.advance(2.0)
    sidecar.tick()  # the attempt
    sup.programs["web"].statename = "STARTING"  # as supervisord shows it until startsecs, or its next exit

    verdict = sidecar.tick()

    assert verdict["status"] == "unhealthy"
    assert verdict["reasons"] == ["web: STARTING, start attempt 1 after a crash loop"]


def test_the_sidecar_does_not_judge_itself(sup, make, clock):
    clock.advance(60)
    sup.programs["healthcheck"].statename = "STARTING"  # as supervisord shows it in its first seconds

    verdict = make(healthy_probes()).tick()

    assert verdict["status"] == "healthy"
    assert "healthcheck" not in verdict["programs"]


def test_fatal_program_is_started_with_exponential_backoff_capped_at_backoff_max(sup, make, clock):
    clock.advance(60)
    sup.go_fatal("bot")
    sup.start_outcomes["bot"] = ["FATAL"]  # every attempt crash-loops again
    sidecar = make(healthy_probes(), backoff_base_s=10.0, backoff_max_s=60.0)
    seen_fatal = clock()

    run_for(sidecar, 260.0)

    starts = [c.t for c in sup.calls_to("startProcess")]
    assert all(c.args == ("bot", False) for c in sup.calls_to("startProcess"))
    gaps = [b - a for a, b in zip([seen_fatal, *starts], starts)]
    # base, 2×base, 4×base, then capped; each wait is counted from the tick that saw FATAL again
    expected = [10.0, 20.0, 40.0, 60.0, 60.0, 60.0]
    assert len(gaps) == len(expected)
    for gap, want in zip(gaps, expected):
        assert want <= gap <= want + sidecar.tick_s
    assert sup.named() == {"bot"}
    assert [e.cause for e in sidecar.events.pending] == ["fatal"] * len(expected)


def _bot_back_up_after_two_attempts(sup, make, clock, **policy) -> Sidecar:
    sup.go_fatal("bot")
    sup.start_outcomes["bot"] = ["FATAL", "RUNNING"]
    sidecar = make(healthy_probes(), backoff_base_s=10.0, backoff_max_s=300.0, **policy)
    run_for(sidecar, 35.0)  # attempts at +10 (FATAL again) and +30.5 (RUNNING)
    assert len(sup.calls_to("startProcess")) == 2
    assert sup.programs["bot"].statename == "RUNNING"
    return sidecar


def test_backoff_attempts_reset_after_the_program_stays_up_for_quiet_reset(sup, make, clock):
    clock.advance(60)
    sidecar = _bot_back_up_after_two_attempts(sup, make, clock, quiet_reset_s=100.0)
    run_for(sidecar, 100.0)  # up for quiet_reset_s

    sup.go_fatal("bot")
    seen_fatal = clock()
    run_for(sidecar, 50.0)

    third = sup.calls_to("startProcess")[2].t
    assert 10.0 <= third - seen_fatal <= 10.5  # back to backoff_base_s


def test_backoff_keeps_growing_when_the_program_falls_again_before_quiet_reset(sup, make, clock):
    clock.advance(60)
    sidecar = _bot_back_up_after_two_attempts(sup, make, clock, quiet_reset_s=100.0)
    run_for(sidecar, 50.0)  # up, but not for quiet_reset_s

    sup.go_fatal("bot")
    seen_fatal = clock()
    run_for(sidecar, 50.0)

    third = sup.calls_to("startProcess")[2].t
    assert 40.0 <= third - seen_fatal <= 40.5  # third attempt: 4×base


# --- crashes supervisord handled -------------------------------------------------------------------

def test_pid_change_the_sidecar_did_not_cause_is_recorded_as_crash_and_nothing_is_done(sup, make, clock):
    clock.advance(60)
    sidecar = make(healthy_probes())
    sidecar.tick()
    old_pid = sup.pid("web")

    sup.crash("web")  # supervisord's autorestart brings it back with a new pid
    clock.advance(1.0)
    verdict = sidecar.tick()

    assert [(e.program, e.cause, e.old_pid, e.new_pid) for e in sidecar.events.pending] == [
        ("web", "crash", old_pid, sup.pid("web"))]
    assert sup.actions() == []
    assert verdict["programs"]["web"]["restarts"] == {"crash": 1, "hang": 0, "fatal": 0, "memory": 0}


def test_a_crash_while_no_sidecar_watched_is_told_by_the_next_one(sup, make, clock):
    """The bot dies and supervisord restarts it while the sidecar is away (hung and killed by
    its watchdog, or crashed): the next sidecar compares with its predecessor's last verdict
    and records and tells the crash; a program that did not change is not news."""
    clock.advance(60)
    first = make(healthy_probes(), supervisord_life="1:4242")
    first.tick()
    old_pid = sup.pid("bot")
    sup.crash("bot")
    clock.advance(8.0)
    sent = Sent()
    second = make(healthy_probes(), supervisord_life="1:4242", alerts=Alerts(sent, group_s=300, clock=clock.monotonic))
    verdict = second.tick()
    assert [(e.program, e.cause, e.old_pid, e.new_pid) for e in second.events.pending] == [
        ("bot", "crash", old_pid, sup.pid("bot"))]
    assert wait_sent(sent, 1) == [f"botstack: bot died (exited unexpectedly (a signal, or a crash)) and was "
                                  f"restarted (pid {old_pid} -> {sup.pid('bot')})"]
    assert verdict["programs"]["bot"]["restarts"]["crash"] == 1 and sup.actions() == []


def test_a_verdict_of_another_supervisord_life_is_not_taken_for_crashes(sup, make, clock):
    """The run folder outlives `docker restart`: the programs of a new container life all have
    new pids, and none of them crashed."""
    clock.advance(60)
    make(healthy_probes(), supervisord_life="1:4242").tick()
    for name in ("mongodb", "api", "web", "bot"):
        sup.crash(name)
    second = make(healthy_probes(), supervisord_life="1:9999")
    second.tick()
    assert list(second.events.pending) == [] and sup.actions() == []


def test_a_program_the_kernel_killed_for_memory_is_said_so(sup, make, clock, monkeypatch):
    """supervisord sees a SIGKILL; the container's OOM-kill count says it was memory. A crash
    long after that count grew is a crash again."""
    monkeypatch.setattr("services.common.oom.limit_mib", lambda: 450)
    kills = [0]
    clock.advance(60)
    sent = Sent()
    sidecar = make(healthy_probes(), alerts=Alerts(sent, group_s=300, clock=clock.monotonic), oom_kills=lambda: kills[0])
    sidecar.tick()
    kills[0] = 1
    sup.crash("bot")
    clock.advance(1.0)
    sidecar.tick()
    clock.advance(60)
    sup.crash("web")
    sidecar.tick()
    assert [(e.program, e.reason) for e in sidecar.events.pending] == [
        ("bot", "killed by the kernel: out of memory (the container's limit is 450 MiB); supervisord restarted it"),
        ("web", "exited unexpectedly (a signal, or a crash); supervisord restarted it")]
    assert any("bot died (killed by the kernel: out of memory (the container's limit is 450 MiB))" in t
               for t in wait_sent(sent, 2))


# --- a memory ceiling: a graceful restart before the kernel's OOM kill -----------------------------

def leaking(sup, program: str, mib: list[float]):
    """resident_mib for the sidecar: `program`'s current pid holds mib[0], every other 100 MiB."""
    return lambda pid: mib[0] if pid == sup.pid(program) else 100.0


def test_a_program_above_its_memory_ceiling_is_stopped_gracefully_and_started_again(sup, make, clock):
    """Two passes above the ceiling: supervisord stops it (its stop signal and budget: replies
    finished, updates handed back) and the sidecar starts it once STOPPED. One restart for
    memory, no crash, the admins told; the other programs untouched."""
    clock.advance(60)
    sent, mib = Sent(), [120.0]
    sup.stop_takes["bot"] = 3.0
    sidecar = make(healthy_probes(), alerts=Alerts(sent, group_s=300, clock=clock.monotonic),
                   memory_ceilings=(("bot", 300), ("api", 300)), resident_mib=leaking(sup, "bot", mib))
    old_pid = sup.pid("bot")
    sidecar.tick()
    sidecar.tick()  # answered its probe: its memory once started, 120 MiB, is below the ceiling
    mib[0] = 350.0
    sidecar.tick()
    assert sup.actions() == [], "one reading above the ceiling is not yet a leak"
    clock.advance(1.0)
    verdict = sidecar.tick()
    assert sup.actions() == [("stopProcess", "bot")]
    assert verdict["status"] == "degraded" and verdict["reasons"] == [
        "bot: restarting (above its memory ceiling: 350 MiB resident, ceiling 300 MiB)"]
    clock.advance(1.0)
    assert sidecar.tick()["status"] == "degraded"
    assert sup.programs["bot"].statename == "STOPPING" and sup.actions() == [("stopProcess", "bot")]
    clock.advance(2.5)
    sidecar.tick()
    assert sup.actions() == [("stopProcess", "bot"), ("startProcess", "bot")]
    mib[0] = 120.0
    verdict = run_for(sidecar, 5.0)
    assert verdict["status"] == "healthy", verdict
    assert sup.pid("bot") != old_pid and sup.named() == {"bot"}
    assert [(e.program, e.cause, e.reason, e.old_pid) for e in sidecar.events.pending] == [
        ("bot", "memory", "above its memory ceiling: 350 MiB resident, ceiling 300 MiB; stopped gracefully to "
                          "start again", old_pid)]
    assert verdict["programs"]["bot"]["restarts"] == {"crash": 0, "hang": 0, "fatal": 0, "memory": 1}
    assert any("bot was above its memory ceiling: 350 MiB resident, ceiling 300 MiB: stopped gracefully" in t
               for t in wait_sent(sent, 1))


def test_a_passing_peak_above_the_ceiling_or_no_ceiling_restarts_nothing(sup, make, clock):
    clock.advance(60)
    mib = [500.0]
    sidecar = make(healthy_probes(), memory_ceilings=(("api", 300),), resident_mib=leaking(sup, "bot", mib))
    run_for(sidecar, 5.0)  # the bot has no ceiling
    flip = itertools.cycle([500.0, 100.0])
    sidecar.resident_mib = lambda pid: next(flip) if pid == sup.pid("api") else 100.0
    verdict = run_for(sidecar, 10.0)
    assert sup.actions() == [] and verdict["status"] == "healthy"


def test_a_sidecar_replaced_mid_restart_starts_the_program_again(sup, make, clock):
    """Stopped above its ceiling, then the sidecar is killed before the program is STOPPED:
    its successor finds the mark in the run folder and starts the program again."""
    clock.advance(60)
    sup.stop_takes["web"] = 10.0
    mib = [100.0]
    first = make(healthy_probes(), memory_ceilings=(("web", 200),), resident_mib=leaking(sup, "web", mib))
    run_for(first, 2.0)
    mib[0] = 400.0
    run_for(first, 2.0)
    assert sup.actions() == [("stopProcess", "web")]
    clock.advance(15.0)  # the first sidecar is gone; supervisord finished the stop
    second = make(healthy_probes(), memory_ceilings=(("web", 200),), resident_mib=lambda pid: 100.0)
    verdict = run_for(second, 5.0)
    assert sup.actions() == [("stopProcess", "web"), ("startProcess", "web")]
    assert sup.programs["web"].statename == "RUNNING" and verdict["status"] == "healthy", verdict
    assert json.loads((second.verdict_path.with_name("restarting.json")).read_text())["programs"] == []


def test_a_restart_mark_of_another_supervisord_life_is_not_taken(sup, make, clock):
    """Stopped above its ceiling, then the container restarted (the run folder kept): the new
    life's sidecar leaves alone a program an operator stops, whatever the old mark says."""
    clock.advance(60)
    sup.stop_takes["web"] = 10.0
    mib = [100.0]
    first = make(healthy_probes(), memory_ceilings=(("web", 200),), resident_mib=leaking(sup, "web", mib),
                 supervisord_life="1:4242")
    run_for(first, 2.0)
    mib[0] = 400.0
    run_for(first, 2.0)
    assert sup.actions() == [("stopProcess", "web")]
    clock.advance(15.0)  # a new container life: the operator's web is STOPPED
    second = make(healthy_probes(), memory_ceilings=(("web", 200),), resident_mib=lambda pid: 100.0,
                  supervisord_life="1:9999")
    verdict = run_for(second, 5.0)
    assert sup.actions() == [("stopProcess", "web")] and sup.programs["web"].statename == "STOPPED"
    assert "web: stopped by an operator" in verdict["reasons"], verdict


def test_a_ceiling_below_what_a_program_needs_to_run_is_said_not_a_restart_loop(sup, make, clock):
    """Above its ceiling from its start (a ceiling set too low, or the user's code needs more):
    never restarted for it, degraded naming the setting, one alert. A later process of it that
    starts below the ceiling is judged again."""
    clock.advance(60)
    sent, mib = Sent(), [73.0]
    sidecar = make(healthy_probes(), alerts=Alerts(sent, group_s=300, clock=clock.monotonic),
                   memory_ceilings=(("api", 64),), resident_mib=leaking(sup, "api", mib))
    verdict = run_for(sidecar, 30.0)
    assert sup.actions() == []
    assert verdict["status"] == "degraded" and verdict["reasons"] == [
        "api: memory ceiling too low: 73 MiB resident once started, ceiling 64 MiB; not restarted for it "
        "(raise BOTSTACK_MEMORY_CEILING_MB)"], verdict
    assert wait_sent(sent, 1) == ["botstack: api: memory ceiling too low: 73 MiB resident once started, ceiling "
                                  "64 MiB; not restarted for it (raise BOTSTACK_MEMORY_CEILING_MB)"]
    mib[0] = 50.0
    sup.crash("api")
    run_for(sidecar, 5.0)
    mib[0] = 80.0
    run_for(sidecar, 5.0)
    assert sup.actions() == [("stopProcess", "api"), ("startProcess", "api")]


def test_an_operator_stop_is_not_undone(sup, make, clock):
    clock.advance(60)
    sidecar = make(healthy_probes(), memory_ceilings=(("web", 200),), resident_mib=lambda pid: 100.0)
    sup.operator_stop("web")
    verdict = run_for(sidecar, 5.0)
    assert sup.actions() == [] and verdict["reasons"] == ["web: stopped by an operator"]


def test_first_sight_of_a_program_is_not_a_crash(sup, make, clock):
    clock.advance(60)
    sidecar = make(healthy_probes())

    run_for(sidecar, 5.0)

    assert not sidecar.events.restarts


# --- supervisord not RUNNING, or not answering -----------------------------------------------------

@pytest.mark.parametrize("mood, answers", [
    ("SHUTDOWN", False),  # supervisord 4: every call, getState included, faults with SHUTDOWN_STATE
    ("RESTARTING", False),
    ("SHUTDOWN", True),  # a supervisord whose getState answers the state instead
    ("RESTARTING", True),
    ("FATAL", True),
])
def test_nothing_is_done_when_supervisord_is_not_running(sup, make, clock, mood, answers):
    clock.advance(60)
    sup.mood, sup.answers_in_shutdown = mood, answers
    sup.go_fatal("bot")
    sup.on_term["api"] = "ignore"
    sidecar = make(healthy_probes(api=live("api", [False], failure_threshold=1)),
                   backoff_base_s=1.0, escalation="exit", max_failures=1)

    verdict = run_for(sidecar, 120.0)

    assert verdict["status"] == "unhealthy"
    assert sup.actions() == []
    assert not sidecar.events.restarts


def test_no_escalation_either_when_supervisord_stops_running_during_a_crash_loop(sup, make, clock):
    clock.advance(60)
    sup.go_fatal("bot")
    sup.start_outcomes["bot"] = ["FATAL"]
    sidecar = make(healthy_probes(), backoff_base_s=10.0, escalation="exit", max_failures=1)
    run_for(sidecar, 10.2)  # one start attempt, FATAL again: one failure, within max_failures
    assert sup.actions() == [("startProcess", "bot")]

    sup.mood = "FATAL"  # getState answers a state that is not RUNNING
    run_for(sidecar, 60.0)

    assert sup.actions() == [("startProcess", "bot")]


@pytest.mark.parametrize("error", [
    FileNotFoundError(2, "No such file or directory"),
    ConnectionRefusedError(111, "Connection refused"),
    xmlrpc.client.Fault(SHUTDOWN_STATE, "SHUTDOWN_STATE"),
    xmlrpc.client.ProtocolError("127.0.0.1/RPC2", 500, "Internal Server Error", {}),
], ids=["no-socket", "refused", "fault", "protocol-error"])
def test_unreachable_supervisord_gives_an_unhealthy_verdict(sup, make, clock, error):
    sup.unreachable = error

    sidecar = make(healthy_probes())

    verdict = sidecar.tick()

    assert verdict["status"] == "unhealthy"
    assert verdict["reasons"] == [f"supervisord: {error}"]
    assert json.loads(sidecar.verdict_path.read_text()) == verdict


@pytest.mark.parametrize("error", [ConnectionResetError(104, "reset"),
                                   xmlrpc.client.Fault(SHUTDOWN_STATE, "SHUTDOWN_STATE")])
def test_supervisord_failing_in_the_middle_of_a_restart_does_not_crash_the_tick(sup, make, clock, error):
    clock.advance(60)
    sup.on_term["api"] = "ignore"
    sup.broken["getProcessInfo"] = error
    sidecar = make(healthy_probes(api=live("api", [False], failure_threshold=1)))

    verdict = sidecar.tick()

    assert sup.actions() == [("signalProcess", "api", "TERM"), ("signalProcess", "api", "CONT")]
    assert verdict["status"] == "unhealthy"  # still failing its probe; nothing recorded as done
    assert not sidecar.events.restarts


# --- escalation --------------------------------------------------------------------------------------

def test_escalation_exit_shuts_supervisord_down_after_more_than_max_failures_in_the_window(sup, make, clock):
    clock.advance(60)
    sup.go_fatal("bot")
    sup.start_outcomes["bot"] = ["FATAL"]
    sidecar = make(healthy_probes(), backoff_base_s=1.0, backoff_max_s=1.0, escalation="exit",
                   max_failures=2, failure_window_s=900.0)

    verdict = run_for(sidecar, 60.0)

    # FATAL seen three times (schedule, attempt, FATAL again …): the third is one too many
    assert sup.actions() == [("startProcess", "bot"), ("startProcess", "bot"), ("shutdown",)]
    assert verdict["status"] == "unhealthy"
    assert verdict["reasons"] == ["supervisord: <Fault 6: 'SHUTDOWN_STATE'>"]


def test_escalation_retry_never_shuts_supervisord_down(sup, make, clock):
    clock.advance(60)
    sup.go_fatal("bot")
    sup.start_outcomes["bot"] = ["FATAL"]
    sidecar = make(healthy_probes(), backoff_base_s=1.0, backoff_max_s=1.0, max_failures=1)

    run_for(sidecar, 60.0)

    assert ("shutdown",) not in sup.actions()
    assert sup.actions().count(("startProcess", "bot")) >= 3


def test_failures_spread_wider_than_the_window_do_not_escalate(sup, make, clock):
    clock.advance(60)
    sup.go_fatal("bot")
    sup.start_outcomes["bot"] = ["FATAL"]
    sidecar = make(healthy_probes(), backoff_base_s=30.0, backoff_max_s=30.0, escalation="exit",
                   max_failures=1, failure_window_s=10.0)

    run_for(sidecar, 120.0)

    assert ("shutdown",) not in sup.actions()


# --- the event log -------------------------------------------------------------------------------

def _event(n: int) -> Event:
    return Event(1_000.0 + n, "api", "crash", f"crash #{n}", 100 + n, 200 + n)


def test_events_are_written_when_mongodb_answers():
    coll = FakeCollection()
    events = EventLog(coll)
    events.record(_event(1))

    assert events.flush() is True
    assert [d["reason"] for d in coll.docs] == ["crash #1"] and not events.pending


def test_events_are_kept_bounded_while_mongodb_is_down_and_written_once_later():
    coll = FakeCollection()
    coll.down = ServerSelectionTimeoutError("down")
    events = EventLog(coll, keep=2)
    for n in range(3):
        events.record(_event(n))

    assert events.flush() is False
    assert [e.reason for e in events.pending] == ["crash #1", "crash #2"]
    coll.down = None
    events.flush()
    events.flush()
    assert [d["reason"] for d in coll.docs] == ["crash #1", "crash #2"]


def test_event_recorded_into_a_full_queue_while_insert_many_runs_is_not_lost():
    coll = FakeCollection()
    events = EventLog(coll, keep=3)
    for n in range(3):
        events.record(_event(n))
    coll.during_insert = lambda: events.record(_event(3))

    events.flush()
    coll.during_insert = None
    events.flush()

    assert [d["reason"] for d in coll.docs][-1] == "crash #3"


def test_writer_thread_writes_events_once_mongodb_answers(monkeypatch):
    import healthcheck.events as events_module

    monkeypatch.setattr(events_module, "RETRY_S", 0.01)
    coll = FakeCollection()
    coll.down = ServerSelectionTimeoutError("mongod restarting")
    events = EventLog(coll)
    events.start_writer()

    events.record(_event(1))
    wait_until(lambda: coll.attempts >= 2, what="the writer retrying")
    assert coll.docs == [] and len(events.pending) == 1

    coll.down = None
    wait_until(lambda: coll.docs, what="the event written")
    assert [d["reason"] for d in coll.docs] == ["crash #1"]
    wait_until(lambda: not events.pending, what="the queue emptied")


def test_hung_mongodb_does_not_stall_the_sidecar(sup, make, clock):
    coll = FakeCollection()
    release = threading.Event()
    coll.during_insert = lambda: release.wait(10)  # insert_many hangs until the test ends
    events = EventLog(coll)
    events.start_writer()
    clock.advance(60)
    sidecar = make(healthy_probes(), events=events)
    try:
        sidecar.tick()
        sup.crash("mongodb")
        for _ in range(3):
            clock.advance(1.0)
            t0 = time.monotonic()
            sidecar.tick()
            assert time.monotonic() - t0 < 0.5
        assert events.restarts[("mongodb", "crash")] == 1
    finally:
        release.set()


# --- python -m healthcheck status --------------------------------------------------------------------

def _write(tmp_path, text: str) -> None:
    (tmp_path / "health.json").write_text(text)


def _verdict(tmp_path, **verdict) -> None:
    _write(tmp_path, json.dumps({"reasons": [], "time": time.time(), "monotonic": time.monotonic(), **verdict}))


def test_status_is_0_for_a_fresh_healthy_verdict(tmp_path, capsys):
    _verdict(tmp_path, status="healthy")

    assert status(str(tmp_path)) == 0
    assert capsys.readouterr().out.strip() == "healthy"


def test_status_is_0_for_degraded_and_prints_the_reasons(tmp_path, capsys):
    _verdict(tmp_path, status="degraded", reasons=["api: not ready (mongodb down)"])

    assert status(str(tmp_path)) == 0
    assert capsys.readouterr().out.splitlines() == ["degraded", "- api: not ready (mongodb down)"]


def test_status_is_1_while_a_program_is_starting(tmp_path, capsys):
    _verdict(tmp_path, status="degraded", reasons=["bot: STARTING"],
             programs={"api": {"state": "RUNNING"}, "bot": {"state": "STARTING"}})

    assert status(str(tmp_path)) == 1
    assert capsys.readouterr().out.splitlines() == ["degraded", "- bot: STARTING"]


def test_a_bot_that_crashes_at_every_start_is_never_called_healthy(sup, make, clock, capsys):
    sidecar = make(healthy_probes())
    codes = set()
    for state in ["STARTING", "BACKOFF"] * 3:  # what supervisord shows between its retries
        sup.programs["bot"].statename = state
        sidecar.tick()
        codes.add(status(str(sidecar.verdict_path.parent)))
        clock.advance(1)
    assert codes == {1}


def test_status_reads_what_the_sidecar_writes(sup, make, clock, capsys):
    sup.go_fatal("bot")
    sidecar = make(healthy_probes())
    sidecar.tick()

    assert status(str(sidecar.verdict_path.parent)) == 1
    assert "- bot: FATAL (crash loop)" in capsys.readouterr().out


_BAD_SHAPE = "BUG: healthcheck/__main__.py:24-25 trusts any JSON object with a fresh `time`"


@pytest.mark.parametrize("case", [
    "missing", "stale", "unhealthy", "not-json", "json-list", "no-time",
    "no-status",
    "unknown-status",
])
def test_status_is_1_when_the_verdict_is_unhealthy_stale_missing_or_corrupt(tmp_path, capsys, case):
    if case == "stale":
        _verdict(tmp_path, status="healthy", monotonic=time.monotonic() - STALE_AFTER_S - 1)
    elif case == "unhealthy":
        _verdict(tmp_path, status="unhealthy", reasons=["bot: FATAL"])
    elif case == "not-json":
        _write(tmp_path, "{not json")
    elif case == "json-list":
        _write(tmp_path, "[]")
    elif case == "no-time":
        _write(tmp_path, json.dumps({"status": "healthy", "reasons": []}))
    elif case == "no-status":
        _write(tmp_path, json.dumps({"time": time.time()}))
    elif case == "unknown-status":
        _verdict(tmp_path, status="starting")

    assert status(str(tmp_path)) == 1
    out = capsys.readouterr().out
    if case == "unhealthy":
        assert out.splitlines() == ["unhealthy", "- bot: FATAL"]
    elif case != "unknown-status":
        assert out.startswith(f"unhealthy: the health sidecar has published no verdict in the last {STALE_AFTER_S} s")


def test_status_still_accepts_a_verdict_just_inside_the_staleness_limit(tmp_path):
    _verdict(tmp_path, status="healthy", monotonic=time.monotonic() - STALE_AFTER_S + 2)

    assert status(str(tmp_path)) == 0


# --- probes --------------------------------------------------------------------------------------------

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


def test_http_probe_goes_straight_to_the_program_whatever_proxy_is_set(monkeypatch):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from services.common.probe import check

    asked: list[str] = []

    class Program(BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            status = 200 if self.path.startswith("/health") else 503
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"starting" if status == 503 else b"ok")

        def log_message(self, *args):
            pass

    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there: a proxied probe fails
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Program)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert check(f"{base}/health?deep=1", 2) == (True, "200")
        assert check(f"{base}/ready", 2) == (False, "503 starting")
    finally:
        server.shutdown()
        server.server_close()
    assert asked == ["/health?deep=1", "/ready"]
    assert check("https://127.0.0.1:1/health", 1)[0] is False


def test_a_refusal_is_told_in_the_programs_own_words():
    from services.common.probe import reason

    assert reason('{"status":"unavailable","reason":"mongodb refuses writes: disk full","problems":[]}') == \
        "mongodb refuses writes: disk full"
    assert reason('{"detail":"Not Found"}') == "Not Found"
    assert reason("starting") == "starting"
    assert reason('{"status": 3}') == '{"status": 3}'


# --- crash cycles, configuration errors, external database, alerts, the watchdog ------------------

class Sent(list):
    """An alert sender that keeps what it was given."""

    def __call__(self, text: str) -> None:
        self.append(text)


def wait_sent(sent: Sent, n: int) -> list[str]:
    deadline = time.monotonic() + 5
    while len(sent) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return list(sent)


def test_crashes_spread_over_minutes_are_a_crash_cycle_though_each_run_lived(sup, make, clock):
    clock.advance(60)
    sent = Sent()
    sidecar = make(healthy_probes(), alerts=Alerts(sent, group_s=300, clock=clock.monotonic))
    sidecar.tick()
    for _ in range(4):  # one crash every 7 minutes: supervisord never calls that FATAL
        clock.advance(420)
        sup.crash("bot")
        verdict = sidecar.tick()
    assert verdict["status"] == "unhealthy"
    assert any(r.startswith("bot: crash cycle: 4 restarts in the last 1 h (last: exited unexpectedly")
               for r in verdict["reasons"]), verdict["reasons"]
    assert [e.cause for e in sidecar.events.pending].count("cycle") == 1
    texts = wait_sent(sent, 5)
    assert len([t for t in texts if "crash cycle" in t]) == 1


def test_a_crash_cycle_ends_when_the_window_has_passed_and_recovery_is_announced(sup, make, clock):
    clock.advance(60)
    sent = Sent()
    sidecar = make(healthy_probes(), alerts=Alerts(sent, group_s=300, clock=clock.monotonic), cycle_window_s=60)
    sidecar.tick()
    for _ in range(4):
        clock.advance(5)
        sup.crash("api")
        sidecar.tick()
    assert sidecar.tick()["status"] == "unhealthy"
    clock.advance(61)
    assert sidecar.tick()["status"] == "healthy"
    assert any("healthy again" in t for t in wait_sent(sent, 3))


def crashing_bot(sup, make, clock, crashes: int) -> tuple[Sidecar, Sent]:
    """A sidecar with alerts grouped over 5 min, which has seen the bot crash every 3 s."""
    clock.advance(60)
    sent = Sent()
    sidecar = make(healthy_probes(), alerts=Alerts(sent, group_s=300, clock=clock.monotonic))
    sidecar.tick()
    for _ in range(crashes):
        clock.advance(3)
        sup.crash("bot")
        sidecar.tick()
    return sidecar, sent


def test_twenty_crashes_in_a_minute_are_at_most_three_alerts(sup, make, clock):
    sidecar, sent = crashing_bot(sup, make, clock, 20)
    sidecar.alerts.drain(5)
    texts = list(sent)
    assert 1 <= len(texts) <= 3, texts
    clock.advance(300)
    sidecar.tick()
    summary = wait_sent(sent, len(texts) + 1)[-1]
    assert summary.startswith("botstack: 19 more of the same in the last 5 min")


def test_at_the_sidecars_stop_the_counted_events_are_told_not_dropped(sup, make, clock):
    sidecar, sent = crashing_bot(sup, make, clock, 3)
    first = wait_sent(sent, 1)
    sidecar.alerts.close(timeout_s=5)
    assert len(first) == 1 and len(sent) == 2, list(sent)
    assert sent[-1].startswith("botstack: 2 more of the same in the last 5 min; the last one: bot died")


def test_alerts_a_killed_sidecar_left_waiting_are_sent_late_by_the_next_one(clock, tmp_path):
    """The sidecar is killed (its watchdog's SIGKILL) while one alert is being delivered, one
    waits behind it and one more crash is counted into a group: the next sidecar sends the one
    that waited, marked late, and the group's summary when it is due; the one being delivered
    (its child process finishes it) is not sent again."""
    spool, taken, stuck = tmp_path / "alerts.json", [], threading.Event()

    def delivering(text: str) -> None:  # the first sidecar's lane: still delivering when it dies
        taken.append(text)
        stuck.wait()

    first = Alerts(delivering, group_s=300, clock=clock.monotonic, spool=spool)
    first.event("bot:restart", "bot died (1)")
    wait_until(lambda: taken, what="the first alert taken")
    first.event("web:restart", "web died (1)")
    first.event("bot:restart", "bot died (2)")
    # the first sidecar is SIGKILLed here: nothing of it runs again
    sent = Sent()
    second = Alerts(sent, group_s=300, clock=clock.monotonic, spool=spool)
    assert re.fullmatch(r"botstack: web died \(1\) \(sent late: queued by \d\d:\d\d:\d\d UTC by a sidecar that "
                        r"stopped first\)", wait_sent(sent, 1)[0]), list(sent)
    clock.advance(300)
    second.tick()
    assert wait_sent(sent, 2)[1] == "botstack: 1 more of the same in the last 5 min; the last one: bot died (2)"
    assert taken == ["botstack: bot died (1)"] and len(sent) == 2, "an alert sent twice"
    assert json.loads(spool.read_text()) == {"lanes": [[]], "groups": {}}


def test_a_group_left_from_before_a_reboot_holds_back_no_alert(clock, tmp_path):
    """The run folder was kept over a reboot (docker restart, plain docker run), and with it a
    group a sidecar counted then: its start lies ahead of the monotonic clock, which began again
    at boot. It is over: the next crash of that kind is sent at once, not counted for as long
    as the last boot lasted."""
    spool = tmp_path / "alerts.json"
    spool.write_text(json.dumps({"lanes": [[]], "groups": {
        "bot:restart": {"first_at": clock.monotonic() + 86_400, "count": 2, "last_text": "bot died (before)"}}}))
    sent = Sent()
    alerts = Alerts(sent, group_s=300, clock=clock.monotonic, spool=spool)
    alerts.event("bot:restart", "bot died (now)")
    assert wait_sent(sent, 2) == ["botstack: 2 more of the same in the last 5 min; the last one: bot died (before)",
                                  "botstack: bot died (now)"]


def test_an_unreadable_alert_spool_is_said_and_alerts_go_on(clock, tmp_path, caplog):
    spool = tmp_path / "alerts.json"
    spool.write_text("{not json")
    sent = Sent()
    alerts = Alerts(sent, group_s=300, clock=clock.monotonic, spool=spool)
    alerts.event("bot:restart", "bot died")
    assert wait_sent(sent, 1) == ["botstack: bot died"]
    assert "alerts a predecessor left are lost" in caplog.text


def test_alerts_never_carry_a_token():
    sent = Sent()
    alerts = Alerts(sent, secrets=("hunter2-password",))
    alerts.event("x", f"api failed: {TOKEN_LIKE} and mongodb://u:hunter2-password@db/")
    text = wait_sent(sent, 1)[0]
    assert TOKEN_LIKE not in text and "hunter2-password" not in text


TOKEN_LIKE = "123456789:AAH-fake_secret_for_unit_tests_0123456789"


def test_a_program_with_a_configuration_error_is_named_and_not_restarted(sup, make, clock):
    clock.advance(60)
    sup.go_fatal("bot")
    sidecar = make(healthy_probes(), config_problems={"bot": "TELEGRAM_BOT_TOKEN: is not a bot token"})
    verdict = run_for(sidecar, 120)
    assert "bot: configuration error: TELEGRAM_BOT_TOKEN: is not a bot token" in verdict["reasons"]
    assert sup.actions() == []


def test_programs_this_container_does_not_run_are_neither_probed_nor_reported(sup, make, clock):
    clock.advance(60)
    sup.operator_stop("mongodb")
    sidecar = make([live("api"), live("web"), live("bot")], not_run=frozenset({"mongodb"}))
    verdict = run_for(sidecar, 30)
    assert verdict["status"] == "healthy" and "mongodb" not in verdict["programs"]
    assert "mongodb" not in sup.named()


def test_the_sidecar_beats_while_it_waits_on_a_heal(sup, make, clock, tmp_path):
    clock.advance(60)
    beats = []
    sidecar = make(healthy_probes(bot=live("bot", [False])), heartbeat=tmp_path / "hb")
    sidecar.beat = lambda: beats.append(clock())
    sup.on_term["bot"] = "ignore"
    run_for(sidecar, 10)
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    assert beats and max(gaps) <= 1.0, gaps


def test_the_watchdog_and_status_read_the_run_dir_the_settings_define(monkeypatch):
    from services.common import verdict
    from services.common.settings import Settings, load_settings

    assert (verdict.RUN_DIR_ENV, verdict.RUN_DIR_DEFAULT) == ("BOTSTACK_RUN_DIR", Settings.model_fields["run_dir"].default)
    monkeypatch.setenv("BOTSTACK_RUN_DIR", "/tmp/elsewhere")
    assert verdict.run_dir() == load_settings("healthcheck").run_dir == "/tmp/elsewhere"


@dataclass
class SidecarProcess:
    """The part of supervisord's Subprocess the guardian uses."""

    state: int
    laststart: float
    pid: int = field(default_factory=os.getpid)  # this test process plays the sidecar
    signals: list[int] = field(default_factory=list)

    def get_state(self) -> int:
        return self.state

    def signal(self, sig: int) -> None:
        self.signals.append(sig)


def beat_aged(path, age_s: float, life: str | None = None) -> None:
    """A heartbeat written `age_s` seconds ago by the process `life` (services/common/heartbeat.py;
    this one by default, which plays the sidecar)."""
    from services.common.heartbeat import process_life

    path.write_text(f"{life or process_life(os.getpid())} {time.monotonic() - age_s}\n")


def test_watchdog_kills_a_sidecar_whose_heartbeat_is_stale_and_nothing_else(tmp_path):
    import signal

    from supervisor.states import ProcessStates

    from healthcheck.guardian import STALE_S, START_GRACE_S, check

    beat = tmp_path / "hb"
    now = START + START_GRACE_S + 60
    sidecar = SidecarProcess(ProcessStates.RUNNING, START)
    beat_aged(beat, 1)
    assert check(sidecar, beat, now, 600) is None
    beat_aged(beat, STALE_S + 1)
    assert check(SidecarProcess(ProcessStates.STARTING, START), beat, now, 600) is None
    # the heartbeat is its predecessor's until a new sidecar, getting its plan, beats for the first
    # time: another pid, or the same pid in another life (`docker restart` keeps the run directory)
    beat_aged(beat, 1, life=f"{os.getpid()}:1")
    assert check(SidecarProcess(ProcessStates.RUNNING, START), beat, now, START_GRACE_S - 1) is None, "in its grace"
    assert check(SidecarProcess(ProcessStates.RUNNING, START), beat, now, START_GRACE_S + 1), "no beat in its grace"
    beat.unlink()
    assert check(SidecarProcess(ProcessStates.RUNNING, START), beat, now, START_GRACE_S + 1), "no heartbeat at all"
    beat_aged(beat, STALE_S + 1)
    assert check(SidecarProcess(ProcessStates.RUNNING, START), beat, now, STALE_S + 3), \
        "beat once, then hung: its grace is over"
    done = check(sidecar, beat, now, 600)
    assert done == {"time": now, "old_pid": os.getpid(), "reason": f"no heartbeat for {STALE_S + 1:.0f} s"}
    assert sidecar.signals == [signal.SIGKILL]


def test_the_watchdogs_start_grace_is_counted_from_when_it_saw_the_sidecar(tmp_path, monkeypatch):
    """A new sidecar, not beaten yet (the heartbeat is its predecessor's), and the clock set an
    hour forward since supervisord started it: it keeps its START_GRACE_S, counted on the
    monotonic clock, and is killed only if it still has not beaten after that. Counted from
    supervisord's start time, it was killed at once."""
    import signal
    from types import SimpleNamespace

    from supervisor.states import ProcessStates, SupervisorStates

    import healthcheck.guardian as guardian

    guardian.heartbeat_path(str(tmp_path)).write_text("1:1 0.0\n")  # its predecessor's
    sidecar = SidecarProcess(ProcessStates.RUNNING, time.time() - 3600)
    watchdog = guardian.Guardian(SimpleNamespace(options=SimpleNamespace(mood=SupervisorStates.RUNNING),
                                                 process_groups={"healthcheck": SimpleNamespace(
                                                     processes={"healthcheck": sidecar})}), str(tmp_path))
    monotonic = time.monotonic()
    for later in (0, 1, guardian.START_GRACE_S - 1):
        monkeypatch.setattr(time, "monotonic", lambda later=later: monotonic + later)
        watchdog._on_tick(None)
    assert sidecar.signals == [], "killed within its start grace"
    monkeypatch.setattr(time, "monotonic", lambda: monotonic + guardian.START_GRACE_S + 1)
    watchdog._on_tick(None)
    assert sidecar.signals == [signal.SIGKILL], "never beat, never killed"


def test_a_beat_read_at_once_is_fresh_not_from_the_future(tmp_path, monkeypatch):
    """The watchdog reads the sidecar's beat in the same millisecond it was written: its age is
    0, not below 0 (which means "from before a reboot" and got a healthy sidecar killed when
    the time written was rounded up: "no heartbeat for -0 s")."""
    from supervisor.states import ProcessStates

    from healthcheck.guardian import check
    from services.common import heartbeat

    monkeypatch.setattr(time, "monotonic", lambda: 1000.0009)
    path = tmp_path / "hb"
    heartbeat.beat(path)
    assert 0 <= heartbeat.last_beat(path)[1] < 0.001, path.read_text()
    assert check(SidecarProcess(ProcessStates.RUNNING, START), path, START, 600) is None


def test_a_clock_step_neither_stales_nor_freshens_a_heartbeat(tmp_path, monkeypatch):
    """The wall clock stepped an hour either way (NTP correcting a drifted machine): a heartbeat
    written a second ago stays fresh, one written a minute ago stays stale, for the watchdog, the
    bot's probe and the verdict alike. Read from file times, the step forward restarted every
    healthy program and the step back hid a hang for an hour."""
    from supervisor.states import ProcessStates

    from healthcheck.guardian import STALE_S, check
    from services.common.heartbeat import beat
    from services.common.probes import HeartbeatProbe
    from services.common.runfiles import write_json
    from services.common.verdict import STALE_AFTER_S, read_verdict, verdict_path

    fresh, stale = tmp_path / "fresh", tmp_path / "stale"
    beat(fresh)
    beat_aged(stale, 60)
    process = SidecarProcess(ProcessStates.RUNNING, time.time() - 600)
    probe = HeartbeatProbe("bot", path=fresh, max_age_s=3.0)
    write_json(verdict_path(str(tmp_path)), {"status": "healthy", "reasons": [], "time": time.time(),
                                              "monotonic": time.monotonic()})
    old = tmp_path / "old"
    old.mkdir()
    write_json(verdict_path(str(old)), {"status": "healthy", "reasons": [], "time": time.time(),
                                         "monotonic": time.monotonic() - STALE_AFTER_S - 1})
    wall = time.time
    for step in (3600, -3600):
        monkeypatch.setattr(time, "time", lambda step=step: wall() + step)
        assert check(process, fresh, time.time(), 600) is None, f"a fresh heartbeat killed after a step of {step} s"
        assert probe.check()[0], f"the bot called hung after a step of {step} s"
        assert read_verdict(str(tmp_path)), f"a fresh verdict called stale after a step of {step} s"
        assert check(process, stale, time.time(), 600), f"a hung sidecar spared after a step of {step} s"
        assert not HeartbeatProbe("bot", path=stale, max_age_s=STALE_S).check()[0]
        assert read_verdict(str(old)) is None, f"a stale verdict called fresh after a step of {step} s"


def test_supervisords_loop_asks_the_watchdog_once_a_second(tmp_path, monkeypatch):
    """supervisord's own ticks come every 5 s at the fastest: the guardian adds a 1 s one."""
    from types import SimpleNamespace

    from supervisor import events
    from supervisor.states import ProcessStates, SupervisorStates
    from supervisor.supervisord import Supervisor

    import healthcheck.guardian as guardian

    monkeypatch.setenv("BOTSTACK_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(events, "callbacks", [])
    monkeypatch.setattr(events, "TICK_EVENTS", list(events.TICK_EVENTS))
    asked: list[float] = []
    monkeypatch.setattr(guardian, "check", lambda process, heartbeat, now, running_s: asked.append(now))
    monkeypatch.setattr("healthcheck.wakeup.wake_on_signals", lambda supervisord: None)  # tests/unit/test_wakeup.py
    sidecar = SidecarProcess(ProcessStates.RUNNING, START)
    supervisord = SimpleNamespace(ticks={}, options=SimpleNamespace(mood=SupervisorStates.RUNNING),
                                  process_groups={"healthcheck": SimpleNamespace(processes={"healthcheck": sidecar})})
    guardian.make_guardian(supervisord)
    guardian.make_guardian(supervisord)  # a second factory call registers no second tick type
    assert sum(1 for e in events.TICK_EVENTS if e.period == 1) == 1
    for now in (START + 0.2, START + 0.7, START + 1.1, START + 2.05, START + 2.9, START + 3.0):
        Supervisor.tick(supervisord, now)
    assert len(asked) == 2 * 3, "each of the two guardians once for each of the 3 new seconds"


def test_the_next_sidecar_takes_over_what_the_watchdog_did_once(tmp_path):
    from healthcheck.guardian import hand_over, handover_path, take_over

    path = handover_path(str(tmp_path))
    assert take_over(path) == []
    hand_over(path, {"time": 1.0, "old_pid": 7, "reason": "no heartbeat for 9 s"})
    with path.open("a") as f:
        f.write("half a line\n")
    hand_over(path, {"time": 2.0, "old_pid": 8, "reason": "no heartbeat for 8 s"})
    assert [r["old_pid"] for r in take_over(path)] == [7, 8]
    assert take_over(path) == [] and list(tmp_path.iterdir()) == []


# --- the sidecar stays small: the settings and PyMongo live in short-lived children --------------

LEAN_CHILD = """
import json, sys
import healthcheck.__main__  # what the running sidecar imports, and its plan
from healthcheck.alerts import Alerts
from healthcheck.events import EventLog, WriterProcess
from healthcheck.guardian import take_over
from healthcheck.plan import load_plan
from healthcheck.sidecar import Sidecar
from services.bot.status import read_status
from services.common.logs import setup_logging
from services.common.supervisor import rpc
plan = load_plan()
heavy = sorted(m for m in ("pydantic", "pydantic_settings", "pymongo", "httpx") if m in sys.modules)
print(json.dumps({"heavy": heavy, "probes": [p.program for p in plan.probes], "readiness": plan.readiness.url,
                  "policy": plan.policy.backoff_base_s, "local_db": plan.local_db}))
"""


def test_the_sidecar_gets_its_plan_without_loading_the_settings_or_pymongo(subprocess_env):
    import subprocess
    import sys

    from tests.unit.conftest import ROOT

    env = subprocess_env(TELEGRAM_BOT_TOKEN="123456:" + "A" * 35, BOTSTACK_HEAL_BACKOFF_BASE_S="7")
    out = subprocess.run([sys.executable, "-c", LEAN_CHILD], cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    plan = json.loads(out.stdout.decode().splitlines()[-1])
    assert plan["heavy"] == []
    assert plan["probes"] == ["mongodb", "api", "web", "bot"] and plan["local_db"] is True
    assert plan["readiness"].endswith("/ready") and plan["policy"] == 7.0

    env = subprocess_env(TELEGRAM_BOT_TOKEN="123456:" + "A" * 35, MONGODB_URI="mongodb://db.example:27017")
    out = subprocess.run([sys.executable, "-c", LEAN_CHILD], cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert json.loads(out.stdout.decode().splitlines()[-1])["probes"] == ["api", "web", "bot"]


def test_a_bad_sidecar_setting_stops_the_sidecar_with_one_line_and_78(subprocess_env):
    import subprocess
    import sys

    from tests.unit.conftest import ROOT

    env = subprocess_env(TELEGRAM_BOT_TOKEN="123456:" + "A" * 35, BOTSTACK_HEAL_BACKOFF_BASE_S="soon")
    out = subprocess.run([sys.executable, "-m", "healthcheck"], cwd=ROOT, env=env, capture_output=True, timeout=60)
    lines = out.stderr.decode().strip().splitlines()
    assert out.returncode == 78 and len(lines) == 1 and "BOTSTACK_HEAL_BACKOFF_BASE_S" in lines[0], lines


def test_events_carry_an_id_of_their_own_so_a_resent_batch_is_stored_once():
    coll = FakeCollection()
    events = EventLog(coll)
    events.record(_event(1))
    events.record(_event(2))
    events.flush()
    ids = [d["_id"] for d in coll.docs]
    assert len(set(ids)) == 2 and ids[0] == "api:crash:1001.000000:101"
