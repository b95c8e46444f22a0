"""Drivers for the integration tests: the running stack container and the Bot API emulator.

Everything waits by polling a condition against a deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import httpx
from testcontainers.core.container import DockerContainer

T = TypeVar("T")
PROGRAMS = ("mongodb", "api", "web", "bot", "healthcheck")
WEB_PASSWORD = "test-dashboard-password"  # every test stack's BOTSTACK_WEB_PASSWORD


FAKETIME = Path(__file__).parent / "offline" / "build" / "libfaketime.so.1"  # scripts/setup-host.sh builds it


def faketime(**env: str) -> dict:
    """start_stack's arguments preloading libfaketime into every process of the container, with
    its settings `env`: their wall clock shifted, as on a machine whose clock is off; the
    monotonic clock stays true, as NTP leaves it."""
    if not FAKETIME.exists():
        raise AssertionError(f"{FAKETIME} is missing: scripts/setup-host.sh builds it")
    return {"volumes": {str(FAKETIME): "/opt/libfaketime.so.1"}, "LD_PRELOAD": "/opt/libfaketime.so.1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1", **env}


def clock_off_by(seconds: int) -> dict:
    """start_stack's arguments for a container whose clock is `seconds` off."""
    return faketime(FAKETIME=f"{seconds:+d}s")


class SteppedClock:
    """A container clock the test steps while it runs, as NTP steps a drifted one: libfaketime
    reads the offset from a file on the host, at most a second old."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(mode=0o755)
        folder.chmod(0o755)  # the container's user reads it
        self.step_to(0)

    def args(self) -> dict:
        args = faketime(FAKETIME_TIMESTAMP_FILE="/opt/clock/offset", FAKETIME_CACHE_DURATION="1")
        args["volumes"][str(self.folder)] = "/opt/clock"
        return args

    def step_to(self, offset_s: int) -> None:
        """The container's clock `offset_s` from this machine's, within a second."""
        new = self.folder / "offset.new"
        new.write_text(f"{offset_s:+d}s\n")
        new.chmod(0o644)
        new.replace(self.folder / "offset")  # never an empty file for a reader


def wait_until(probe: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.25) -> T:
    """Return probe()'s first truthy value; fail naming `what` and the last answer at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            last = probe()
            if last:
                return last
        except Exception as exc:  # the thing we wait for may not answer yet
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last: {last!r}")
        time.sleep(interval_s)


FIGURES = Path(__file__).parent / ".logs" / "figures.txt"


def figure(text: str) -> None:
    """A measured figure for the issue notes: printed (`pytest -s -n 0`) and appended to
    tests/integration/.logs/figures.txt, which survives pytest-xdist's captured workers."""
    line = text.strip()
    print("\n" + line)
    FIGURES.parent.mkdir(exist_ok=True)
    with FIGURES.open("a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}\n")


# Proxies set for the way out, as many hosts and platforms set them, with no NO_PROXY for loopback:
# closed ports, so anything sent through them fails at once. ALL_PROXY is a SOCKS one, as many use
# to reach Telegram. Only `telegram` (the emulator) is exempt, as a working proxy would carry it.
PROXY_ENV = {name: "http://127.0.0.1:9" for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")} | {
    "ALL_PROXY": "socks5://127.0.0.1:9", "all_proxy": "socks5://127.0.0.1:9",
    "NO_PROXY": "telegram", "no_proxy": "telegram"}


def new_token() -> str:
    """A bot token of Telegram's shape, unique to one test (its own bot in the emulator)."""
    return f"{secrets.randbelow(9 * 10**9) + 10**9}:{secrets.token_urlsafe(33)}"


def http_get(url: str, timeout_s: float = 3.0) -> httpx.Response:
    return httpx.get(url, timeout=timeout_s)


