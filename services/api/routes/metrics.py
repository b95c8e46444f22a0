"""Prometheus metrics from the health sidecar's verdict (per-program state, restarts by cause,
probe latency, the container's health) and the bot's inbox (updates pending, in progress and
failed: a failed update is a dead letter waiting for `botstack inbox retry`)."""

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pymongo.errors import PyMongoError

from services.api.deps import DbDep, SettingsDep
from services.bot.inbox import COLLECTION as INBOX
from services.bot.inbox import counts
from services.common.verdict import read_verdict

router = APIRouter(tags=["metrics"])
STATUSES = ("healthy", "degraded", "unhealthy")


class VerdictCollector:
    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir

    def collect(self):
        verdict = read_verdict(self.run_dir) or {"status": None, "programs": {}}
        health = GaugeMetricFamily("botstack_health", "1 for the container's current health verdict",
                                   labels=["status"])
        for status in STATUSES:
            health.add_metric([status], 1.0 if verdict["status"] == status else 0.0)
        up = GaugeMetricFamily("botstack_program_up", "1 when supervisord reports the program RUNNING",
                               labels=["program"])
        state = GaugeMetricFamily("botstack_program_state", "1 for the program's supervisord state",
                                  labels=["program", "state"])
        restarts = CounterMetricFamily("botstack_program_restarts",
                                       "Restarts seen or made by the health sidecar, by cause",
                                       labels=["program", "cause"])
        probe_ok = GaugeMetricFamily("botstack_probe_ok", "1 when the last liveness probe passed",
                                     labels=["program"])
        latency = GaugeMetricFamily("botstack_probe_latency_seconds", "Duration of the last liveness probe",
                                    labels=["program"])
        for name, p in verdict["programs"].items():
            up.add_metric([name], 1.0 if p["state"] == "RUNNING" else 0.0)
            state.add_metric([name, p["state"]], 1.0)
            for cause, count in p.get("restarts", {}).items():
                restarts.add_metric([name, cause], count)
            if p.get("probe_ok") is not None:
                probe_ok.add_metric([name], 1.0 if p["probe_ok"] else 0.0)
            if p.get("probe_latency_s") is not None:
                latency.add_metric([name], p["probe_latency_s"])
        yield from (health, up, state, restarts, probe_ok, latency)


class InboxCollector:
    def __init__(self, states: dict[str, int] | None) -> None:
        self.states = states

    def collect(self):
        if self.states is None:  # the database did not answer in time: no figure beats a wrong one
            return
        inbox = GaugeMetricFamily("botstack_inbox_updates", "Updates in the bot's durable inbox, by state",
                                  labels=["state"])
        for state, count in self.states.items():
            inbox.add_metric([state], float(count))
        yield inbox


@router.get("/metrics")
async def metrics(settings: SettingsDep, db: DbDep) -> Response:
    try:
        states = await asyncio.wait_for(counts(db[INBOX], settings.bot_id), timeout=settings.ready_timeout_ms / 1000)
    except (PyMongoError, TimeoutError):
        states = None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(VerdictCollector(settings.run_dir))
    registry.register(InboxCollector(states))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
