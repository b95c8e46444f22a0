"""What the bot is doing, for operators and the health sidecar: a small JSON file in the run
directory. A standby instance (another one holds the polling lease) is healthy, not broken."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from services.common.runfiles import write_json


@dataclass
class BotStatus:
    path: Path
    mode: str = "polling"  # polling | webhook
    role: str = "starting"  # starting | active | standby | stopping
    instance: str = ""
    git_sha: str = ""  # the build this bot runs: a deploy checks the bot, not only the API
    lease_holder: str | None = None
    conflicts: int = 0
    last_conflict: float | None = None
    refused: str = ""  # why the bot stopped itself (exit 78: the Bot API refuses its token), for the alerts
    # Since when the Bot API fails (network, DNS, a proxy, Telegram's 5xx), and the last error:
    # the bot runs and beats, so only this tells the sidecar that nothing reaches Telegram.
    api_failing_since: float | None = None
    api_error: str = ""
    # When a Bot API call last failed so, outage or not (written at most once a second): a flaky
    # proxy's failures fall between calls that work, which clear api_failing_since at once, so
    # the sidecar's look once a second missed most of them (it judged a proxy failing two calls
    # in three fine for 90 s, twice). It counts the seconds that saw a failure instead.
    api_failed_at: float | None = None
    since: float = field(default_factory=time.time)

    def set(self, **changes) -> None:
        if changes.get("role") and changes["role"] != self.role:
            changes["since"] = time.time()
        for key, value in changes.items():
            setattr(self, key, value)
        self.write()

    def api_failed(self, what: str, exc: BaseException) -> None:
        from services.common.logs import redact

        error = redact(f"{what}: {type(exc).__name__}: {exc}")[:200]
        if self.api_failing_since is None:
            self.set(api_failing_since=time.time(), api_error=error)
        elif error != self.api_error:
            self.set(api_error=error)

    def api_call_failed(self) -> None:
        """A Bot API call failed for reasons of its own or the network's (see api_failed_at)."""
        now = time.time()
        if self.api_failed_at is None or not 0 <= now - self.api_failed_at < 1.0:
            self.set(api_failed_at=now)

    def api_answered(self) -> bool:
        """True when this ends an outage."""
        if self.api_failing_since is None:
            return False
        self.set(api_failing_since=None, api_error="")
        return True

    def conflict(self) -> None:
        self.set(conflicts=self.conflicts + 1, last_conflict=time.time())

    def write(self) -> None:
        write_json(self.path, {k: v for k, v in asdict(self).items() if k != "path"})


def read_status(run_dir: str) -> dict | None:
    try:
        data = json.loads((Path(run_dir) / "bot.json").read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None
