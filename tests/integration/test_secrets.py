"""The bot token never reaches a log line, in any container this run started.

Under pytest-xdist this reads what every worker archived so far; tests/conftest.py reads
everything once more when the whole run is over."""

import re

import pytest

from tests.conftest import run_logs

pytestmark = [pytest.mark.integration, pytest.mark.last]


def test_no_log_line_contains_the_bot_token(log_archive, emulator, bot_token, bot_id):
    out, err = emulator.container.get_logs()
    everything = run_logs() + log_archive.everything() + out.decode(errors="replace") + err.decode(errors="replace")
    assert run_logs(), "no container was archived: nothing to prove"
    secret = bot_token.split(":", 1)[1]
    assert secret not in everything
    assert bot_token not in everything
    assert not re.search(rf"bot{bot_id}:", everything)
    # Any token at all, including the webhook test's own: no `bot<digits>:` URL, nothing token-shaped.
    assert not re.search(r"bot\d+:", everything)
    assert not re.search(r"\d{8,}:[A-Za-z0-9_-]{30,}", everything)
    # The redaction really ran: the bot logged its start and the API base URL without the token.
    assert "Bot API http://telegram:8081/bot" in everything
