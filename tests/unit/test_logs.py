"""services/common/logs.py: every line names its program and no bot token reaches the output."""

from __future__ import annotations

import logging
import sys

from services.common.logs import REDACTED, RedactingFormatter, Tally, setup_logging
from tests.unit.conftest import TOKEN

SECRET_PART = TOKEN.split(":", 1)[1]


def _record(msg: str, args: tuple = (), exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("botstack.test", logging.INFO, __file__, 1, msg, args, exc_info)


def _formatter() -> RedactingFormatter:
    return RedactingFormatter("%(asctime)sZ bot %(levelname)s %(name)s: %(message)s")


def test_formatter_redacts_token_in_message():
    line = _formatter().format(_record(f"GET https://api.telegram.org/bot{TOKEN}/getUpdates"))

    assert SECRET_PART not in line
    assert f"/bot{REDACTED}/getUpdates" in line


def test_formatter_redacts_token_passed_as_argument():
    line = _formatter().format(_record("HTTP Request: POST %s %s", (f"https://x/bot{TOKEN}/getMe", "200")))

    assert SECRET_PART not in line
    assert REDACTED in line and line.endswith("200")


def test_formatter_redacts_token_in_exception_traceback():
    try:
        raise RuntimeError(f"request to /bot{TOKEN}/sendMessage failed")
    except RuntimeError:
        record = _record("send failed", exc_info=sys.exc_info())

    text = _formatter().format(record)

    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: request to /bot" in text
    assert SECRET_PART not in text


def test_formatter_redacts_an_explicit_secret_that_is_not_token_shaped():
    formatter = RedactingFormatter("%(message)s", secrets=("hunter2-password",))

    assert formatter.format(_record("db password hunter2-password")) == f"db password {REDACTED}"


def test_setup_logging_quiets_httpx_and_labels_each_line(restore_logging, capsys):
    setup_logging("bot", "DEBUG", (TOKEN,))

    for name in ("httpx", "httpcore"):
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING
    logging.getLogger("httpx").info("HTTP Request: POST https://api.telegram.org/bot%s/getUpdates", TOKEN)
    logging.getLogger("botstack.bot").info("first")
    logging.getLogger("telegram.ext.Updater").warning("second %s", TOKEN)

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2, lines  # the httpx INFO line (with the URL) was dropped
    for line in lines:
        assert line.split()[1] == "bot", line
    assert lines[0].endswith("botstack.bot: first")
    assert SECRET_PART not in "\n".join(lines)


def test_every_line_of_a_logged_traceback_names_the_program(restore_logging, capsys):
    setup_logging("api")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("botstack.api").exception("request failed")

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 1  # message line plus the traceback
    for line in lines:
        assert " api " in f" {line} ", line


def test_the_password_of_a_uri_is_masked_wherever_it_appears():
    from services.common.logs import redact

    text = ("ServerSelectionTimeoutError for mongodb://app:s3cr%40t@db:27017/?authSource=admin, "
            "retrying mongodb+srv://ops:hunter2@cluster.example.net/botstack; "
            "ProxyError via socks5://me:pr0xy-pw@10.0.0.9:1080 and HTTP://me:pr0xy-pw2@proxy:3128")
    masked = redact(text)
    assert "s3cr%40t" not in masked and "hunter2" not in masked and "pr0xy-pw" not in masked
    assert "mongodb://app:***@db:27017" in masked and "mongodb+srv://ops:***@cluster.example.net" in masked
    assert "socks5://me:***@10.0.0.9:1080" in masked and "HTTP://me:***@proxy:3128" in masked
    assert redact("see https://example.org/a:b@c and 12:30 at host@x") == "see https://example.org/a:b@c and 12:30 at host@x"


def test_a_line_said_thousands_of_times_is_said_once_a_minute_with_the_count():
    now = [1000.0]
    tally = Tally(60.0, clock=lambda: now[0])
    said = []
    for _ in range(5):  # a flood: the first is said at once, the rest counted
        said.append(tally.count())
    now[0] += 59.9
    said.append(tally.count())
    now[0] += 0.1  # a minute after the first line
    said.append(tally.count())
    assert said == [1, None, None, None, None, None, 6]
    assert tally.count() is None
    tally.reset()  # what it counted is over: the next is said at once, counting itself only
    assert tally.count() == 1
