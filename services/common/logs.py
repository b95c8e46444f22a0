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
