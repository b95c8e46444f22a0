"""botstack against the usual setup, side by side in one run (not a test: it asserts nothing).

    python bench/vs_compose.py [--runs 3] [--programs api,web,bot,db]

The usual setup is what a user would pick instead (bench/vs_compose/compose.yaml): the same
programs from the same `app` image as four containers under Compose, each with a tuned
HEALTHCHECK (interval 5 s, 3 retries), `restart: unless-stopped`, and an autoheal-equivalent
watcher (docker-autoheal's logic, run as its image runs it: a shell loop with curl and jq that
every 5 s restarts unhealthy containers; its image cannot be pulled here, so this one is built
from bench/vs_compose/Dockerfile). botstack is one container of the offline test image. Both
talk to a Bot API emulator of their own and to the same kind of database (offline: the FerretDB
stand-in).

Measured for each, --runs times, reported as medians and ratios (usual / botstack):
- time from SIGKILL, and from SIGSTOP, of each of api, web, bot and the database until that
  program answers again from outside (api and web: /health; bot: a reply to /version; the
  database: the API's /ready), after which the whole setup is let settle again;
- cold start: start → the API ready, the dashboard answering and the bot replying (each setup's
  Bot API emulator is already up: it stands in for Telegram, outside both);
- total memory of every process once healthy, read from the host (RSS, and PSS: shared pages
  divided among the processes that map them; health checks' short-lived processes left out),
  also with each container's runtime shim; and exactly: the physical pages all of them hold,
  each counted once; and what the host gave: its anonymous memory (every process, Docker's
  daemons included) and the kernel's own (unreclaimable slab, stacks, page tables), from
  /proc/meminfo, once healthy minus just before the start; and image sizes;
- `docker stop` (botstack) vs `docker compose stop` (the usual setup).

Needs the images the integration tests build (`pytest -m integration` first, default tag
"test"). Results also go to bench/results/vs_compose.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
os.environ.setdefault("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
from testcontainers.core.container import DockerContainer  # noqa: E402
from testcontainers.core.network import Network  # noqa: E402

from bench.foundation import BASE  # noqa: E402
from tests.integration.harness import Emulator, Stack, http_get, wait_until  # noqa: E402
from tests.unit.conftest import free_port  # noqa: E402

TAG = os.environ.get("BOTSTACK_TEST_TAG", "test")
APP, OFFLINE, EMULATOR = (f"botstack:{TAG}-{kind}" for kind in ("app", "offline", "emulator"))
COMPOSE_FILE = Path(__file__).parent / "vs_compose" / "compose.yaml"
WATCHER = f"botstack:{TAG}-bench-autoheal"
PROGRAMS = ("api", "web", "bot", "db")
SIGNALS = ("KILL", "STOP")
DEADLINE_S = 180
PAGE = os.sysconf("SC_PAGE_SIZE")


def token() -> str:
    return f"{int(time.time() * 1000) % 9_000_000_000 + 1_000_000_000}:{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"


def answers(api: str, web: str, emulator: Emulator, bot_id: str, program: str) -> bool:
    if program == "api":
        return http_get(f"{api}/health", 1).status_code == 200
    if program == "web":
        return http_get(f"{web}/health", 1).status_code == 200
    if program == "db":
        return http_get(f"{api}/ready", 2).status_code == 200
    return "git_sha" in emulator.ask(bot_id, "/version", timeout_s=8)


def _used_mib(pid: int) -> dict[str, float]:
    used = {}
    for file, key, label in (("status", "rss", "VmRSS:"), ("smaps_rollup", "pss", "Pss:")):
        text = Path(f"/proc/{pid}/{file}").read_text()
        used[key] = int(next(line.split()[1] for line in text.splitlines() if line.startswith(label))) / 1024
    return used


def _pages(pid: int) -> set[int]:
    """The physical pages a process has in memory (page frame numbers, from /proc/PID/pagemap:
    needs root, which the benchmark has on the host)."""
    frames = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            span, *rest = line.split()
            if rest[-1] == "[vsyscall]":  # the kernel's, not in the pagemap
                continue
            low, high = (int(address, 16) for address in span.split("-"))
            pagemap.seek(low // PAGE * 8)
            for (entry,) in struct.iter_unpack("<Q", pagemap.read((high - low) // PAGE * 8)):
                if entry >> 63:  # present
                    frames.add(entry & (1 << 55) - 1)
    return frames


def _parent(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def container_pids(container_pid: int) -> tuple[list[int], int]:
    """A container's processes (those in its first process's PID namespace) and its runtime shim
    (containerd-shim-runc-v2, one per container, the parent of its first process: part of what
    each container costs the machine). A process the shim started besides the first one is a
    `docker exec` (a health check's, short-lived) and not counted: it is the same kind of cost in
    both setups, and a sample would catch it or not."""
    namespace = os.readlink(f"/proc/{container_pid}/ns/pid")
    shim = _parent(container_pid)
    inside = []
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") == namespace and (pid == container_pid or _parent(pid) != shim):
                inside.append(pid)
        except OSError:  # gone meanwhile
            continue
    return inside, shim


@dataclass
class Held:
    """The memory of some containers, read from the host: summed RSS and PSS (shared pages
    divided among the processes that map them, wherever those run), each also with the
    containers' shims; and exactly: the physical pages the processes and shims hold, each
    counted once however many of them map it (what these containers alone would occupy)."""

    used: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("rss", "pss", "rss+shim", "pss+shim"), 0.0))
    frames: set[int] = field(default_factory=set)

    def __or__(self, other: Held) -> Held:
        return Held({k: v + other.used[k] for k, v in self.used.items()}, self.frames | other.frames)

    def mib(self) -> dict[str, float]:
        return {**self.used, "distinct+shim": len(self.frames) * PAGE / 2**20}


def container_memory(first_pid: int) -> Held:
    """What one container holds: its processes' memory and its shim's (container_pids)."""
    processes, shim = container_pids(first_pid)
    held = Held()
    for pid in (*processes, shim):
        try:
            more, pages = _used_mib(pid), _pages(pid)
        except OSError:  # gone meanwhile
            continue
        held.frames |= pages
        for key, value in more.items():
            held.used[f"{key}+shim"] += value
            if pid != shim:
                held.used[key] += value
    return held


HOST_KEYS = ("AnonPages", "SUnreclaim", "KernelStack", "PageTables")


def host_used_mib(samples: int = 5) -> float:
    """What the host has given out that it cannot take back: every process's anonymous memory
    (Docker's daemons and the shims included) and the kernel's own (unreclaimable slab, stacks,
    page tables); the page cache is left out (both setups read the same image files). A median
    of `samples` readings a second apart: the daemons' heaps move a little on their own."""
    readings = []
    for i in range(samples):
        if i:
            time.sleep(1)
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        readings.append(sum(int(fields[key].split()[0]) for key in HOST_KEYS) / 1024)
    return statistics.median(readings)


def all_answer(setup) -> bool:
    return all(setup.answers(p) for p in PROGRAMS)


class Botstack:
    name = "botstack"

    def __init__(self) -> None:
        self.token = token()
        self.network = Network()
        self.network.create()
        self.emu = DockerContainer(EMULATOR).with_network(self.network).with_network_aliases("telegram") \
            .with_exposed_ports(8081)
        self.emu.start()
        url = f"http://127.0.0.1:{self.emu.get_exposed_port(8081)}"
        wait_until(lambda: http_get(f"{url}/_emulator/health").status_code == 200, 30, "the emulator")
        self.emulator = Emulator(self.emu, url)
        self.container: DockerContainer | None = None

    def start(self) -> float:
        self.container = (
            DockerContainer(OFFLINE).with_network(self.network).with_exposed_ports(8000, 8080)
            .with_env("TELEGRAM_BOT_TOKEN", self.token)
            .with_env("BOTSTACK_WEB_PASSWORD", "bench-dashboard-password")
            .with_env("TELEGRAM_API_BASE_URL", "http://telegram:8081/bot")
        )
        self.host_before = host_used_mib()
        t0 = time.monotonic()
        self.container.start()
        self.stack = Stack(self.container, bot_id=self.token.split(":")[0])
        wait_until(lambda: all_answer(self), 180, "botstack answering", interval_s=0.1)
        return time.monotonic() - t0

    def answers(self, program: str) -> bool:
        return answers(self.stack.api, self.stack.web, self.emulator, self.stack.bot_id, program)

    def settle(self) -> None:
        self.stack.wait_healthy(180)
        wait_until(lambda: self.stack.health()[1].startswith("healthy"), 180, "a healthy verdict")

    def fault(self, program: str, sig: str) -> None:
        name = "mongodb" if program == "db" else program
        self.stack.signal(self.stack.programs()[name]["pid"], sig)

    def memory_mib(self) -> dict[str, float]:
        wrapped = self.container.get_wrapped_container()
        wrapped.reload()
        return {**container_memory(wrapped.attrs["State"]["Pid"]).mib(), "host": host_used_mib() - self.host_before}

    def stop(self) -> float:
        t0 = time.monotonic()
        self.container.get_wrapped_container().stop(timeout=120)
        return time.monotonic() - t0

    def down(self) -> None:
        if self.container:
            self.container.stop()
            self.container = None

    def close(self) -> None:
        self.down()
        self.emu.stop()
        self.network.remove()


class Usual:
    name = "usual"

    def __init__(self) -> None:
        self.token = token()
        # Fixed host ports: a restarted container must come back where the user's proxy expects it.
        self.ports = {name: free_port() for name in ("API_PORT", "WEB_PORT", "TELEGRAM_PORT")}
        docker.from_env().images.build(path=str(COMPOSE_FILE.parent), tag=WATCHER, rm=True,
                                       buildargs={"BASE_IMAGE": BASE})
        self.env = {**os.environ, "APP_IMAGE": APP, "DB_IMAGE": OFFLINE, "EMULATOR_IMAGE": EMULATOR,
                    "WATCHER_IMAGE": WATCHER,
                    "BENCH_TOKEN": self.token, "COMPOSE_PROJECT_NAME": f"bench-usual-{uuid.uuid4().hex[:6]}",
                    **{name: str(port) for name, port in self.ports.items()}}

    def compose(self, *args: str) -> str:
        result = subprocess.run(["docker", "compose", "-f", str(COMPOSE_FILE), *args], env=self.env,
                                capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"docker compose {' '.join(args)}: {result.stderr.strip()[-500:]}")
        return result.stdout.strip()

    def start(self) -> float:
        # The emulator first, outside the timing (as botstack's, started with its network).
        self.compose("up", "-d", "telegram")
        self.emulator = Emulator(None, f"http://127.0.0.1:{self.ports['TELEGRAM_PORT']}")
        wait_until(lambda: http_get(f"{self.emulator.url}/_emulator/health").status_code == 200, 30,
                   "the emulator")
        self.api, self.web = (f"http://127.0.0.1:{self.ports[name]}" for name in ("API_PORT", "WEB_PORT"))
        self.host_before = host_used_mib()
        t0 = time.monotonic()
        self.compose("up", "-d")
        wait_until(lambda: all_answer(self), 180, "the usual setup answering", interval_s=0.1)
        return time.monotonic() - t0

    def answers(self, program: str) -> bool:
        return answers(self.api, self.web, self.emulator, self.token.split(":")[0], program)

    def container(self, service: str):
        return docker.from_env().containers.get(self.compose("ps", "-q", service))

    def settle(self) -> None:
        def healthy() -> bool:
            return all(self.container(s).attrs["State"].get("Health", {}).get("Status") == "healthy"
                       for s in PROGRAMS)

        wait_until(healthy, 180, "every container healthy")
        wait_until(lambda: all_answer(self), 60, "every program answering")

    def fault(self, program: str, sig: str) -> None:
        # As a crash or a hang would: signal the container's process from the host. `docker kill`
        # would count as an operator's stop, which restart policies deliberately leave alone.
        os.kill(self.container(program).attrs["State"]["Pid"], getattr(signal, f"SIG{sig}"))

    def memory_mib(self) -> dict[str, float]:
        total = Held()
        for service in (*PROGRAMS, "autoheal"):
            held = container_memory(self.container(service).attrs["State"]["Pid"])
            print(f"usual: {service} " + ", ".join(f"{k} {v:.1f}" for k, v in held.mib().items()) + " MiB", flush=True)
            total |= held
        return {**total.mib(), "host": host_used_mib() - self.host_before}

    def stop(self) -> float:
        t0 = time.monotonic()
        self.compose("stop")
        return time.monotonic() - t0

    def down(self) -> None:
        subprocess.run(["docker", "compose", "-f", str(COMPOSE_FILE), "down", "-v", "--timeout", "5"],
                       env=self.env, capture_output=True)

    def close(self) -> None:
        self.down()


def heal_time(setup, program: str, sig: str) -> float:
    setup.settle()
    t0 = time.monotonic()
    setup.fault(program, sig)
    # A stopped or killed program cannot answer: wait for the first answer after the fault.
    wait_until(lambda: setup.answers(program), DEADLINE_S, f"{setup.name}: {program} after SIG{sig}",
               interval_s=0.1)
    return time.monotonic() - t0


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--programs", default=",".join(PROGRAMS))
    args = parser.parse_args()
    programs = [p for p in args.programs.split(",") if p]
    client = docker.from_env()
    sizes = {tag: client.images.get(tag).attrs["Size"] / 1e6 for tag in (APP, OFFLINE)}

    results: dict[str, dict] = {}
    for setup in (Botstack(), Usual()):
        r = results[setup.name] = {"cold_start_s": [], "stop_s": [], "memory_mib": [], "heal_s": {}}
        try:
            for run in range(args.runs):
                r["cold_start_s"].append(setup.start())
                setup.settle()
                r["memory_mib"].append(setup.memory_mib())
                for program in programs:
                    for sig in SIGNALS:
                        t = heal_time(setup, program, sig)
                        r["heal_s"].setdefault(f"{program} SIG{sig}", []).append(t)
                        print(f"{setup.name} run {run + 1}: {program} SIG{sig} answered again after {t:.1f} s",
                              flush=True)
                setup.settle()
                r["stop_s"].append(setup.stop())
                setup.down()
        finally:
            setup.close()

    b, u = results["botstack"], results["usual"]
    rows = [(key, median(b["heal_s"][key]), median(u["heal_s"][key])) for key in b["heal_s"]]
    rows += [("cold start", median(b["cold_start_s"]), median(u["cold_start_s"])),
             ("stop", median(b["stop_s"]), median(u["stop_s"]))]
    print(f"\n{args.runs} runs each, medians; ratio = usual / botstack (above 1: botstack is faster)")
    print(f"{'':<20} {'botstack':>10} {'usual':>10} {'ratio':>7}")
    for key, bv, uv in rows:
        print(f"{key:<20} {bv:>9.1f}s {uv:>9.1f}s {uv / bv:>7.2f}")
    for kind in ("rss", "pss", "rss+shim", "pss+shim", "distinct+shim", "host"):
        bm, um = (median([m[kind] for m in r["memory_mib"]]) for r in (b, u))
        print(f"{'memory ' + kind.upper():<20} {bm:>7.0f}MiB {um:>7.0f}MiB {um / bm:>7.2f}")
    print(f"images: botstack (offline test image, with the stand-in mongod) {sizes[OFFLINE]:.0f} MB; "
          f"usual: app {sizes[APP]:.0f} MB for api/web/bot/watcher + a database image (offline: the same "
          f"{sizes[OFFLINE]:.0f} MB image; online it would be the official mongo image)")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "vs_compose.json").write_text(json.dumps({"runs": args.runs, "results": results, "sizes_mb": sizes},
                                                    indent=2))


if __name__ == "__main__":
    main()
