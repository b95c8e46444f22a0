"""Foundation figures, measured side by side in one run (not a test: it asserts nothing).

    python bench/foundation.py [--runs 3]

Needs the images the integration tests build (run `pytest -m integration` first) and the
emulator. Reports:
- cold start: `docker run` → all five programs RUNNING, /ready 200 and the bot answering
  /version (median of --runs);
- image sizes of the `app` target and of the offline test image;
- code-only rebuild vs full rebuild of the `app` target (same builder as the tests), as a ratio;
- total resident memory of every process in the container once healthy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
os.environ.setdefault("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
from testcontainers.core.container import DockerContainer  # noqa: E402
from testcontainers.core.network import Network  # noqa: E402

from tests.integration.harness import Emulator, Stack, http_get, wait_until  # noqa: E402

APP, OFFLINE, EMULATOR = "botstack:test-app", "botstack:test-offline", "botstack:test-emulator"
BASE = os.environ.get("BOTSTACK_TEST_BASE_IMAGE", "botstack-ci/python:bookworm")
TOKEN = "1234567890:" + "b" * 35
# Memory of every other process the script can see, in KiB: resident (RSS: shared library pages
# counted once per process) and proportional (PSS: each shared page divided among the processes
# that map it, across containers too, so the sum is what the processes cost the machine).
MEMORY_SCRIPT = r"""
import json, os
total = {"rss": 0, "pss": 0}
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == os.getpid():
        continue
    try:
        status = open(f"/proc/{pid}/status").read()
        rollup = open(f"/proc/{pid}/smaps_rollup").read()
    except OSError:
        continue
    for text, key, field in ((status, "rss", "VmRSS:"), (rollup, "pss", "Pss:")):
        for line in text.splitlines():
            if line.startswith(field):
                total[key] += int(line.split()[1])
print(json.dumps(total))
"""


def memory_kib(output: str | bytes) -> dict[str, int]:
    """MEMORY_SCRIPT's answer."""
    text = output.decode() if isinstance(output, bytes) else output
    return json.loads(text.strip().splitlines()[-1])


def cold_start(network: Network, emulator: Emulator) -> tuple[float, int]:
    container = (
        DockerContainer(OFFLINE).with_network(network).with_exposed_ports(8000, 8080)
        .with_env("TELEGRAM_BOT_TOKEN", TOKEN).with_env("BOTSTACK_WEB_PASSWORD", "bench-dashboard-password").with_env("TELEGRAM_API_BASE_URL", "http://telegram:8081/bot")
    )
    t0 = time.monotonic()
    container.start()
    try:
        stack = Stack(container, bot_id=TOKEN.split(":")[0])
        wait_until(stack.all_running, 120, "all RUNNING", interval_s=0.1)
        wait_until(stack.ready, 120, "/ready", interval_s=0.1)
        emulator.ask(stack.bot_id, "/version", timeout_s=60)
        elapsed = time.monotonic() - t0
        code, out = stack.exec(["python", "-c", MEMORY_SCRIPT])
        return elapsed, memory_kib(out)["rss"]
    finally:
        container.stop()


def build_time(client: docker.DockerClient, context: Path, nocache: bool) -> float:
    t0 = time.monotonic()
    client.images.build(path=str(context), target="app", tag="botstack:bench-app", nocache=nocache,
                        buildargs={"BASE_IMAGE": BASE}, rm=True)
    return time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    client = docker.from_env()

    sizes = {tag: client.images.get(tag).attrs["Size"] / 1e6 for tag in (APP, OFFLINE)}

    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp) / "ctx"
        shutil.copytree(ROOT, context, ignore=shutil.ignore_patterns(".git", "tests", "bench", "__pycache__"))
        full = build_time(client, context, nocache=True)
        build_time(client, context, nocache=False)  # warm the cache for this exact tree
        app_py = context / "services" / "api" / "app.py"
        app_py.write_text(app_py.read_text() + "\n# bench: a code-only change\n")
        code_only = build_time(client, context, nocache=False)
    client.images.remove("botstack:bench-app", force=True)

    network = Network()
    network.create()
    emu = (
        DockerContainer(EMULATOR).with_network(network).with_network_aliases("telegram").with_exposed_ports(8081)
    )
    emu.start()
    try:
        url = f"http://127.0.0.1:{emu.get_exposed_port(8081)}"
        wait_until(lambda: http_get(f"{url}/_emulator/health").status_code == 200, 30, "emulator")
        runs = [cold_start(network, Emulator(emu, url)) for _ in range(args.runs)]
    finally:
        emu.stop()
        network.remove()

    starts = [r[0] for r in runs]
    rss = [r[1] / 1024 for r in runs]
    print(f"cold start (docker run -> 5 RUNNING, /ready 200, bot answers): "
          f"median {statistics.median(starts):.1f} s, runs {', '.join(f'{s:.1f}' for s in starts)}")
    print(f"total RSS of all processes once healthy: median {statistics.median(rss):.0f} MiB")
    print(f"image size: app {sizes[APP]:.0f} MB, offline test image {sizes[OFFLINE]:.0f} MB")
    print(f"app target build: full (no cache) {full:.1f} s, code-only change {code_only:.1f} s, "
          f"ratio code-only/full {code_only / full:.2f}")


if __name__ == "__main__":
    main()
