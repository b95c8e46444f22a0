"""Update throughput before and after the durable inbox, measured side by side in one run (not
a test: it asserts nothing).

    python bench/inbox_throughput.py [--before REF] [--updates 1000] [--chats 200] [--repeat 3]

Builds the offline test image (app target + FerretDB stand-in for mongod) of git REF (default:
the last commit before the inbox) and of the working tree, then for each: stops the bot, queues
N `/start` updates from C users (one MongoDB upsert and one reply each), starts the bot and
times the replies from the first to the last (by the emulator's clock, as it took each one).
The emulator's flood control and the bot's rate limiter are off: Telegram itself would cap
replies at 30/s, and this measures what the bot can handle. The setups take turns, --repeat
times (run-to-run noise on the 2-core CI machine is about 15 %). Reports each setup's median
updates/s (and every run's) and the ratio, and both once more with one update at a time
(BOTSTACK_INBOX_CONCURRENCY=1; "before" only if REF has that setting), which separates the
store's write contention (the stand-in, FerretDB on SQLite, takes one writer at a time) from
the inbox's round trips and writes per update.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
os.environ.setdefault("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from testcontainers.core.container import DockerContainer  # noqa: E402
from testcontainers.core.network import Network  # noqa: E402

from tests.integration.harness import Emulator, Stack, http_get, wait_until  # noqa: E402

BASE = os.environ.get("BOTSTACK_TEST_BASE_IMAGE", "botstack-ci/python:bookworm")
BEFORE = "8d25684"  # main before the inbox
# CPU seconds used so far by the processes of a container, by what they are.
CPU_SCRIPT = r"""
import json, os
tick = os.sysconf("SC_CLK_TCK")
use = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == os.getpid():
        continue
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    name = next((n for k, n in (("ferretdb", "database"), ("mongod ", "database"), ("services.bot", "bot"),
                                ("services.emulator", "emulator")) if k in cmd), "other")
    use[name] = use.get(name, 0) + (int(fields[11]) + int(fields[12])) / tick
