"""botstack health sidecar.

usage: python -m healthcheck          run the sidecar (supervisord starts it; see supervisor.conf)
       python -m healthcheck status   print the latest verdict: exit 0 when healthy or degraded
                                      (programs alive, a dependency down), 1 when unhealthy or
                                      while a program is STARTING

Docker's health check and Swarm's rolling updates run `status`. A program that is STARTING is
not up yet: the container is not healthy while it is. Docker's start period covers the first
start; a restart in steady state lasts a few seconds, one check of the three Docker needs; and a
program that crashes at every start is never called healthy, so a rolling update never takes a
task of a broken build for a good one (it would stop an old replica for it).
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from services.common.verdict import STALE_AFTER_S, read_verdict, run_dir

PROGRAM = "healthcheck"


def status(directory: str) -> int:
    verdict = read_verdict(directory)
    if verdict is None:
        print(f"unhealthy: the health sidecar has published no verdict in the last {STALE_AFTER_S} s")
        return 1
    print(verdict["status"] + "".join(f"\n- {r}" for r in verdict["reasons"]))
    bot = verdict.get("bot")
    if isinstance(bot, dict):
        print(f"bot: {bot.get('role')} ({bot.get('mode')} mode), {bot.get('conflicts', 0)} conflicts")
    programs = verdict.get("programs")
    starting = [n for n, p in programs.items() if isinstance(p, dict) and p.get("state") == "STARTING"] \
        if isinstance(programs, dict) else []
    return 0 if verdict["status"] in ("healthy", "degraded") and not starting else 1


# At a stop, what is still to be told gets this long to leave (within the sidecar's stopwaitsecs, 5 s).
STOP_DRAIN_S = 3.0


def run() -> int:
    """The sidecar. It never loads the settings or PyMongo itself (healthcheck/plan.py,
    healthcheck/events.py say why): what it needs comes from a child process."""
    from healthcheck.alerts import Alerts
    from healthcheck.events import Event, EventLog, WriterProcess
    from healthcheck.guardian import handover_path, heartbeat_path, take_over
    from healthcheck.notify import Channels, lanes
    from healthcheck.plan import load_plan
    from healthcheck.sidecar import Sidecar
    from services.bot.status import read_status
    from services.common.logs import setup_logging
    from services.common.supervisor import rpc
    from services.common.verdict import verdict_path

    plan = load_plan()
    channels = Channels(plan.api_base_url, plan.token, plan.alert_chat_ids, plan.alert_urls)
    secrets = channels.secrets()
    setup_logging(PROGRAM, plan.log_level, secrets)
    log = logging.getLogger("botstack.healthcheck")
    stopping = False

    def stop(_signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    events = EventLog(WriterProcess())
    events.start_writer()
    for done in take_over(handover_path(plan.run_dir)):  # the guardian killed our predecessor
        events.note(Event(done["time"], PROGRAM, "watchdog", done["reason"], done["old_pid"], os.getpid()))
    if plan.alert_chat_ids and not plan.token:
        log.warning("BOTSTACK_ALERT_CHAT_IDS is set but the bot token is not usable: no alerts to Telegram")
    alerts = Alerts(lanes(channels), group_s=plan.alert_group_s, secrets=secrets,
                    spool=verdict_path(plan.run_dir).with_name("alerts.json"))  # what a predecessor left
    sidecar = Sidecar(
        # Longer than any single call the sidecar makes (it never waits on supervisord's stops).
        rpc(plan.supervisor_socket, timeout_s=15),
        plan.probes,
        verdict_path(plan.run_dir),
        readiness=plan.readiness,
        policy=plan.policy,
        events=events,
        alerts=alerts,
        bot_status=lambda: read_status(plan.run_dir),
        config_problems=plan.config_problems,
        not_run=frozenset() if plan.local_db else frozenset({"mongodb"}),
        heartbeat=heartbeat_path(plan.run_dir),
    )
    sidecar.runforever(lambda: stopping)
    alerts.close(timeout_s=STOP_DRAIN_S)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["status"]:
        return status(run_dir())
    if argv:
        print(__doc__.strip(), file=sys.stderr)
        return 64
    return run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
