"""Prometheus metrics from the health sidecar's verdict: per-program state, restarts by
cause, probe latency and the container's health."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from services.api.deps import SettingsDep
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


@router.get("/metrics")
async def metrics(settings: SettingsDep) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(VerdictCollector(settings.run_dir))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
