"""Backup size and time for a database of 10,000 users (not a test: it asserts nothing).

    python bench/operations.py

Needs the offline image the integration tests build. Starts one stack, fills `users` with
10,000 documents shaped like the bot's, times `botstack backup` and reports the file size.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
os.environ.setdefault("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testcontainers.core.container import DockerContainer  # noqa: E402

from tests.integration.harness import Stack, wait_until  # noqa: E402

FILL = r"""
from datetime import datetime, timezone
from pymongo import MongoClient
db = MongoClient('mongodb://127.0.0.1:27017/?directConnection=true').botstack
now = datetime.now(timezone.utc)
db.users.insert_many([{'_id': 10**6 + i, 'first_name': f'User {i}', 'username': f'user_{i}',
                       'language_code': 'en', 'first_seen': now, 'last_seen': now} for i in range(10000)])
print(db.users.count_documents({}))
"""


def main() -> None:
    container = DockerContainer("botstack:test-offline").with_exposed_ports(8000, 8080)
    container.start()
    try:
        stack = Stack(container)
        wait_until(stack.ready, 120, "/ready")
        code, out = stack.exec(["python", "-c", FILL])
        assert code == 0, out
        runs = []
        for _ in range(3):
            t0 = time.monotonic()
            code, out = stack.exec(["botstack", "backup"])
            runs.append(time.monotonic() - t0)
            assert code == 0, out
        size = int(re.search(r"\((\d+) bytes", out).group(1))
        print(f"backup of 10,000 users ({out.strip().splitlines()[0].split()[1].rsplit('/', 1)[1]}): "
              f"{size / 1024:.0f} KiB, {', '.join(f'{t:.1f}' for t in runs)} s (3 runs, incl. docker exec)")
    finally:
        container.stop()


if __name__ == "__main__":
    main()
