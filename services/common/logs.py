"""One logging set-up for every program: each line names its program, and no secret leaks.

httpx logs every request URL at INFO, and a Bot API URL contains the bot token
(`/bot<token>/getUpdates`); python-telegram-bot's own examples raise httpx to WARNING.
We do that too, and also redact anything token-shaped from every formatted line,
tracebacks included, as a second wall; and the password of any MongoDB URI
(mongodb://user:password@host → mongodb://user:***@host), which drivers and tools repeat
in their error messages.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Callable

TOKEN_SHAPE = re.compile(r"\d{3,}:[A-Za-z0-9_-]{30,}")
REDACTED = "[REDACTED-TOKEN]"
# user:password@ in any URI: MongoDB's, and the proxies' (HTTP_PROXY, ALL_PROXY=socks5://user:pass@...).
URI_PASSWORD = re.compile(r"\b([a-z][a-z0-9+.-]*://[^:@/\s]+):[^@\s]+@", re.I)
QUIET_LOGGERS = ("httpx", "httpcore", "apscheduler", "pymongo")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return URI_PASSWORD.sub(r"\1:***@", TOKEN_SHAPE.sub(REDACTED, text))


class RedactingFormatter(logging.Formatter):
    def __init__(self, fmt: str, program: str = "", secrets: tuple[str, ...] = ()) -> None:
        super().__init__(fmt, datefmt="%Y-%m-%dT%H:%M:%S")
        self.converter = time.gmtime
        self.program = program
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        text = redact(super().format(record), self.secrets)
        if self.program:  # continuation lines (tracebacks) name the program too
            text = text.replace("\n", f"\n{self.program} | ")
        return text


class Tally:
    """For a line that could be said thousands of times (a flood of slow clients, every reply
    waiting out an outage, every poll refused): said at most once per `every_s`, with how many
    times it happened since it was last said, instead of burying the log in the same words.

        if (count := tally.count()) is not None:
            log.warning("... (%d since the last such line)", count)
    """

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self._since_said = 0
        self._quiet_until = 0.0

    def count(self) -> int | None:
        """One more time. Returns how many times it happened since it was last said, this one
        included, when it is time to say it again; None while it should stay quiet."""
        self._since_said += 1
        now = self.clock()
        if now < self._quiet_until:
            return None
        said, self._since_said, self._quiet_until = self._since_said, 0, now + self.every_s
        return said

    def reset(self) -> None:
        """The next time is said at once (what it counted is over: an outage that ended)."""
        self._since_said, self._quiet_until = 0, 0.0


def setup_logging(program: str, level: str = "INFO", secrets: tuple[str, ...] = ()) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        RedactingFormatter(f"%(asctime)sZ {program} %(levelname)s %(name)s: %(message)s", program, secrets)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(exc_type, exc, tb) -> None:
    """A crash's traceback goes through the same formatter: labelled and redacted."""
    logging.getLogger("uncaught").critical("program crashed", exc_info=(exc_type, exc, tb))
