"""Armed failures: the next call(s) of a method fail with a chosen Bot API error (a 429 with
retry_after, say), so tests can prove a bot obeys flood control without waiting for Telegram's.

The failure replaces the call entirely: nothing is sent or recorded, as when Telegram refuses.
A "black hole" (`{"method", "black_hole": true}`) takes the call and never answers it (until the
client gives up), for timeout tests. `"answer_every": N` makes it flaky: of every N calls the
last is answered and the others fail (a flaky proxy), `times` rounds of N.
"""

from __future__ import annotations

from collections import defaultdict

from services.emulator.errors import ApiError

DEFAULT_DESCRIPTIONS = {
    400: "Bad Request: injected failure",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


PASS = "pass"  # an armed slot that lets its call through ("answer_every")


class Faults:
    def __init__(self) -> None:
        self._armed: dict[str, list[ApiError | str | None]] = defaultdict(list)
        self.swallowed = 0

    def arm(self, spec: dict) -> int:
        """`spec`: {"method", "error_code", "retry_after"?, "description"?, "parameters"?, "times"?,
        "answer_every"?}.
        Returns how many failures are now armed for that method; {"method", "clear": true}
        disarms them all (a revoked token taken again)."""
        method = str(spec["method"]).lower()
        if spec.get("clear"):
            self._armed.pop(method, None)
            return 0
        if spec.get("black_hole"):
            self._armed[method].extend([None] * max(1, int(spec.get("times", 1))))
            return len(self._armed[method])
        code = int(spec.get("error_code", 429))
        parameters = dict(spec.get("parameters") or {})
        if code == 429:
            parameters["retry_after"] = int(spec.get("retry_after", parameters.get("retry_after", 1)))
            error = ApiError.too_many_requests(parameters["retry_after"])
            if spec.get("description"):
                error.description = str(spec["description"])
            error.parameters = parameters
        else:
            description = spec.get("description") or DEFAULT_DESCRIPTIONS.get(code, "Error")
            error = ApiError(code, str(description), parameters or None)
        every = max(1, int(spec.get("answer_every", 1)))
        rounds = [error] * (every - 1) + [PASS] if every > 1 else [error]
        self._armed[method].extend(rounds * max(1, int(spec.get("times", 1))))
        return len(self._armed[method])

    def check(self, method: str) -> bool:
        """Raise the next armed failure for `method` (case-insensitive, like the API's names);
        True when the call is to be swallowed (a black hole)."""
        armed = self._armed.get(method.lower())
        if armed:
            error = armed.pop(0)
            if error == PASS:
                return False
            if error is None:
                self.swallowed += 1
                return True
            raise error
        return False