print(json.dumps(use))
"""


def build(source: Path, tag: str) -> str:
    """The app target of `source`, then this checkout's test-only layer on it (the stand-in
    mongod): the same database for both."""
    def docker_build(*args: str) -> None:
        subprocess.run(["docker", "build", "-q", *args], check=True, stdout=subprocess.DEVNULL)

    docker_build("--target", "app", "--build-arg", f"BASE_IMAGE={BASE}", "-t", f"{tag}-app", str(source))
    docker_build("--build-arg", f"APP_IMAGE={tag}-app", "-t", tag, str(ROOT / "tests/integration/offline"))
    return tag


def cpu(*containers: DockerContainer) -> dict[str, float]:
    use: dict[str, float] = {}
    for container in containers:
        out = container.exec(["python", "-c", CPU_SCRIPT]).output
        for name, seconds in json.loads(out.decode().strip().splitlines()[-1]).items():
            use[name] = use.get(name, 0.0) + seconds
    return use


def measure(image: str, network: Network, emulator: Emulator, updates: int, chats: int, n: int,
            env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """Updates/s from the first reply to the last, and CPU seconds per update of each kind of
    process from the bot's start to the last reply (the bot's own start included)."""
    token = f"{9_100_000_000 + n}:" + "t" * 35
    bot = token.split(":")[0]
    container = (DockerContainer(image).with_network(network).with_exposed_ports(8000, 8080)
                 .with_env("TELEGRAM_BOT_TOKEN", token).with_env("BOTSTACK_WEB_READ_ONLY", "true").with_env("TELEGRAM_API_BASE_URL", "http://telegram:8081/bot")
                 .with_env("BOTSTACK_RATE_OVERALL_PER_S", "0").with_env("BOTSTACK_RATE_CHAT_PER_S", "0")
                 .with_env("BOTSTACK_RATE_GROUP_PER_MIN", "0"))
    for name, value in env.items():
        container.with_env(name, value)
    container.start()
    try:
        stack = Stack(container, bot_id=bot)
        stack.wait_healthy()
        emulator.ask(bot, "/start")  # warm: schema migrated, lease held
        stack.rpc("stopProcess('bot')")
        ids = emulator.inject_many(bot, [("/start", {"id": 8_000_000 + i % chats, "first_name": f"C{i % chats}"})
                                         for i in range(updates)])
        wanted = set(ids)
        before = cpu(container, emulator.container)
        t0 = time.monotonic()
        stack.rpc("startProcess('bot')")
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            sent = httpx.get(f"{emulator.url}/_emulator/bots/{bot}/sent", timeout=10).json()
            replies = {m["reply_to_update_id"]: m["sent_at"] for m in sent if m.get("reply_to_update_id") in wanted}
            if len(replies) == updates:
                now = time.monotonic()
                after = cpu(container, emulator.container)
                used = {name: (after[name] - before.get(name, 0)) / updates for name in after}
                used["cores busy"] = sum(used.values()) * updates / (now - t0)
                first, last = min(replies.values()), max(replies.values())  # the emulator's clock
                return (updates - 1) / max(last - first, 1e-3), used
            time.sleep(0.2)
        raise TimeoutError(f"{image}: not all {updates} updates answered in 600 s")
    finally:
        container.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help="git ref measured as 'before'")
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each setup, taking turns")
    args = parser.parse_args()
    settings = subprocess.run(["git", "-C", str(ROOT), "show", f"{args.before}:services/common/settings.py"],
                              capture_output=True, text=True, check=True).stdout
    has_inbox_concurrency = "inbox_concurrency" in settings
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", tmp, args.before], check=True,
                       capture_output=True)
        try:
            before = build(Path(tmp), "botstack:bench-before")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", tmp], capture_output=True)
    after = build(ROOT, "botstack:bench-after")
    subprocess.run(["docker", "build", "-q", "--target", "emulator", "--build-arg", f"BASE_IMAGE={BASE}",
                    "-t", "botstack:bench-emulator", str(ROOT)], check=True, stdout=subprocess.DEVNULL)
    network = Network()
    network.create()
    emu = (DockerContainer("botstack:bench-emulator").with_network(network).with_network_aliases("telegram")
           .with_exposed_ports(8081)
           .with_command(["python", "-m", "services.emulator", "--host", "0.0.0.0", "--port", "8081",
                          "--no-flood-control"]))
    emu.start()
    try:
        emulator = Emulator(emu, f"http://{emu.get_container_host_ip()}:{emu.get_exposed_port(8081)}")
        wait_until(lambda: http_get(f"{emulator.url}/_emulator/health").status_code == 200, 30, "the emulator")
        alone = {"BOTSTACK_INBOX_CONCURRENCY": "1"}
        runs = [("before", before, {}), ("after", after, {})]
        if has_inbox_concurrency:  # a ref before the inbox has no such setting
            runs.append(("before, 1 at a time", before, alone))
        runs.append(("after, 1 at a time", after, alone))
        measured: dict[str, list[tuple[float, dict[str, float]]]] = {name: [] for name, _, _ in runs}
        for turn in range(args.repeat):
            for i, (name, image, env) in enumerate(runs):
                measured[name].append(measure(image, network, emulator, args.updates, args.chats,
                                              turn * len(runs) + i, env))
    finally:
        emu.stop()
        network.remove()
    print(f"{args.updates} queued /start updates over {args.chats} chats (one upsert + one reply each):")
    medians = {name: (statistics.median(r for r, _ in got),
                      {k: statistics.median(u[k] for _, u in got) for k in got[0][1]}) for name, got in measured.items()}
    base = medians["before"][0]
    for name, (rate, used) in medians.items():
        print(f"  {name:<19} {rate:7.1f} updates/s  ({rate / base:.2f}x before)   CPU ms per update: "
              + ", ".join(f"{k} {v * 1000:.1f}" for k, v in sorted(used.items()) if k != "cores busy")
              + f"; {used['cores busy']:.2f} cores busy; runs: "
              + ", ".join(f"{r:.1f}" for r, _ in measured[name]))


if __name__ == "__main__":
    main()