@dataclass
class Emulator:
    container: DockerContainer
    url: str

    def inject(self, bot_id: str, text: str, user: dict | None = None) -> int:
        body: dict = {"text": text}
        if user:
            body["user"] = user
        r = httpx.post(f"{self.url}/_emulator/bots/{bot_id}/updates", json=body, timeout=5)
        r.raise_for_status()
        return r.json()["update_id"]

    def sent(self, bot_id: str) -> list[dict]:
        return httpx.get(f"{self.url}/_emulator/bots/{bot_id}/sent", timeout=5).json()

    def stats(self, bot_id: str) -> dict:
        return httpx.get(f"{self.url}/_emulator/bots/{bot_id}/stats", timeout=5).json()

    def polls(self, bot_id: str) -> list[dict]:
        """Every getUpdates request since the last reset, oldest first: {"start", "end", "outcome",
        "overlapped"}, times on the emulator's monotonic clock, which is this host's (containers
        share the kernel's CLOCK_MONOTONIC)."""
        return httpx.get(f"{self.url}/_emulator/bots/{bot_id}/polls", timeout=5).json()

    def inject_callback(self, bot_id: str, message_id: int, data: str, user: dict | None = None) -> int:
        body: dict = {"callback_data": data, "message_id": message_id}
        if user:
            body["user"] = user
        r = httpx.post(f"{self.url}/_emulator/bots/{bot_id}/updates", json=body, timeout=5)
        r.raise_for_status()
        return r.json()["update_id"]

    def reset_stats(self, bot_id: str) -> None:
        httpx.post(f"{self.url}/_emulator/bots/{bot_id}/stats/reset", timeout=5).raise_for_status()

    def deliveries(self, bot_id: str) -> list[dict]:
        return httpx.get(f"{self.url}/_emulator/bots/{bot_id}/deliveries", timeout=5).json()

    def redeliver(self, bot_id: str, update_id: int) -> None:
        httpx.post(f"{self.url}/_emulator/bots/{bot_id}/redeliver/{update_id}", timeout=5).raise_for_status()

    def call(self, token: str, method: str, **params) -> dict:
        """A Bot API call, as a bot would make it (the token stays in this process)."""
        return httpx.post(f"{self.url}/bot{token}/{method}", json=params, timeout=10).json()

    def inject_many(self, bot_id: str, texts_and_users: list[tuple[str, dict]]) -> list[int]:
        """Queue many updates quickly (one connection); their update_ids in order."""
        ids = []
        with httpx.Client(base_url=self.url, timeout=10) as client:
            for text, user in texts_and_users:
                r = client.post(f"/_emulator/bots/{bot_id}/updates", json={"text": text, "user": user})
                r.raise_for_status()
                ids.append(r.json()["update_id"])
        return ids

    def inject_raw(self, bot_id: str, update: dict) -> int:
        r = httpx.post(f"{self.url}/_emulator/bots/{bot_id}/updates", json={"update": update}, timeout=5)
        r.raise_for_status()
        return r.json()["update_id"]

    def fail_next(self, bot_id: str, **spec) -> None:
        httpx.post(f"{self.url}/_emulator/bots/{bot_id}/fail-next", json=spec, timeout=5).raise_for_status()

    def hooks(self, name: str) -> list:
        """What other services' webhooks POSTed to /_emulator/hooks/{name} (an alert channel)."""
        return httpx.get(f"{self.url}/_emulator/hooks/{name}", timeout=5).json()

    def stall_hook(self, name: str, seconds: float, times: int = 1) -> None:
        """The next `times` POSTs to /_emulator/hooks/{name} are answered `seconds` late."""
        httpx.post(f"{self.url}/_emulator/hooks/{name}/stall", json={"seconds": seconds, "times": times},
                   timeout=5).raise_for_status()

    def flood(self, bot_id: str, **spec) -> dict:
        if spec:
            return httpx.post(f"{self.url}/_emulator/bots/{bot_id}/flood", json=spec, timeout=5).json()
        return httpx.get(f"{self.url}/_emulator/bots/{bot_id}/flood", timeout=5).json()

    def responses_to(self, bot_id: str, update_id: int) -> list[dict]:
        """Everything the bot sent because of one update (messages, edits, callback answers)."""
        return [m for m in self.sent(bot_id) if update_id in (m.get("update_id"), m.get("reply_to_update_id"))]

    def reply_to(self, bot_id: str, update_id: int, timeout_s: float = 20) -> dict:
        def replied():
            return next((m for m in self.sent(bot_id) if m.get("reply_to_update_id") == update_id), None)

        return wait_until(replied, timeout_s, f"the bot's reply to update {update_id}")

    def ask(self, bot_id: str, text: str, timeout_s: float = 20) -> str:
        return self.reply_to(bot_id, self.inject(bot_id, text), timeout_s)["text"]


