"""A proxy set for the outside world never carries the container's own traffic.

Users behind a proxy (or reaching Telegram through one) set HTTP_PROXY / HTTPS_PROXY /
ALL_PROXY for the whole container, often without NO_PROXY for loopback. The bot's calls to
Telegram must honour them; the sidecar's probes, the API's webhook forwarding to the bot and
`botstack deploy`'s check of the new build all talk to 127.0.0.1 and must not: through a proxy
they fail, and the sidecar would restart healthy programs forever.

Here the proxy is a closed port (harness.PROXY_ENV), so any loopback request sent through it
fails at once; `botstack deploy` runs with it in tests/integration/test_deploy.py.
"""

from __future__ import annotations

import pytest

from tests.integration.harness import PROXY_ENV, figure, identities, new_token, wait_until

pytestmark = pytest.mark.integration

WATCH_S = 20  # several of the probes' periods and failure thresholds (services/*/probe.py)


def test_proxy_settings_leave_loopback_alone(start_stack, emulator):
    token = new_token()
    # Alerts on: the sidecar builds its Telegram client (with the SOCKS proxy) at start.
    stack = start_stack(aliases=("proxied",), TELEGRAM_BOT_TOKEN=token, BOTSTACK_ALERT_CHAT_IDS="4242",
                        TELEGRAM_WEBHOOK_URL="https://proxied:8000/telegram/webhook", **PROXY_ENV)
    stack.wait_healthy()
    wait_until(lambda: stack.health()[1].startswith("healthy"), 60, "a healthy verdict")
    wait_until(lambda: emulator.call(token, "getWebhookInfo")["result"]["url"], 30, "the webhook set")
    before = stack.programs()

    # The Docker HEALTHCHECK probe, run as the platform runs it, with the proxy in its environment.
    code, out = stack.exec(["python", "-m", "services.common.probe", "http://127.0.0.1:8000/health", "2"])
    assert code == 0, out

    # Webhook updates reach the bot through the API's forwarding, while the probes keep running.
    update_ids = [emulator.inject(stack.bot_id, "/version", user={"id": 8_100_000 + n, "first_name": f"P{n}"})
                  for n in range(10)]
    for update_id in update_ids:
        assert "git_sha" in emulator.reply_to(stack.bot_id, update_id)["text"]
    t0 = before["api"]["now"]
    wait_until(lambda: stack.programs()["api"]["now"] - t0 >= WATCH_S, WATCH_S + 30, "the watch to pass",
               interval_s=1)

    assert identities(stack.programs()) == identities(before), "a program was restarted"
    logs = stack.logs()
    assert "restart program=" not in logs and "Traceback" not in logs
    assert stack.health()[1].startswith("healthy")
    figure(f"proxy in the environment: 10 webhook updates answered, {WATCH_S} s of probes, 0 restarts")
