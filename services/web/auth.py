"""Who may use the dashboard: a login with BOTSTACK_WEB_PASSWORD (or the admin token), kept in
a signed session cookie (Starlette's SessionMiddleware: HttpOnly, SameSite=strict, Secure
behind https with BOTSTACK_WEB_SECURE_COOKIE).

Without credentials a production dashboard refuses to start (exit 78, naming the variable),
unless BOTSTACK_WEB_READ_ONLY=true: then anyone who reaches the port may read, and nobody may
act. A page asked for without a session redirects to /login; data (JSON, fragments) answers
401; an action answers 403.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlparse

from fastapi import Request

from services.common.settings import EX_CONFIG, Settings

SESSION_KEY = "who"


class Access:
    def __init__(self, settings: Settings) -> None:
        secret = settings.web_password or settings.admin_token
        self.secret = secret.get_secret_value() if secret else None
        self.read_only = settings.web_read_only
        self.session_s = settings.web_session_hours * 3600

    def refusal(self, settings: Settings) -> str | None:
        """Why this dashboard may not start, or None."""
        return settings.config_problems.get("web")  # a password required: every program's verdict says so

    def cookie_key(self) -> str:
        """The session signing key, derived from the password: changing it logs everyone out."""
        material = (self.secret or "read-only").encode()
        return hashlib.sha256(b"botstack-web-session:" + material).hexdigest()

    def check_password(self, given: str) -> bool:
        return self.secret is not None and hmac.compare_digest(given.encode(), self.secret.encode())

    def login(self, request: Request, who: str) -> None:
        request.session.clear()
        request.session[SESSION_KEY] = {"who": who[:64], "until": time.time() + self.session_s}

    def who(self, request: Request) -> str | None:
        entry = request.session.get(SESSION_KEY)
        if isinstance(entry, dict) and entry.get("until", 0) > time.time():
            return str(entry.get("who") or "admin")
        return None

    def may_read(self, request: Request) -> bool:
        return self.read_only or self.who(request) is not None

    def may_act(self, request: Request) -> bool:
        return not self.read_only and self.who(request) is not None


def safe_next(target: str | None) -> str:
    """Only a path on this site: a login must not redirect anywhere else."""
    if not target:
        return "/"
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


EXIT_REFUSED = EX_CONFIG
