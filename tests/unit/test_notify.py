"""Alerts leave through a short-lived notifier (healthcheck/notify.py) to Telegram and to apprise
URLs, against the real emulator over HTTP: a channel that refuses does not stop the others, and
what the admins and the logs see holds no secret."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from healthcheck.alerts import Alerts
from healthcheck.child import Killed, run_child
from healthcheck.notify import Channels, NotifierProcess, lanes, split_urls
from services.common.logs import redact
from services.emulator.inprocess import serve_in_thread
from services.emulator.server import create_app
from tests.unit.conftest import BOT_ID, TOKEN, wait_until

ADMIN = 4242


@pytest.fixture
def emulator():
    with serve_in_thread(create_app()) as url, httpx.Client(base_url=url, timeout=5) as control:
        yield url, control


def admin_messages(control: httpx.Client) -> list[str]:
    return [m["text"] for m in control.get(f"/_emulator/bots/{BOT_ID}/sent").json() if m.get("chat_id") == ADMIN]


def test_revoked_token_still_alerts_through_the_other_channel(emulator):
    url, control = emulator
    hook = f"json://{url.split('://')[1]}/_emulator/hooks/admins"
    control.post(f"/_emulator/bots/{BOT_ID}/fail-next", json={"method": "sendMessage", "error_code": 401})
    send = NotifierProcess(Channels(f"{url}/bot", TOKEN, [ADMIN], [hook]))

    t0 = time.monotonic()
    with pytest.raises(RuntimeError) as refused:
        send("bot: EXITED with 78 (a setting it refuses: its log says which)")
    assert time.monotonic() - t0 < 10, "a refused token is final: no backoff for it"
    assert str(refused.value) == f"telegram chat {ADMIN}: 401 Unauthorized"
    [received] = control.get("/_emulator/hooks/admins").json()
    assert received["title"] == "botstack" and received["message"].startswith("bot: EXITED with 78")
    assert admin_messages(control) == []

    send("bot: RUNNING again")  # both channels take the next one
    assert admin_messages(control) == ["bot: RUNNING again"]
    assert len(control.get("/_emulator/hooks/admins").json()) == 2


def test_a_429_is_waited_out_and_the_alert_delivered_once(emulator):
    url, control = emulator
    control.post(f"/_emulator/bots/{BOT_ID}/fail-next",
                 json={"method": "sendMessage", "error_code": 429, "retry_after": 1})
    t0 = time.monotonic()
    NotifierProcess(Channels(f"{url}/bot", TOKEN, [ADMIN]))("api: restarted (crash)")
    assert time.monotonic() - t0 >= 1.0
    assert admin_messages(control) == ["api: restarted (crash)"]


def test_a_channel_tried_again_does_not_hold_back_the_others(emulator):
    """Telegram out of reach (502s: tried again for up to ~30 s) is exactly when the other channel
    must tell the admins, at once and not after Telegram's retries."""
    url, control = emulator
    hook = f"json://{url.split('://')[1]}/_emulator/hooks/ops"
    control.post(f"/_emulator/bots/{BOT_ID}/fail-next",
                 json={"method": "sendMessage", "error_code": 502, "description": "Bad Gateway", "times": 2})
    send = NotifierProcess(Channels(f"{url}/bot", TOKEN, [ADMIN], [hook]))
    child = threading.Thread(target=send, args=("bot: the Bot API has failed for 16 s",))
    t0 = time.monotonic()
    child.start()
    wait_until(lambda: control.get("/_emulator/hooks/ops").json(), 5, what="the alert through the other channel")
    told_s = time.monotonic() - t0
    assert admin_messages(control) == [], "Telegram was still being tried when the others were told"
    child.join(30)
    assert not child.is_alive()
    assert told_s < 2.0, f"the other channel waited for Telegram's retries: {told_s:.1f} s"
    assert admin_messages(control) == ["bot: the Bot API has failed for 16 s"], "Telegram's third try took it, once"
    assert len(control.get("/_emulator/hooks/ops").json()) == 1


def test_alerts_to_a_channel_tried_again_do_not_hold_back_the_next_ones_elsewhere(emulator):
    """Each channel has a lane of its own in the sidecar: while Telegram's copy of the first alert
    is tried again, the next alert reaches the other channel at once; each channel gets both,
    in order."""
    url, control = emulator
    hook = f"json://{url.split('://')[1]}/_emulator/hooks/lanes"
    control.post(f"/_emulator/bots/{BOT_ID}/fail-next",
                 json={"method": "sendMessage", "error_code": 502, "description": "Bad Gateway", "times": 2})
    channels = Channels(f"{url}/bot", TOKEN, [ADMIN], [hook])
    alerts = Alerts(lanes(channels), secrets=channels.secrets())
    t0 = time.monotonic()
    alerts.event("bot:api-down", "bot: the Bot API has failed for 16 s")
    alerts.event("web:restart", "web died and was restarted")

    def hooked() -> list[str]:
        return [h["message"] for h in control.get("/_emulator/hooks/lanes").json()]

    wait_until(lambda: len(hooked()) == 2, 5, what="both alerts through the other channel")
    both_s = time.monotonic() - t0
    assert admin_messages(control) == [], "Telegram was still being tried when the others were told"
    alerts.drain(30)
    expected = ["botstack: bot: the Bot API has failed for 16 s", "botstack: web died and was restarted"]
    assert hooked() == expected and admin_messages(control) == expected
    assert both_s < 3.0, f"the second alert waited for Telegram's retries of the first: {both_s:.1f} s"


