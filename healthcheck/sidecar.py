"""The sidecar's loop: ask supervisord what runs, probe what should answer, heal, report.

Shaped like superlance's listeners: every collaborator (the supervisord RPC proxy, the probes,
the clocks, the event log) is handed in, so tests drive it with fakes one tick at a time.

Two clocks: everything the sidecar waits for or counts over a window (the next probe, a heal's
grace, a crash loop's backoff, a crash cycle's hour, how long a dependency has been down) runs
on the monotonic clock, which no clock step moves; the wall clock only stamps what it records
and publishes. A time another process took from its wall clock (supervisord's start of a
program, the bot's "failing since") is turned into monotonic time when first seen. On wall
deadlines a clock stepped back by NTP, or a virtual machine resumed, stalled probes and heals
for as long as the step, and a step forward ended a program's start grace at once: probed
while still starting, it was restarted as hung.

What it does, and what it never does:
- a program that is RUNNING but fails its liveness probe `failure_threshold` times in a row
  is hung: it gets SIGTERM (and SIGCONT, so a stopped process can honour it), then SIGKILL
  after a short grace; supervisord's autorestart starts it again;
- a program that reached FATAL is started again with exponential backoff;
- a program that exits is restarted by supervisord itself; the sidecar only records it, and
  a sidecar started again (after a crash of its own, or its watchdog's kill) records what
  exited while it was away: it starts from its predecessor's last verdict (same supervisord);
- a program above its memory ceiling (BOTSTACK_MEMORY_CEILING_MB) for two passes in a row is
  stopped through supervisord (SIGTERM, its stop budget, then SIGKILL) and started again: a
  leak ends in a graceful restart, replies finished and updates handed back, rather than in
  the kernel's OOM kill, a SIGKILL mid-reply;
- a program restarted more than `cycle_max_restarts` times within `cycle_window_s` (crashes
  and hang heals alike) is in a crash cycle: unhealthy, however long each run lived, and the
  escalation policy applies as for FATAL;
- the admins hear of it in Telegram (alerts.py): restarts, cycles, FATAL, escalation, the
  bot losing its lease or meeting 409s, and the recovery;
- readiness is not liveness: the API failing /ready because MongoDB is down makes the
  container *degraded*, and nothing is restarted for it;
- nothing is done unless supervisord itself is RUNNING (never during shutdown), and only
  through supervisord's XML-RPC API, only to the program that is sick.
"""

from __future__ import annotations

import json
import logging
import os
import time
import xmlrpc.client
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from healthcheck.alerts import Alerts
from healthcheck.events import Event, EventLog
from healthcheck.policy import Backoff, HealPolicy
from services.common import oom
from services.common.heartbeat import beat, process_life
from services.common.probes import Probe
from services.common.runfiles import write_json

log = logging.getLogger("botstack.healthcheck")

DOWN_STATES = {"FATAL", "EXITED", "BACKOFF", "UNKNOWN"}
NOT_RUNNING = 70  # supervisor.xmlrpc.Faults.NOT_RUNNING
EX_CONFIG = 78  # a program's exit for a setting it refuses (sysexits.h)
# A dependency failing this long is news for the admins (a blip, or MongoDB starting with the
# container, is not): the database down or refusing writes, or the Bot API out of reach, while
# every program runs.
UNREADY_ALERT_S = 15.0
# A program found dead this soon after the container's OOM-kill count grew was that kill.
OOM_ATTRIBUTION_S = 10.0
# A Bot API that fails now and then between calls that work (a flaky proxy, Telegram failing some
# calls) never fails UNREADY_ALERT_S in a row: judged by the share of the passes of the last
# FLAKY_WINDOW_S that saw it failing, or a call failed since the pass before (at least FLAKY_MIN_S
# of them seen), told back below FLAKY_OK.
FLAKY_WINDOW_S = 60.0
FLAKY_MIN_S = 30.0
FLAKY_SHARE = 0.5
FLAKY_OK = 0.1
# Passes in a row above its memory ceiling before a program is restarted for it: one reading is
# a request's passing peak as often as a leak.
CEILING_PASSES = 2
NOT_READ = object()  # a mark not read yet: the first reading is not a change


