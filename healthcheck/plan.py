"""What the sidecar needs from the settings, made by a short-lived child process.

The sidecar runs for the container's whole life. Validating the settings needs pydantic, and
the probes are declared by each program next to its code (`services/<program>/probe.py`,
built from the settings); loading all of that into the sidecar would keep about 20 MiB resident
for what is read once. So `python -m healthcheck` runs `python -m healthcheck.plan`, which
loads and validates the settings like any program (a bad setting: one line, exit 78, passed on
as the sidecar's own), builds the probes and the heal policy, and hands them back pickled on
stdout; then it exits, and its memory with it.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from dataclasses import dataclass, field

from healthcheck.child import helper_argv
from healthcheck.notify import channels_from, url_problems
from healthcheck.policy import HealPolicy
from services.common.probes import Probe

PROGRAM = "healthcheck"
TIMEOUT_S = 60.0  # a cold start on a busy machine; normally well under a second


@dataclass
class Plan:
    run_dir: str
    supervisor_socket: str
    log_level: str
    probes: list[Probe]
    readiness: Probe
    policy: HealPolicy
    token: str | None = None
    api_base_url: str = ""
    alert_chat_ids: list[int] = field(default_factory=list)
    alert_urls: list[str] = field(default_factory=list)
    alert_group_s: float = 60.0
    config_problems: dict[str, str] = field(default_factory=dict)
    local_db: bool = True


def make_plan(settings) -> Plan:
    from services.api.probe import probe as api_probe
    from services.api.probe import readiness as api_readiness
    from services.bot.probe import probe as bot_probe
    from services.common.local_mongod import runs_local_mongod
    from services.common.settings import env_name, refuse
    from services.mongodb.probe import probe as mongodb_probe
    from services.web.probe import probe as web_probe

    local_db = runs_local_mongod(settings)
    alert_urls = channels_from(settings).urls
    for problem in url_problems(alert_urls)[:1]:
        refuse(PROGRAM, f"{env_name('alert_urls')}: {problem}")
    probes = (mongodb_probe, api_probe, web_probe, bot_probe) if local_db else (api_probe, web_probe, bot_probe)
    return Plan(
        run_dir=settings.run_dir,
        supervisor_socket=settings.supervisor_socket,
        log_level=settings.log_level,
        probes=[p(settings) for p in probes],
        readiness=api_readiness(settings),
        policy=HealPolicy.from_settings(settings),
        token=settings.telegram_bot_token.get_secret_value() if settings.telegram_bot_token else None,
        api_base_url=settings.telegram_api_base_url,
        alert_chat_ids=settings.alert_chat_ids,
        alert_urls=alert_urls,
        alert_group_s=settings.alert_group_s,
        config_problems=settings.config_problems,
        local_db=local_db,
    )


def load_plan() -> Plan:
    """The plan, from a child process; exits as the child did when it refused the settings."""
    child = subprocess.run(helper_argv("healthcheck.plan"), capture_output=True, timeout=TIMEOUT_S)
    if child.returncode < 0:  # a helper goes first when memory runs out; supervisord starts the sidecar again
        sys.stderr.write(f"healthcheck: python -m healthcheck.plan was killed by signal {-child.returncode}\n")
        raise SystemExit(1)
    if child.returncode:
        sys.stderr.buffer.write(child.stderr)
        sys.stderr.flush()
        raise SystemExit(child.returncode)
    return pickle.loads(child.stdout)


def main() -> None:
    from services.common.settings import settings_or_exit

    plan = make_plan(settings_or_exit(PROGRAM))
    sys.stdout.buffer.write(pickle.dumps(plan))
    sys.stdout.flush()


if __name__ == "__main__":
    from healthcheck import plan  # pickled as healthcheck.plan.Plan, which the sidecar can load, not __main__.Plan

    plan.main()
