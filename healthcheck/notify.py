"""Delivering one alert: to the admins' Telegram chats and to any other channel (apprise URLs).

Telegram alone is not enough: the alerts go out with the bot's own token, so a token revoked in
@BotFather, a Bot API outage or a network that cannot reach Telegram silences exactly the alerts
that would say so. BOTSTACK_ALERT_URLS adds channels that do not depend on the bot: Slack,
Discord, e-mail, ntfy, a JSON webhook... any URL apprise knows (https://github.com/caronc/apprise).

The sidecar runs for the container's whole life and alerts rarely, so it does not load httpx
and apprise (about 20 MiB) to stay ready for that: `NotifierProcess` hands each alert to a
short-lived `python -m healthcheck.notify`, as healthcheck/events.py does for MongoDB. The child
tries every channel once and at the same time (Telegram's 429 and transient failures are
retried, without holding back the other channels), says on stderr which ones failed and why,
and exits 1 if any did; a channel that took the alert is never sent it twice.
"""

from __future__ import annotations

import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import partial

from healthcheck.child import Killed, run_child

TIMEOUT_S = 120.0  # the whole delivery, retries included; then the child is killed
HTTP_TIMEOUT_S = 10.0
TELEGRAM_ATTEMPTS = 5
KILLED_RETRY_S = 2.0  # a notifier the kernel killed is run again after this: what else it killed is freed by then
TITLE = "botstack"


@dataclass
class Channels:
    """Where an alert goes. The token and the URLs are secrets: they reach the child on stdin."""

    api_base_url: str = ""
    token: str | None = None
    chat_ids: list[int] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.urls or (self.chat_ids and self.token))

    def secrets(self) -> tuple[str, ...]:
        """What no log line may show: the token, and each URL with its password and any long
        part (webhook tokens live in the path: slack://TokenA/TokenB/TokenC)."""
        parts = [self.token or ""]
        for url in self.urls:
            parts += [url, *(p for p in re.split(r"[/:@?&=#,]+", url.split("://", 1)[-1]) if len(p) >= 12)]
            password = re.match(r"[a-z0-9+.-]+://[^:@/]*:([^@/]+)@", url, re.I)
            parts += [password.group(1)] if password else []
        return tuple(sorted({p for p in parts if p}, key=len, reverse=True))


def split_urls(text: str) -> list[str]:
    """BOTSTACK_ALERT_URLS as apprise reads it: separated by spaces or commas (a comma inside a
    URL's query, as in mailto://...?to=a,b, stays with its URL)."""
    from apprise.utils.parse import parse_urls

    return [u for u in parse_urls(text) if u]


def channels_from(settings) -> Channels:
    """The channels the settings name (the sidecar's plan, `botstack alert`)."""
    urls = split_urls(settings.alert_urls.get_secret_value()) if settings.alert_urls else []
    token = settings.telegram_bot_token.get_secret_value() if settings.telegram_bot_token else None
    return Channels(settings.telegram_api_base_url, token, settings.alert_chat_ids, urls)


def url_problems(urls: list[str]) -> list[str]:
    """One line per URL apprise cannot use, shown with its secrets masked."""
    if not urls:
        return []  # apprise (5 MiB, 0.1 s) only for a sidecar that has URLs to check
    import apprise

    problems = []
    for url in urls:
        if apprise.Apprise.instantiate(url, suppress_exceptions=True) is None:
            scheme = url.split("://", 1)[0] if "://" in url else url[:12]
            problems.append(f"{scheme}://... is not an alert URL apprise knows (see its list of services)")
    return problems


class NotifierProcess:
    """`send(text)` for healthcheck.alerts.Alerts, done by a short-lived child per alert."""

    def __init__(self, channels: Channels, timeout_s: float = TIMEOUT_S) -> None:
        self.channels = channels
        self.timeout_s = timeout_s

    def __call__(self, text: str) -> None:
        payload = json.dumps({"text": text, "channels": asdict(self.channels)})
        try:
            run_child("healthcheck.notify", payload, self.timeout_s)
        except Killed:  # the kernel's OOM killer (helpers go first): once more, the memory freed by then
            time.sleep(KILLED_RETRY_S)
            run_child("healthcheck.notify", payload, self.timeout_s)


def lanes(channels: Channels) -> list[NotifierProcess]:
    """A notifier per channel (all the Telegram chats share one: one token, one Bot API), each
    for a lane of its own in healthcheck.alerts.Alerts."""
    telegram = [NotifierProcess(replace(channels, urls=[]))] if channels.token and channels.chat_ids else []
    return telegram + [NotifierProcess(replace(channels, token=None, chat_ids=[], urls=[url])) for url in channels.urls]


def to_telegram(channels: Channels, chat_id: int, text: str) -> list[str]:
    """sendMessage to one admin chat. A 429 waits its retry_after and a network error or a 5xx
    is tried again (up to TELEGRAM_ATTEMPTS, about 30 s); any other refusal (401: the token is
    revoked, 400: no such chat) is final at once. Returns a line naming the chat if not reached."""
    import httpx

    with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
        for attempt in range(1, TELEGRAM_ATTEMPTS + 1):
            code = None
            try:
                response = client.post(f"{channels.api_base_url}{channels.token}/sendMessage",
                                       json={"chat_id": chat_id, "text": text})
                code = response.status_code
                body = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                body = {"description": f"{type(exc).__name__} (HTTP {code})" if code else type(exc).__name__}
            if body.get("ok"):
                return []
            code = body.get("error_code") or code
            retry_after = (body.get("parameters") or {}).get("retry_after")
            if (code is not None and code < 500 and code != 429) or attempt == TELEGRAM_ATTEMPTS:
                return [f"telegram chat {chat_id}: {code or ''} {body.get('description')}".replace("  ", " ")]
            time.sleep(float(retry_after) if retry_after else min(30.0, 2.0 ** attempt))
    return []


def to_apprise(urls: list[str], text: str) -> list[str]:
    """Each URL on its own, so one that fails does not hide the others; apprise's own log lines
    (its secure logging masks passwords) give the reason."""
    import logging

    import apprise

    failed = []
    for url in urls:
        instance = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        if instance is None:
            failed.append(f"{url.split('://', 1)[0]}://...: not an alert URL apprise knows")
            continue
        with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
            ok = instance.notify(body=text, title=TITLE)
        if not ok:
            reason = captured.getvalue().strip().splitlines()
            failed.append(f"{instance.url(privacy=True).split('?', 1)[0]}: {reason[-1] if reason else 'refused'}")
    return failed


def deliver(channels: Channels, text: str) -> list[str]:
    """Every channel at once, each on its own thread: a channel that is down and tried again
    (Telegram's 5xx for ~30 s: exactly when the Bot API is out of reach) must not hold back the
    one that would tell the admins. The apprise URLs share one thread, in turn, because each
    one's reason is read from apprise's log while it runs."""
    jobs = [partial(to_telegram, channels, chat_id, text) for chat_id in channels.chat_ids if channels.token]
    if channels.urls:
        jobs.append(partial(to_apprise, channels.urls, text))
    with ThreadPoolExecutor(max_workers=max(1, len(jobs)), thread_name_prefix="channel") as pool:
        return [line for failed in pool.map(lambda job: job(), jobs) for line in failed]


def main() -> int:
    import logging

    from services.common.logs import redact

    logging.getLogger("apprise").addHandler(logging.NullHandler())  # its reasons are captured per URL
    request = json.load(sys.stdin)
    channels = Channels(**request["channels"])
    failed = deliver(channels, request["text"])
    for line in failed:
        sys.stderr.write(redact(line, channels.secrets())[:300] + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