@dataclass
class Stack:
    """One running botstack container."""

    container: DockerContainer
    bot_id: str | None = None
    local_db: bool = True  # False: an external MONGODB_URI, so the container runs no mongod
    user: str = "botstack"  # the container's user, whom `exec` runs as by default

    @property
    def host(self) -> str:
        return self.container.get_container_host_ip()

    @property
    def api(self) -> str:
        return f"http://{self.host}:{self.container.get_exposed_port(8000)}"

    @property
    def web(self) -> str:
        return f"http://{self.host}:{self.container.get_exposed_port(8080)}"

    @contextmanager
    def dashboard(self) -> Iterator[httpx.Client]:
        """`with stack.dashboard() as web:` an HTTP client logged in to the stack's dashboard."""
        with httpx.Client(base_url=self.web, timeout=10) as client:
            r = client.post("/login", data={"password": WEB_PASSWORD, "next": "/"}, follow_redirects=True)
            assert r.status_code == 200 and "Log out" in r.text, r.text[:300]
            yield client

    def exec(self, cmd: list[str] | str, user: str | None = None) -> tuple[int, str]:
        result = self.container.get_wrapped_container().exec_run(cmd, user=user or self.user, workdir="/app")
        return result.exit_code, result.output.decode(errors="replace")

    def programs(self) -> dict[str, dict]:
        """supervisord's view of every program, read over its unix socket inside the container."""
        code, out = self.exec(
            [
                "python",
                "-c",
                "import json; from services.common.supervisor import rpc; "
                "print(json.dumps(rpc('/run/botstack/supervisor.sock').supervisor.getAllProcessInfo()))",
            ]
        )
        assert code == 0, out
        return {p["name"]: p for p in json.loads(out.strip().splitlines()[-1])}

    def all_running(self) -> dict[str, dict] | None:
        programs = self.programs()
        needed = PROGRAMS if self.local_db else tuple(n for n in PROGRAMS if n != "mongodb")
        if set(needed) <= set(programs) and all(programs[n]["statename"] == "RUNNING" for n in needed):
            return programs
        return None

    def signal(self, pid: int, sig: str) -> None:
        code, out = self.exec(["sh", "-c", f"kill -{sig} {pid}"])
        assert code == 0, out

    def health(self) -> tuple[int, str]:
        """`python -m healthcheck status`, as Docker's HEALTHCHECK runs it."""
        return self.exec(["python", "-m", "healthcheck", "status"])

    def rpc(self, call: str) -> str:
        """One supervisord XML-RPC call made inside the container, e.g. "stopProcess('mongodb')"; it may
        wait out a program's stopwaitsecs or startsecs."""
        code, out = self.exec(["python", "-c", "from services.common.supervisor import rpc; "
                               f"print(rpc('/run/botstack/supervisor.sock', timeout_s=120).supervisor.{call})"])
        assert code == 0, out
        return out.strip()

    def db(self, expression: str):
        """Evaluate a PyMongo expression on the stack's own database (`db`), inside the container;
        its value comes back through JSON (ObjectIds and dates as strings)."""
        code, out = self.exec(["python", "-c",
                               "import json; from pymongo import MongoClient; "
                               "db = MongoClient('mongodb://127.0.0.1:27017/?directConnection=true').botstack; "
                               f"print(json.dumps({expression}, default=str))"])
        assert code == 0, out
        return json.loads(out.strip().splitlines()[-1])

    def bot_pid(self) -> int:
        return self.programs()["bot"]["pid"]

    def bot_status(self) -> dict:
        """What the bot program reports about itself (services/bot/status.py)."""
        code, out = self.exec(["cat", "/run/botstack/bot.json"])
        return json.loads(out) if code == 0 else {}

    def ready(self) -> bool:
        return http_get(f"{self.api}/ready").status_code == 200

    def logs(self) -> str:
        out, err = self.container.get_logs()
        return out.decode(errors="replace") + err.decode(errors="replace")

    def wait_healthy(self, timeout_s: float = 90) -> dict[str, dict]:
        programs = wait_until(self.all_running, timeout_s, "all five programs RUNNING")
        wait_until(self.ready, timeout_s, "/ready 200")
        return programs


def identities(programs: dict, names=PROGRAMS) -> dict:
    """(pid, start) per program: equal before and after means nothing was restarted."""
    return {n: (programs[n]["pid"], programs[n]["start"]) for n in names}


class Injector:
    """Injects /version at a steady pace from a thread, for a bounded count. `users` distinct
    users take turns (None: a new user for every update); one user writing twice a second
    would meet Telegram's 1 message/s per chat limit."""

    def __init__(self, emulator: Emulator, bot_id: str, every_s: float = 0.5, max_count: int = 400,
                 users: int | None = 10, first_user: int = 910_000) -> None:
        self.emulator, self.bot_id, self.every_s, self.max_count = emulator, bot_id, every_s, max_count
        self.users, self.first_user = users, first_user
        self.ids: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.ids) < self.max_count:
            n = len(self.ids) if self.users is None else len(self.ids) % self.users
            user = {"id": self.first_user + n, "first_name": "Steady"}
            self.ids.append(self.emulator.inject(self.bot_id, "/version", user=user))
            self._stop.wait(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def remember(emulator: Emulator, bot_id: str, n: int) -> int:
    """One /remember from user 7,500,000 + n: stored once per update, whatever dies meanwhile."""
    return emulator.inject(bot_id, f"/remember note-{n}", user={"id": 7_500_000 + n, "first_name": f"U{n}"})


def replies(emulator: Emulator, bot_id: str, update_ids: list[int]) -> dict[int, int]:
    """How many replies each update got."""
    counts = dict.fromkeys(update_ids, 0)
    for m in emulator.sent(bot_id):
        if m.get("reply_to_update_id") in counts:
            counts[m["reply_to_update_id"]] += 1
    return counts


def all_answered(emulator: Emulator, bot_id: str, update_ids: list[int], timeout_s: float) -> dict[int, int]:
    """Wait until every update has a reply; how many replies each got (above 1: sent again)."""
    return wait_until(lambda: (c := replies(emulator, bot_id, update_ids)) and all(c.values()) and c,
                      timeout_s, f"a reply to each of the {len(update_ids)} updates", interval_s=1.0)
