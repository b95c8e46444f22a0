"""`python -m services.common.probe URL`: exit 0 if URL answers 2xx within the timeout.

For Docker/compose HEALTHCHECK: the image has no curl, and this needs only the stdlib.
"""

from __future__ import annotations

import http.client
import sys
import urllib.error
import urllib.request


def check(url: str, timeout_s: float) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= response.status < 300, f"{response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{exc.code} {exc.read(300).decode(errors='replace')}"
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"


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
