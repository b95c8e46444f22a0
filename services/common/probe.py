"""`python -m services.common.probe URL`: exit 0 if URL answers 2xx within the timeout.

For Docker/compose HEALTHCHECK: the image has no curl, and this needs only the stdlib.

A probe asks the container's own programs, on loopback, so it connects straight to them with
http.client and never through HTTP_PROXY / ALL_PROXY: users set those for the way out (often
with no NO_PROXY for 127.0.0.1), and urllib would send the probe to the proxy, where it fails
and the sidecar would restart a healthy program again and again. (It also keeps urllib.request
out of the sidecar, which runs for the container's whole life.)
"""

from __future__ import annotations

import http.client
import json
import sys
from urllib.parse import urlsplit


def check(url: str, timeout_s: float) -> tuple[bool, str]:
    try:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http:// URL: {url}")
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout_s)
        try:
            conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
            response = conn.getresponse()
            if 200 <= response.status < 300:
                return True, f"{response.status}"
            return False, f"{response.status} {reason(response.read(1000).decode(errors='replace'))}"
        finally:
            conn.close()
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"


def reason(body: str) -> str:
    """Our programs explain a refusal in JSON ({"reason": ...} or FastAPI's {"detail": ...}):
    its words, for the verdict and the admins' alert, not the whole document."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:300]
    words = next((doc[k] for k in ("reason", "detail") if isinstance(doc, dict) and isinstance(doc.get(k), str)), body)
    return words[:300]


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 2
    timeout_s = float(argv[1]) if len(argv) > 1 else 3.0
    ok, detail = check(argv[0], timeout_s)
    print(f"{argv[0]}: {detail}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
