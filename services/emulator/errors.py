"""The Bot API's error reply as an exception, so every failure leaves with the real envelope.

Raised anywhere in the emulator; server.py turns it into
{"ok": false, "error_code", "description"} plus "parameters" when there are any
(telegram-bot-api's Query::set_error / set_retry_after_error).
"""

from __future__ import annotations

import json


class ApiError(Exception):
    """A Bot API error reply: {"ok": false, "error_code", "description"[, "parameters"]}."""

    def __init__(self, code: int, description: str, parameters: dict | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    @classmethod
    def too_many_requests(cls, retry_after: int) -> ApiError:
        """429 exactly as the server words it, with the machine-readable delay clients obey."""
        return cls(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})

    def envelope(self) -> dict:
        body: dict = {"ok": False, "error_code": self.code, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def json_param(value, unparsable: str | None):
    """A parameter python-telegram-bot sends JSON-encoded in a form field, or already decoded
    (JSON bodies). Not JSON: ApiError(400, unparsable), or None when `unparsable` is None."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        if unparsable is None:
            return None
        raise ApiError(400, unparsable) from None