@dataclass
class Watched:
    """What the sidecar remembers about one program between ticks."""

    backoff: Backoff
    pid: int = 0
    failures: int = 0
    last_ok: bool | None = None
    answered: bool = False  # since its last start: its start grace is over
    detail: str = ""
    latency_s: float | None = None
    started: float | None = None  # when this pid started, on the monotonic clock (Sidecar._on_monotonic)
    next_probe: float = 0.0
    retry_at: float | None = None
    healing: bool = False
    cycling: bool = False
    last_exit: str = ""
    over_ceiling: int = 0  # passes in a row above its memory ceiling
    ceiling_pid: int = 0  # the process whose resident memory once started was compared with its ceiling
    ceiling_too_low: str = ""  # ...and found above it: the setting is wrong, not the program
    ceiling_stop: str = ""  # why the sidecar is stopping it, to start it again once STOPPED


@dataclass
class Sidecar:
    rpc: xmlrpc.client.ServerProxy
    probes: list[Probe]
    verdict_path: Path
    readiness: Probe | None = None
    policy: HealPolicy = field(default_factory=HealPolicy)
    events: EventLog = field(default_factory=EventLog)
    alerts: Alerts = field(default_factory=lambda: Alerts(None))
    own_name: str = "healthcheck"
    # Programs supervisord knows but this container does not run (mongodb, with an external
    # database): neither probed, nor restarted, nor reported.
    not_run: frozenset[str] = frozenset()
    # What the bot reports about itself (active/standby, conflicts): shown, never acted on.
    bot_status: Callable[[], dict | None] = lambda: None
    # Programs that refuse to start on a bad setting they own: reported, never restarted for it.
    config_problems: dict[str, str] = field(default_factory=dict)
    tick_s: float = 1.0  # probes run once a second anyway; a faster loop only re-reads supervisord
    heartbeat: Path | None = None  # beaten every pass and while waiting: the watchdog reads it
    oom_kills: Callable[[], int | None] = oom.oom_kills  # the container's count of kernel OOM kills
    resident_mib: Callable[[int], float | None] = oom.resident_mib
    clock: Callable[[], float] = time.time  # stamps records only
    monotonic: Callable[[], float] = time.monotonic  # every wait and window
    sleep: Callable[[float], None] = time.sleep
    # This supervisord's life (its pid and start time): a verdict written in another life (the
    # run folder outlives `docker restart`) says nothing about the processes running now.
    supervisord_life: str = field(default_factory=lambda: process_life(os.getppid()))
    watched: dict[str, Watched] = field(default_factory=dict)
    ready: tuple[bool, str] = (True, "")
    _next_ready: float = 0.0
    _unready_since: float | None = None
    _unready_said: bool = False  # the loss was logged
    _unready_alerted: bool = False
    _ready_once: bool = False
    _last_status: str = "starting"
    _bot_seen: dict = field(default_factory=dict)
    _api_failing: tuple[float, float] | None = None  # the bot's "failing since" (wall), and on the monotonic clock
    _api_alerted_since: float | None = None  # the Bot API outage the admins were told of
    _api_flaky_told: bool = False  # ...or that it fails too often
    _api_seen: deque = field(default_factory=deque)  # (pass time, failing then) over FLAKY_WINDOW_S
    _api_failed_at: object = NOT_READ  # the bot's api_failed_at at the pass before
    _api_last_error: str = ""
    _oom_count: int | None = None
    _oom_at: float | None = None  # when the count last grew
    _restarting: set[str] | None = None  # stopped above their memory ceiling, to start again
    # Probes run in worker threads so that a probe's timeout is a wall-clock bound, whatever
    # a client library does internally (pymongo retries server selection, for one).
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(8, "probe"))
    _predecessor_pids: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """What the sidecar before this one last saw running, read before this one's first
        verdict replaces it: a program with another pid now exited while no sidecar watched."""
        try:
            programs = self._predecessors(self.verdict_path).get("programs", {})
            self._predecessor_pids = {name: int(view["pid"]) for name, view in programs.items()}
        except (KeyError, TypeError, ValueError, AttributeError):  # a verdict written by hand
            pass

    def _predecessors(self, path: Path) -> dict:
        """A file a predecessor wrote under this supervisord, or {}: the run folder outlives
        `docker restart`, and what another life wrote says nothing about the processes now."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        same_life = isinstance(data, dict) and self.supervisord_life \
            and data.get("supervisord_life") == self.supervisord_life
        return data if same_life else {}

    # --- one pass -------------------------------------------------------------------
    def beat(self) -> None:
        if self.heartbeat is not None:
            try:
                beat(self.heartbeat)
            except OSError as exc:
                log.warning("heartbeat %s not written: %s", self.heartbeat, exc)

    def tick(self) -> dict:
        self.beat()
        now = self.monotonic()
        self._note_oom_kills(now)
        try:
            supervisord_state = self.rpc.supervisor.getState()["statename"]
            infos = {i["name"]: i for i in self.rpc.supervisor.getAllProcessInfo()}
        except (OSError, xmlrpc.client.Error) as exc:
            return self._publish({"status": "unhealthy", "reasons": [f"supervisord: {exc}"],
                                  "time": self.clock(), "programs": {}})
        acting = supervisord_state == "RUNNING"
        probes = {p.program: p for p in self.probes}
        unhealthy: list[str] = []
        degraded: list[str] = []
        infos = {n: i for n, i in infos.items() if n != self.own_name and n not in self.not_run}
        for name, info in sorted(infos.items()):
            w = self.watched.get(name) or self.watched.setdefault(
                name, Watched(Backoff(self.policy), pid=self._predecessor_pids.get(name, 0)))
            self._notice_exit(name, info, w, now)
            state = info["statename"]
            if name in self.config_problems and state != "RUNNING":
                unhealthy.append(f"{name}: configuration error: {self.config_problems[name]}")
            elif name in self._stopped_to_restart() and state in ("STOPPING", "STOPPED"):
                degraded.append(self._restart_after_ceiling(name, info, w, acting))
            elif state == "RUNNING":
                w.retry_at = None
                w.backoff.note_up_since(now if w.started is None else w.started, now)
                if self._above_ceiling(name, info, w) and acting:
                    self._stop_for_memory(name, info, w)
                    degraded.append(f"{name}: restarting ({w.ceiling_stop})")
                    continue
                if w.ceiling_too_low:
                    degraded.append(f"{name}: {w.ceiling_too_low}")
                probe = probes.get(name)
                if probe and self._probe(probe, info, w, now) and acting:
                    self._heal_hang(name, info, w, probe)
                if w.failures >= (probe.failure_threshold if probe else 1):
                    unhealthy.append(f"{name}: not answering ({w.detail})")
                cycle = self._crash_cycle(name, w, now)
                if cycle:
                    unhealthy.append(cycle)
            elif state in ("FATAL", "EXITED"):  # EXITED: a program not restarted on an "expected" exit
                unhealthy.append(self._crash_loop(name, info, w, now, acting))
            elif state in DOWN_STATES:
                unhealthy.append(f"{name}: {state} {info.get('description', '')}".strip())
            elif state == "STOPPED":
                degraded.append(f"{name}: stopped by an operator")
            elif state == "STARTING" and w.backoff.attempts:  # an attempt after a crash loop: not yet a recovery
                unhealthy.append(f"{name}: STARTING, start attempt {w.backoff.attempts} after a crash loop")
            else:  # STARTING, STOPPING
                degraded.append(f"{name}: {state}")
            if state != "RUNNING":
                w.failures, w.last_ok, w.answered = 0, None, False
        if self.readiness and infos.get(self.readiness.program, {}).get("statename") == "RUNNING":
            if now >= self._next_ready:
                self._next_ready = now + self.readiness.period_s
                self.ready = self._check(self.readiness)
                self._note_readiness(now)
            if not self.ready[0]:
                degraded.append(f"{self.readiness.program}: not ready ({self.ready[1]})")
        bot = self.bot_status()
        self._watch_bot(bot)
        outage = self._bot_api_outage(bot, now, running=infos.get("bot", {}).get("statename") == "RUNNING")
        if outage:
            degraded.append(outage)
        status = "unhealthy" if unhealthy else "degraded" if degraded else "healthy"
        if status == "healthy" and self._last_status == "unhealthy":
            self.alerts.event("recovered", "healthy again: every program runs and answers")
        if status != self._last_status:
            self._last_status = status
        self.alerts.tick()
        wall = self.clock()
        return self._publish({
            "status": status,
            "reasons": unhealthy + degraded,
            "time": wall,
            "supervisord": supervisord_state,
            "supervisord_life": self.supervisord_life,
            "bot": bot,
            "programs": {n: self._program_view(n, infos[n], wall - now) for n in sorted(infos)},
        })

    # --- observation ----------------------------------------------------------------
    def _notice_exit(self, name: str, info: dict, w: Watched, now: float) -> None:
        """A new PID that the sidecar did not cause is a crash supervisord already handled."""
        pid = info.get("pid") or 0
        if pid and w.pid and pid != w.pid and not w.healing:
            # supervisord reports the status of the last exit only until it restarts the program
            status = info.get("exitstatus")
            if self._oom_at is not None and now - self._oom_at <= OOM_ATTRIBUTION_S:
                w.last_exit = oom.killed_for_memory()
            else:
                w.last_exit = f"exit status {status}" if status else "exited unexpectedly (a signal, or a crash)"
            reason = f"{w.last_exit}; supervisord restarted it"
            self.events.record(Event(self.clock(), name, "crash", reason, w.pid, pid))
            self.alerts.event(f"{name}:restart", f"{name} died ({w.last_exit}) and was restarted "
                                                 f"(pid {w.pid} -> {pid})")
            self._escalate_if_needed(name, w)
        if pid:
            if pid != w.pid or w.started is None:
                w.answered = False
                w.started = self._on_monotonic(info.get("start") or 0, now)
            w.pid = pid
            w.healing = False

    def _on_monotonic(self, wall: float, now: float) -> float:
        """A time another process took from the wall clock (supervisord's start of a pid, the
        bot's "failing since"), on the monotonic clock: taken when first seen, within a pass,
        so a later clock step leaves it alone."""
        return now - max(0.0, self.clock() - wall)

    def _note_oom_kills(self, now: float) -> None:
        """supervisord sees a SIGKILL; only the container's cgroup knows it was the kernel's, for memory."""
        count = self.oom_kills()
        if count is not None and self._oom_count is not None and count > self._oom_count:
            self._oom_at = now
        self._oom_count = count

    def _probe(self, probe: Probe, info: dict, w: Watched, now: float) -> bool:
        """Run the probe when due; True when the program counts as hung. A program's start grace
        lasts until it first answers (at most `start_grace_s`): a program that answered once
        has finished starting, and a hang after that is healed at once, not after the grace."""
        in_grace = now - (now if w.started is None else w.started) < probe.start_grace_s and not w.answered
        if in_grace:
            w.failures = 0
        if now >= w.next_probe:
            w.next_probe = now + probe.period_s
            t0 = time.monotonic()
            ok, detail = self._check(probe)
            w.latency_s = time.monotonic() - t0
            if ok != w.last_ok and (ok or not in_grace):  # still starting: not a failure to report
                log.log(logging.INFO if ok else logging.WARNING, "%s probe %s: %s",
                        probe.program, "passes" if ok else "fails", detail)
                w.last_ok = ok
            w.failures = 0 if ok or in_grace else w.failures + 1
            w.detail = detail
            w.answered = w.answered or ok
        return w.failures >= probe.failure_threshold

    def _check(self, probe: Probe) -> tuple[bool, str]:
        future = self._pool.submit(probe.check)
        try:
            return future.result(timeout=probe.timeout_s)
        except FutureTimeout:
            return False, f"no answer within {probe.timeout_s} s"
        except Exception as exc:  # a probe must never take the sidecar down
            return False, f"{type(exc).__name__}: {exc}"

    # --- actions --------------------------------------------------------------------
    def _heal_hang(self, name: str, info: dict, w: Watched, probe: Probe) -> None:
        old_pid = info["pid"]
        reason = f"liveness probe failed {w.failures} times: {w.detail}"
        log.warning("%s (pid %s) is hung: %s; restarting it", name, old_pid, reason)
        try:
            self._signal(name, "TERM")
            self._signal(name, "CONT")  # a stopped process may then exit cleanly
            if not self._wait_for_exit(name, old_pid, self.policy.hang_term_grace_s):
                self._signal(name, "KILL")
            new_pid = self._wait_for_new_pid(name, old_pid, timeout_s=10.0)
        except (OSError, xmlrpc.client.Error) as exc:
            log.error("could not restart %s: %s", name, exc)
            return
        w.healing = True
        w.failures, w.last_ok, w.next_probe = 0, None, 0.0
        w.last_exit = f"hung: {reason}"
        self.events.record(Event(self.clock(), name, "hang", reason, old_pid, new_pid))
        self.alerts.event(f"{name}:restart", f"{name} was hung ({reason}) and was restarted "
                                             f"(pid {old_pid} -> {new_pid})")
        self._escalate_if_needed(name, w)

    def _above_ceiling(self, name: str, info: dict, w: Watched) -> bool:
        """Two passes in a row above its ceiling. A program already above it at its first reading
        once started (it answered its probe) needs more than the ceiling to run at all: it is
        never restarted for it, which would only start a restart loop; the verdict says so."""
        ceiling = dict(self.policy.memory_ceilings).get(name)
        pid = info.get("pid") or 0
        rss = self.resident_mib(pid) if ceiling and pid else None
        if w.ceiling_pid != pid:  # a new process of it: judged again once started
            w.ceiling_too_low = ""
            if rss is not None and w.answered:
                w.ceiling_pid = pid
            if w.ceiling_pid == pid and rss > ceiling:
                w.ceiling_too_low = (f"memory ceiling too low: {rss:.0f} MiB resident once started, ceiling "
                                     f"{ceiling} MiB; not restarted for it (raise BOTSTACK_MEMORY_CEILING_MB)")
                log.warning("%s: %s", name, w.ceiling_too_low)
                self.alerts.event(f"{name}:ceiling", f"{name}: {w.ceiling_too_low}")
        if rss is None or w.ceiling_pid != pid or w.ceiling_too_low:
            w.over_ceiling = 0
            return False
        w.over_ceiling = w.over_ceiling + 1 if rss > ceiling else 0
        if w.over_ceiling >= CEILING_PASSES:
            w.ceiling_stop = f"above its memory ceiling: {rss:.0f} MiB resident, ceiling {ceiling} MiB"
            return True
        return False

    def _stop_for_memory(self, name: str, info: dict, w: Watched) -> None:
        """Stop it the way `docker stop` would (its stop signal, its stop budget, then SIGKILL,
        all supervisord's), and start it again once STOPPED. Marked in the run folder first: a
        sidecar replaced meanwhile starts it again all the same."""
        log.warning("%s (pid %s) is %s; restarting it gracefully", name, info["pid"], w.ceiling_stop)
        self._mark_stopped_to_restart(name, True)
        try:
            self.rpc.supervisor.stopProcess(name, False)
        except (OSError, xmlrpc.client.Error) as exc:
            log.error("could not stop %s: %s", name, exc)
            self._mark_stopped_to_restart(name, False)
            return
        w.over_ceiling, w.last_exit = 0, w.ceiling_stop
        self.events.record(Event(self.clock(), name, "memory", f"{w.ceiling_stop}; stopped gracefully to start again",
                                 info["pid"], None))
        self.alerts.event(f"{name}:restart", f"{name} was {w.ceiling_stop}: stopped gracefully and started "
                                             f"again (pid {info['pid']})")
        self._escalate_if_needed(name, w)

    def _restart_after_ceiling(self, name: str, info: dict, w: Watched, acting: bool) -> str:
        why = w.ceiling_stop or "above its memory ceiling"
        if info["statename"] == "STOPPED" and acting:
            log.warning("starting %s again (it was %s)", name, why)
            try:
                self.rpc.supervisor.startProcess(name, False)
            except (OSError, xmlrpc.client.Error) as exc:
                log.error("could not start %s: %s", name, exc)
                return f"{name}: stopped to restart ({why}); starting it failed: {exc}"
            self._mark_stopped_to_restart(name, False)
            w.healing, w.ceiling_stop = True, ""  # the new pid is this restart, not a crash
        return f"{name}: restarting ({why})"

    def _restarts_path(self) -> Path:
        return self.verdict_path.with_name("restarting.json")

    def _stopped_to_restart(self) -> set[str]:
        """A predecessor's marks, read once (of this supervisord's life only: a program an
        operator stops after a `docker restart` was not stopped by a sidecar of the last life)."""
        if self._restarting is None:
            try:
                self._restarting = set(self._predecessors(self._restarts_path()).get("programs", []))
            except TypeError:  # a mark written by hand
                self._restarting = set()
        return self._restarting

    def _mark_stopped_to_restart(self, name: str, stopping: bool) -> None:
        names = self._stopped_to_restart()
        names.add(name) if stopping else names.discard(name)
        try:
            write_json(self._restarts_path(), {"supervisord_life": self.supervisord_life, "programs": sorted(names)})
        except OSError as exc:  # this sidecar still starts it; only a successor would not know
            log.warning("%s not written: %s", self._restarts_path(), exc)

    def _signal(self, name: str, sig: str) -> None:
        try:
            self.rpc.supervisor.signalProcess(name, sig)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != NOT_RUNNING:  # already gone is what we want
                raise

    def _crash_loop(self, name: str, info: dict, w: Watched, now: float, acting: bool) -> str:
        what = "FATAL (crash loop)"
        said = self._refusal(name)
        if info["statename"] == "EXITED":
            code = info.get("exitstatus")
            what = f"EXITED with {code}"
            if code == EX_CONFIG and not said:  # the bot says which setting the Bot API refuses; others log it
                said = (self.bot_status() or {}).get("refused") if name == "bot" else None
                what += "" if said else " (a setting it refuses: its log says which)"
        if said:
            what += f": {said}"
        if w.retry_at is None and acting:
            delay = w.backoff.schedule(now)
            w.retry_at = w.backoff.next_at
            log.warning("%s is %s; next start attempt in %.0f s", name, what, delay)
            gave_up = ""
            if info["statename"] == "FATAL":
                gave_up = f": supervisord gave up starting it ({info.get('description', '')})"
            self.alerts.event(f"{name}:fatal", f"{name} is {what}{gave_up}; next attempt in {delay:.0f} s")
            self._escalate_if_needed(name, w)
        elif acting and now >= w.retry_at:
            log.warning("starting %s program %s (attempt %d)", info["statename"], name, w.backoff.attempts)
            try:
                self.rpc.supervisor.startProcess(name, False)
            except (OSError, xmlrpc.client.Error) as exc:
                log.error("could not start %s: %s", name, exc)
            w.retry_at = None
            w.healing = True
            self.events.record(Event(self.clock(), name, "fatal", "crash loop: started again after backoff", w.pid, None))
        wait = max(0.0, (w.retry_at or now) - now)
        return f"{name}: {what}, next start attempt in {wait:.0f} s"

    def _refusal(self, name: str) -> str:
        """The line a program that refused to start left in the run folder, as it said it in its
        log (services/mongodb/run: a data folder it cannot write): supervisord's FATAL only says
        "Exited too quickly", and the verdict, the dashboard and the admins' alert should say why."""
        try:
            text = self.verdict_path.with_name(f"{name}.refused").read_text(errors="replace").strip()
        except OSError:
            return ""
        return text.removeprefix(f"{name}: ")[:600]

    def _crash_cycle(self, name: str, w: Watched, now: float) -> str | None:
        """More restarts than the policy tolerates within its window: a crash cycle, however
        long each run lived (supervisord never calls that FATAL)."""
        count = w.backoff.restarts_within(self.policy.cycle_window_s, now)
        cycling = count > self.policy.cycle_max_restarts
        window = _duration(self.policy.cycle_window_s)
        if cycling and not w.cycling:
            text = f"{name} is in a crash cycle: {count} restarts in the last {window} (last: {w.last_exit})"
            self.events.note(Event(self.clock(), name, "cycle", text, w.pid, None))
            self.alerts.event(f"{name}:cycle", f"{text}; the container is unhealthy")
        w.cycling = cycling
        if cycling:
            return f"{name}: crash cycle: {count} restarts in the last {window} (last: {w.last_exit})"
        return None

    def _note_readiness(self, now: float) -> None:
        """Say when readiness is lost (at once, once it had been ready; at start only past
        UNREADY_ALERT_S) and when it is back; alert past UNREADY_ALERT_S. Nothing is restarted."""
        name, (ok, detail) = self.readiness.program, self.ready
        if ok:
            if self._unready_said:
                log.info("%s ready again after %.0f s", name, now - self._unready_since)
            if self._unready_alerted:
                self.alerts.event(f"{name}:ready", f"{name} is ready again after {now - self._unready_since:.0f} s")
            self._unready_since, self._unready_said, self._unready_alerted, self._ready_once = None, False, False, True
            return
        if self._unready_since is None:
            self._unready_since = now
        long = now - self._unready_since >= UNREADY_ALERT_S
        if not self._unready_said and (self._ready_once or long):
            self._unready_said = True
            log.warning("%s not ready: %s; nothing is restarted for it", name, detail)
        if long and not self._unready_alerted:
            self._unready_alerted = True
            self.alerts.event(f"{name}:unready", f"{name} not ready for {now - self._unready_since:.0f} s: {detail}. "
                                                 "Nothing is restarted for it; updates wait until it is back")

    def _watch_bot(self, bot: dict | None) -> None:
        """The bot losing its polling lease, or meeting 409s (another instance with its token)."""
        if not isinstance(bot, dict):
            return
        seen, self._bot_seen = self._bot_seen, dict(bot)
        if seen.get("role") == "active" and bot.get("role") == "standby":
            self.alerts.event("bot:lease", f"the bot lost its polling lease; now held by "
                                           f"{bot.get('lease_holder') or 'nobody reachable'}")
        new_conflicts = int(bot.get("conflicts") or 0) - int(seen.get("conflicts") or 0)
        if seen and new_conflicts > 0:
            self.alerts.event("bot:conflict", f"409 Conflict from Telegram: another instance polls with this "
                                              f"bot's token ({bot.get('conflicts')} conflicts so far)")

    def _bot_api_outage(self, bot: dict | None, now: float, running: bool) -> str | None:
        """The bot runs and beats, but its Bot API calls fail (network, DNS, a proxy gone,
        Telegram's 5xx): nothing is answered and no restart can help. Degraded, naming it, past
        UNREADY_ALERT_S; the admins are told once, and again when it answers. A Bot API that
        fails often but not for long in a row is judged by its share of failing passes."""
        if not running or not isinstance(bot, dict):
            return None  # a bot that is down is the crash watch's business
        since = self._api_failing_since(bot.get("api_failing_since"), now)
        failing = since is not None
        before, self._api_failed_at = self._api_failed_at, bot.get("api_failed_at")
        failed_since = before is not NOT_READ and self._api_failed_at not in (None, before)  # between two passes
        self._api_last_error = bot.get("api_error") or self._api_last_error
        self._api_seen.append((now, failing or failed_since))
        while now - self._api_seen[0][0] > FLAKY_WINDOW_S:
            self._api_seen.popleft()
        if failing and now - since >= UNREADY_ALERT_S:
            detail = f"the Bot API has failed for {now - since:.0f} s ({bot.get('api_error') or 'no answer'})"
            if self._api_alerted_since is None:
                self._api_alerted_since = since
                log.warning("bot: %s; updates wait until it answers, nothing is restarted for it", detail)
                self.alerts.event("bot:api-down", f"bot: {detail}. Updates wait until it answers; nothing is "
                                                  "restarted for it")
            return f"bot: {detail}"
        if not failing and self._api_alerted_since is not None and bot.get("role") != "starting":
            # (a bot restarted meanwhile is not an answer)
            self.alerts.event("bot:api-back", f"the Bot API answers the bot again after "
                                              f"{now - self._api_alerted_since:.0f} s")
            self._api_alerted_since = None
            self._api_seen.clear()  # that outage was told: not counted again as failing often
        return None if self._api_alerted_since is not None else self._api_flaky(now)

    def _api_failing_since(self, wall: object, now: float) -> float | None:
        """The bot's "failing since" (its wall clock) on the monotonic clock, taken when first seen."""
        if not isinstance(wall, (int, float)):
            self._api_failing = None
            return None
        if self._api_failing is None or self._api_failing[0] != wall:
            self._api_failing = (wall, self._on_monotonic(wall, now))
        return self._api_failing[1]

    def _api_flaky(self, now: float) -> str | None:
        seen = self._api_seen
        failed = sum(1 for _, failing in seen if failing)
        share = failed / len(seen) if seen else 0.0
        if self._api_flaky_told and share < FLAKY_OK:
            self._api_flaky_told = False
            log.info("bot: the Bot API answers the bot steadily again")
            self.alerts.event("bot:api-steady", "the Bot API answers the bot steadily again")
        if not seen or now - seen[0][0] < FLAKY_MIN_S or share < FLAKY_SHARE:
            return None
        detail = (f"the Bot API failed at {failed} of the last {len(seen)} checks, {now - seen[0][0]:.0f} s "
                  f"({self._api_last_error or 'no answer'})")
        if not self._api_flaky_told:
            self._api_flaky_told = True
            log.warning("bot: %s; replies are tried again, nothing is restarted for it", detail)
            self.alerts.event("bot:api-flaky", f"bot: {detail}. Replies are late and tried again; nothing is "
                                               "restarted for it")
        return f"bot: {detail}"

    def _escalate_if_needed(self, name: str, w: Watched) -> None:
        if w.backoff.note_failure(self.monotonic()) and self.policy.escalation == "exit":
            log.critical("%s failed more than %d times in %.0f s; stopping supervisord so the "
                         "orchestrator replaces the container", name, self.policy.max_failures,
                         self.policy.failure_window_s)
            self.events.note(Event(self.clock(), name, "escalation", "stopping supervisord", w.pid, None))
            self.alerts.event("escalation", f"{name} failed more than {self.policy.max_failures} times in "
                                            f"{_duration(self.policy.failure_window_s)}: stopping the container "
                                            "so the orchestrator replaces it")
            self.alerts.drain(timeout_s=3.0)
            try:
                self.rpc.supervisor.shutdown()
            except (OSError, xmlrpc.client.Error) as exc:
                log.error("could not stop supervisord: %s", exc)

    def _wait_for_exit(self, name: str, pid: int, timeout_s: float) -> bool:
        deadline = self.monotonic() + timeout_s
        while True:
            info = self.rpc.supervisor.getProcessInfo(name)
            if info["pid"] != pid or info["statename"] not in ("RUNNING", "STOPPING"):
                return True
            if self.monotonic() >= deadline:
                return False
            self.beat()
            self.sleep(0.1)

    def _wait_for_new_pid(self, name: str, old_pid: int, timeout_s: float) -> int | None:
        deadline = self.monotonic() + timeout_s
        while self.monotonic() < deadline:
            info = self.rpc.supervisor.getProcessInfo(name)
            if info["pid"] and info["pid"] != old_pid:
                return info["pid"]
            if info["statename"] in ("EXITED", "STOPPED"):  # autorestart=false: start it ourselves
                try:
                    self.rpc.supervisor.startProcess(name, False)
                except xmlrpc.client.Fault:  # ALREADY_STARTED: supervisord's autorestart won the race
                    pass
            self.beat()
            self.sleep(0.1)
        return None

    # --- reporting ------------------------------------------------------------------
    def _program_view(self, name: str, info: dict, to_wall: float) -> dict:
        """What the verdict shows of one program; `to_wall` turns monotonic times into the wall clock's."""
        w = self.watched.get(name)
        view = {"state": info["statename"], "pid": info.get("pid") or 0, "start": info.get("start") or 0}
        if w:
            view.update(probe_ok=w.last_ok, probe_detail=w.detail, probe_latency_s=w.latency_s,
                        next_retry=None if w.retry_at is None else w.retry_at + to_wall)
        view.update(self.events.summary(name))
        return view

    def _publish(self, verdict: dict) -> dict:
        verdict["monotonic"] = time.monotonic()  # its age for readers (verdict.py): "time" moves with a clock step
        write_json(self.verdict_path, verdict)
        return verdict

    def runforever(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        while not should_stop():
            self.tick()
            self.sleep(self.tick_s)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