@pytest.fixture
def closed_port():
    """A loopback port bound but never listening: a connection to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_an_unreachable_channel_is_named_without_its_secrets(emulator, closed_port):
    url, control = emulator
    hook = f"json://alerts:s3cret-pass-word@127.0.0.1:{closed_port}/hooks/very-long-webhook-token-123"
    send = NotifierProcess(Channels(f"{url}/bot", TOKEN, [ADMIN], [hook]))
    with pytest.raises(RuntimeError) as failed:
        send("web: restarted (hang)")
    line = redact(str(failed.value), send.channels.secrets())
    assert line.startswith("json://alerts:") and "Connection error" in line, line
    assert "s3cret" not in line and "very-long-webhook-token-123" not in line and TOKEN not in line
    assert admin_messages(control) == ["web: restarted (hang)"], "one channel's failure undid another's delivery"


def test_a_refused_alert_is_one_log_line_naming_the_channel(emulator, caplog):
    url, control = emulator
    control.post(f"/_emulator/bots/{BOT_ID}/fail-next", json={"method": "sendMessage", "error_code": 401})
    channels = Channels(f"{url}/bot", TOKEN, [ADMIN])
    alerts = Alerts(NotifierProcess(channels), secrets=channels.secrets())
    alerts.event("bot:fatal", "bot: EXITED with 78")
    alerts.drain(30)
    assert [r.getMessage() for r in caplog.records] == [f"alert not delivered: telegram chat {ADMIN}: 401 Unauthorized"]


def test_a_child_ended_by_a_signal_is_said_to_be_killed(tmp_path, monkeypatch):
    (tmp_path / "taken_by_the_kernel.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    with pytest.raises(Killed, match="killed by signal 9"):
        run_child("taken_by_the_kernel", "{}", 30)


def test_a_notifier_the_kernel_killed_is_run_once_more_and_the_alert_delivered_once(emulator, monkeypatch):
    """Helpers go first when the container runs out of memory (services/common/oom.py): the
    notifier taken by the kernel is run again, and the alert arrives."""
    url, control = emulator
    calls = []

    def first_one_killed(module: str, payload: str, timeout_s: float) -> None:
        calls.append(module)
        if len(calls) == 1:
            raise Killed("killed by signal 9")
        run_child(module, payload, timeout_s)

    monkeypatch.setattr("healthcheck.notify.run_child", first_one_killed)
    monkeypatch.setattr("healthcheck.notify.KILLED_RETRY_S", 0.01)
    hook = f"json://{url.split('://')[1]}/_emulator/hooks/killed"
    NotifierProcess(Channels(urls=[hook]))("bot died (killed by the kernel: out of memory)")
    assert calls == ["healthcheck.notify"] * 2
    assert [h["message"] for h in control.get("/_emulator/hooks/killed").json()] == [
        "bot died (killed by the kernel: out of memory)"]


def test_alert_urls_are_split_as_apprise_reads_them():
    assert split_urls("json://a:1/x, mailto://u:p@h?to=a,b  slack://T/B/C") == [
        "json://a:1/x", "mailto://u:p@h?to=a,b", "slack://T/B/C"]


def test_an_unknown_alert_url_stops_only_the_sidecar_with_one_line():
    env = {**os.environ, "BOTSTACK_ALERT_URLS": "json://h:1/x,nonsense://user:hunter2-password@example/abc",
           "BOTSTACK_RUN_DIR": "/tmp"}
    child = subprocess.run([sys.executable, "-m", "healthcheck.plan"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert child.returncode == 78
    assert child.stderr == ("healthcheck: configuration error: BOTSTACK_ALERT_URLS: nonsense://... is not an alert "
                            "URL apprise knows (see its list of services)\n")


def test_the_notifier_gives_up_within_its_timeout(emulator):
    url, control = emulator
    control.post(f"/_emulator/bots/{BOT_ID}/fail-next", json={"method": "sendMessage", "black_hole": True})
    send = NotifierProcess(Channels(f"{url}/bot", TOKEN, [ADMIN]), timeout_s=3)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="no answer within 3 s"):
        send("mongodb: hung")
    assert time.monotonic() - t0 < 8


def test_botstack_alert_proves_each_channel_and_names_the_one_that_fails(emulator):
    url, control = emulator
    env = {**os.environ, "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_BASE_URL": f"{url}/bot",
           "BOTSTACK_ALERT_CHAT_IDS": str(ADMIN),
           "BOTSTACK_ALERT_URLS": f"json://{url.split('://')[1]}/_emulator/hooks/ops"}

    def botstack_alert() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "services.cli", "alert", "checking the channels"], env=env,
                              capture_output=True, text=True, timeout=60)

    sent = botstack_alert()
    assert (sent.returncode, sent.stdout) == (0, f"delivered to telegram chat {ADMIN}, json://...\n"), sent.stderr
    assert admin_messages(control) == ["botstack: checking the channels"]
    control.post(f"/_emulator/bots/{BOT_ID}/fail-next", json={"method": "sendMessage", "error_code": 401})
    refused = botstack_alert()
    assert (refused.returncode, refused.stdout) == (1, f"not delivered: telegram chat {ADMIN}: 401 Unauthorized\n")
    assert [h["message"] for h in control.get("/_emulator/hooks/ops").json()] == ["botstack: checking the channels"] * 2
