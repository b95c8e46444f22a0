"""Shared fixtures for the fast unit tests: a clean environment, fresh settings, helpers.

No Docker, no network beyond 127.0.0.1 and unix sockets under a temporary directory.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Iterator

import pytest

# starlette warns at import that it would rather use `httpx2`; the tests use httpx on purpose.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import fastapi.testclient  # noqa: F401
    import starlette.testclient  # noqa: F401

from services.common.settings import settings_or_exit

ROOT = Path(__file__).resolve().parents[2]

# A syntactically valid bot token (BotFather's shape); it is never sent anywhere.
BOT_ID = 123456789
TOKEN = f"{BOT_ID}:AAH-fake_secret_for_unit_tests_0123456789"

_OWN_PREFIXES = ("BOTSTACK_", "MONGODB_", "TELEGRAM_")
_OWN_NAMES = ("SUPERVISOR_SERVER_URL",)


def _is_ours(name: str) -> bool:
    upper = name.upper()
    return upper.startswith(_OWN_PREFIXES) or upper in _OWN_NAMES


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch):
    """Every test starts from the production defaults: no botstack variable set, no cached settings."""
    for name in list(os.environ):
        if _is_ours(name):
            monkeypatch.delenv(name)
    settings_or_exit.cache_clear()
    yield
    settings_or_exit.cache_clear()


@pytest.fixture
def subprocess_env() -> Callable[..., dict[str, str]]:
    """An environment for a child `python3 -m ...` run from the repository root."""

    def make(**overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not _is_ours(k)}
        env.pop("PYTHONWARNINGS", None)
        env["PYTHONPATH"] = str(ROOT)
        env.update(overrides)
        return env

    return make


@pytest.fixture
def restore_logging():
    """setup_logging() changes process-wide state; put it back after the test."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore", "apscheduler", "pymongo")}
    saved_hook = sys.excepthook
    yield
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)
    sys.excepthook = saved_hook
    logging.captureWarnings(False)


def wait_until(predicate: Callable[[], object], timeout_s: float = 5.0, interval_s: float = 0.02, what: str = ""):
    """Poll `predicate` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(interval_s)


class FakeClock:
    """An injected clock for the sidecar: time moves only when the test says so. Called, it is
    the wall clock; `monotonic` is the one no `step` moves."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.stepped = 0.0

    def __call__(self) -> float:
        return self.now + self.stepped

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def step(self, seconds: float) -> None:
        """The wall clock set forward or back (NTP, a virtual machine resumed)."""
        self.stepped += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --- a real MongoDB-wire server for the tests that need one --------------------------------------

FERRETDB = ROOT / "tests" / "integration" / "offline" / "build" / "ferretdb"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ferretdb(data, port: int) -> subprocess.Popen:
    """FerretDB, the offline stand-in for mongod that scripts/setup-host.sh builds, answering."""
    from services.common.probes import MongoPingProbe

    server = subprocess.Popen([str(FERRETDB), "--handler=sqlite", f"--sqlite-url=file:{data}/",
                               f"--listen-addr=127.0.0.1:{port}", "--state-dir=-", "--telemetry=disable",
                               "--debug-addr=-", "--log-level=error"], stdout=subprocess.DEVNULL)
    wait_until(lambda: MongoPingProbe("mongodb", port=port).check()[0], 20, 0.05, "FerretDB answering")
    return server


def stop_ferretdb(server: subprocess.Popen) -> None:
    os.kill(server.pid, signal.SIGCONT)
    server.kill()
    server.wait()


@pytest.fixture
def ferretdb(tmp_path):
    """([server], port): the list holds the running server; a test may replace it."""
    if not FERRETDB.exists():
        pytest.skip("no FerretDB stand-in built here (scripts/setup-host.sh builds it)")
    port = free_port()
    servers = [start_ferretdb(tmp_path, port)]
    try:
        yield servers, port
    finally:
        for server in servers:
            stop_ferretdb(server)


SUPERVISORD_CONFIG = """
[unix_http_server]
file={dir}/supervisor.sock
chmod=0700

[supervisord]
nodaemon=true
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
{extra}
[program:sleeper]
command=sleep 600
startsecs=0
stopwaitsecs=2
"""


@contextmanager
def real_supervisord(directory: Path, extra: str = "") -> Iterator[subprocess.Popen]:
    """A real supervisord with one program (`sleeper`), its socket and log in `directory`;
    `extra`: more config sections (an rpcinterface plugin)."""
    (directory / "supervisord.conf").write_text(SUPERVISORD_CONFIG.format(dir=directory, extra=extra))
    env = {**os.environ, "BOTSTACK_RUN_DIR": str(directory), "PYTHONPATH": str(ROOT)}
    env.pop("SUPERVISOR_SERVER_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c", str(directory / "supervisord.conf")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)


class ClockAhead(datetime):
    """datetime on a host whose clock runs 20 s ahead (of the database server's, and of other
    replicas'): monkeypatched into a module as its `datetime`."""

    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz) + timedelta(seconds=20)
