"""botstack health sidecar.

usage: python -m healthcheck          run the sidecar (supervisord starts it; see supervisor.conf)
       python -m healthcheck status   print the latest verdict; exit 0 healthy, 1 otherwise
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from services.common.settings import settings_or_exit

PROGRAM = "healthcheck"
STALE_AFTER_S = 30


def verdict_path(run_dir: str) -> Path:
    return Path(run_dir) / "health.json"


def status(run_dir: str) -> int:
    path = verdict_path(run_dir)
    try:
        verdict = json.loads(path.read_text())
        age = time.time() - verdict["time"]
    except (OSError, ValueError, KeyError, TypeError):
        print("unhealthy: the health sidecar has published no verdict")
        return 1
    if age > STALE_AFTER_S:
        print(f"unhealthy: the health sidecar's verdict is older than {STALE_AFTER_S} s")
        return 1
    print(verdict["status"] + "".join(f"\n- {r}" for r in verdict["reasons"]))
    return 0 if verdict["status"] == "healthy" else 1


def run() -> int:
    from healthcheck.sidecar import Sidecar
    from services.api.probe import probe as api_probe
    from services.bot.probe import probe as bot_probe
    from services.common.logs import setup_logging
    from services.common.supervisor import rpc
    from services.mongodb.probe import probe as mongodb_probe
    from services.web.probe import probe as web_probe

    settings = settings_or_exit(PROGRAM)
    setup_logging(PROGRAM, settings.log_level)
    stopping = False

    def stop(_signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    probes = [p(settings) for p in (mongodb_probe, api_probe, web_probe, bot_probe)]
    sidecar = Sidecar(rpc(settings.supervisor_socket), probes, verdict_path(settings.run_dir))
    sidecar.runforever(lambda: stopping)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["status"]:
        return status(settings_or_exit(PROGRAM).run_dir)
    if argv:
        print(__doc__.strip(), file=sys.stderr)
        return 64
    return run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
