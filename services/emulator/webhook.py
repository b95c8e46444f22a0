"""setWebhook, deleteWebhook and getWebhookInfo with the real server's rules and wording
(telegram-bot-api Client::process_set_webhook_query, do_set_webhook, JsonWebhookInfo).

- setWebhook with a URL: at most one per SET_INTERVAL_S per bot, else 429 retry after 1;
- same URL, secret and max_connections, no drop: "Webhook is already set" (allowed_updates still apply);
- otherwise a held getUpdates gets 409 "Conflict: terminated by setWebhook request", the old
  webhook is removed, pending updates dropped if asked, and only then the URL and secret_token
  (1-256 of A-Z a-z 0-9 _ -) are checked; a failed check leaves no webhook, as on the real server;
- the host must resolve; unlike api.telegram.org (and like a local Bot API server) http:// and any
  port are accepted, so a test can point the webhook at 127.0.0.1:<ephemeral port>;
- an emulator started with plain_http_webhooks (`--plain-http-webhooks`) delivers https:// URLs
  over plain http, standing in for the TLS-terminating proxy (Railway's edge, say) that production
  puts in front of a receiver; by default https means TLS, certificate checked, as on Telegram.
Delivery itself is delivery.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from services.emulator.errors import ApiError
from services.emulator.updates import DEFAULT_ALLOWED, UPDATE_TYPES

if TYPE_CHECKING:
    from services.emulator.state import BotState

SET_INTERVAL_S = 1.0
DEFAULT_MAX_CONNECTIONS = 40
MAX_CONNECTIONS = 100
SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]*")
CONFLICT_SET_WEBHOOK = "Conflict: terminated by setWebhook request"


@dataclass
class Webhook:
    url: str = ""
    target: str = ""  # the URL deliveries go to (a scheme added when the caller left it out)
    secret_token: str = ""
    max_connections: int = 0
    ip_address: str = ""
    last_error_date: int = 0
    last_error_message: str = ""
    generation: int = 0  # bumped on every change, so a delivery in flight knows it is stale
    next_set_at: float = 0.0
    plain_http: bool = False  # deliver https:// URLs over http, as behind a TLS-terminating proxy

    def record_error(self, message: str) -> None:
        self.last_error_date, self.last_error_message = int(time.time()), message

    def _replace(self, url: str = "", target: str = "", secret_token: str = "", max_connections: int = 0,
                 ip_address: str = "") -> None:
        self.url, self.target, self.secret_token = url, target, secret_token
        self.max_connections, self.ip_address = max_connections, ip_address
        self.last_error_date, self.last_error_message = 0, ""
        self.generation += 1


async def set_webhook(bot: BotState, url: str, secret_token: str = "", max_connections: int | None = None,
                      allowed_updates=None, drop_pending: bool = False) -> str:
    """Both setWebhook and deleteWebhook (url ""), as on the server. Returns the reply's description."""
    hook = bot.webhook
    if url:
        now = time.monotonic()
        if now < hook.next_set_at:
            raise ApiError.too_many_requests(1)
        hook.next_set_at = now + SET_INTERVAL_S
    max_connections = 0 if not url else max(1, min(max_connections or DEFAULT_MAX_CONNECTIONS, MAX_CONNECTIONS))
    secret_token = secret_token if url else ""
    if (url, secret_token, max_connections) == (hook.url, hook.secret_token, hook.max_connections) \
            and not drop_pending:
        if url:
            bot.set_allowed_updates(allowed_updates)
        return "Webhook is already set" if url else "Webhook is already deleted"
    if url:
        bot.abort_held_poll(CONFLICT_SET_WEBHOOK)
    was_set = bool(hook.url)
    hook._replace()
    bot.changed.notify()
    if drop_pending:
        bot.drop_pending()
    if not url:
        return "Webhook was deleted" if was_set else "Webhook is already deleted"
    target, host, port = _parse_url(url)
    if hook.plain_http and target.startswith("https://"):
        target = "http://" + target[len("https://"):]
    if len(secret_token) > 256:
        raise ApiError(400, "Bad Request: secret token is too long")
    if not SECRET_TOKEN.fullmatch(secret_token):
        raise ApiError(400, "Bad Request: secret token contains unallowed characters")
    ip_address = await _resolve(host, port)
    hook._replace(url, target, secret_token, max_connections, ip_address)
    bot.set_allowed_updates(allowed_updates)
    bot.changed.notify()
    bot.delivery.ensure_running()
    return "Webhook was set"


def webhook_info(bot: BotState) -> dict:
    hook = bot.webhook
    info: dict = {"url": hook.url, "has_custom_certificate": False, "pending_update_count": len(bot.pending)}
    if hook.last_error_date:
        info["last_error_date"] = hook.last_error_date
        info["last_error_message"] = hook.last_error_message
    if hook.max_connections:
        info["max_connections"] = hook.max_connections
    if hook.url:
        info["ip_address"] = hook.ip_address or "<unknown>"
    if bot.allowed_updates != DEFAULT_ALLOWED:
        info["allowed_updates"] = [name for name in UPDATE_TYPES if name in bot.allowed_updates]
    return info


def _parse_url(url: str) -> tuple[str, str, int]:
    target = url if "://" in url else f"https://{url}"  # the server's default protocol is https
    try:
        parts = urlsplit(target)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ApiError(400, "Bad Request: invalid webhook URL specified") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(400, "Bad Request: invalid webhook URL specified")
    return target, parts.hostname, port


async def _resolve(host: str, port: int) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ApiError(400, f"Bad Request: bad webhook: Failed to resolve host: {exc.strerror or exc}") from None
    return infos[0][4][0]
