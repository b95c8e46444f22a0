"""The sidecar's loop: ask supervisord what runs, probe what should answer, publish a verdict.

Shaped like superlance's listeners: every collaborator (the supervisord RPC proxy, the probes,
the clock, where the verdict goes) is handed in, so tests can drive it with fakes and one tick
at a time. This step observes and reports; it does not restart anything yet.
"""

from __future__ import annotations

import json
import logging
import os
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from services.common.probes import Probe

log = logging.getLogger("botstack.healthcheck")


@dataclass
class ProbeState:
    failures: int = 0
    last_ok: bool | None = None
    last_detail: str = ""
    next_due: float = 0.0


@dataclass
class Sidecar:
    rpc: xmlrpc.client.ServerProxy
    probes: list[Probe]
    verdict_path: Path
    tick_s: float = 1.0
    clock: Callable[[], float] = time.time
    states: dict[str, ProbeState] = field(default_factory=dict)

    def tick(self) -> dict:
        now = self.clock()
        try:
            infos = {i["name"]: i for i in self.rpc.supervisor.getAllProcessInfo()}
        except (OSError, xmlrpc.client.Error) as exc:
            verdict = {"status": "unhealthy", "reasons": [f"supervisord: {exc}"], "time": now}
            self._publish(verdict)
            return verdict
        reasons: list[str] = []
        for name, info in sorted(infos.items()):
            if name == "healthcheck":
                continue
            if info["statename"] != "RUNNING":
                reasons.append(f"{name}: {info['statename']} {info.get('description', '')}".strip())
        for probe in self.probes:
            self._run_probe(probe, infos.get(probe.program), now, reasons)
        verdict = {"status": "unhealthy" if reasons else "healthy", "reasons": reasons, "time": now}
        self._publish(verdict)
        return verdict

    def _run_probe(self, probe: Probe, info: dict | None, now: float, reasons: list[str]) -> None:
        state = self.states.setdefault(probe.program, ProbeState())
        if info is None or info["statename"] != "RUNNING":
            state.failures = 0
            return
        if now - info["start"] < probe.start_grace_s:
            return
        if now >= state.next_due:
            state.next_due = now + probe.period_s
            try:
                ok, detail = probe.check()
            except Exception as exc:  # a probe must never take the sidecar down
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            if ok != state.last_ok:
                level = logging.INFO if ok else logging.WARNING
                log.log(level, "%s probe %s: %s", probe.program, "passes" if ok else "fails", detail)
            state.failures = 0 if ok else state.failures + 1
            state.last_ok, state.last_detail = ok, detail
        if state.failures >= probe.failure_threshold:
            reasons.append(f"{probe.program}: probe failed {state.failures} times: {state.last_detail}")

    def _publish(self, verdict: dict) -> None:
        tmp = self.verdict_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(verdict))
        os.replace(tmp, self.verdict_path)

    def runforever(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        while not should_stop():
            self.tick()
            time.sleep(self.tick_s)
