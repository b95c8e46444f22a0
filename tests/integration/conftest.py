"""Integration fixtures: build the image under test, run it on a real Docker engine.

Offline (the default, as in CI): the `app` target of the real Dockerfile on a locally built
bookworm base, plus the test-only layer in tests/integration/offline/ that supplies `mongod`
as FerretDB. With BOTSTACK_TEST_MONGOD=real: the shipped `standalone` target with real MongoDB
(needs a machine that can pull the official base image and reach MongoDB's repository).
"""

from __future__ import annotations

import hashlib
import os

# testcontainers reads these when it is imported. No reaper image can be pulled here; tests
# reach containers through ports published on 127.0.0.1.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
os.environ.setdefault("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")

import re
import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import docker
import pytest
from docker.types import Ulimit
from testcontainers.core.container import DockerContainer
from testcontainers.core.image import DockerImage
from testcontainers.core.network import Network

from tests.integration.harness import WEB_PASSWORD, Emulator, Stack, http_get, new_token, wait_until

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = Path(__file__).parent / "offline"
LOG_DIR = Path(__file__).parent / ".logs"
MODE = os.environ.get("BOTSTACK_TEST_MONGOD", "standin")
BASE_IMAGE = os.environ.get("BOTSTACK_TEST_BASE_IMAGE", "botstack-ci/python:bookworm")
# Tags of the images a run builds: botstack:<TAG>-app, botstack:<TAG>-offline. Two checkouts
# testing on one engine at once set different values so neither replaces the other's images.
TAG = os.environ.get("BOTSTACK_TEST_TAG", "test")
FAR_DB_DELAY_S = 0.15  # far_db: each way, as to a hosted MongoDB in another region


def _git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sha = "nogit"
    # A suffix unique to this run proves the running build is the one this run made. It comes
    # from the run's start (tests/conftest.py), so every pytest-xdist worker builds the same image.
    run = os.environ.get("BOTSTACK_TEST_RUN_STARTED") or uuid.uuid4().hex
    return f"{sha[:12]}-{hashlib.sha256(run.encode()).hexdigest()[:6]}"


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.fail(f"no Docker engine answers ({exc}); on a Debian machine run: sudo scripts/setup-host.sh",
                    pytrace=False)
    return client


@pytest.fixture(scope="session")
def build_identity() -> dict[str, str]:
    return {
        "VERSION": "0.1.0",
        "GIT_SHA": _git_sha(),
        "BUILD_TIME": datetime.fromtimestamp(float(os.environ.get("BOTSTACK_TEST_RUN_STARTED") or time.time()),
                                             timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@pytest.fixture(scope="session")
def app_image(docker_client, build_identity) -> str:
    """The `app` target of the shipped Dockerfile."""
    args = dict(build_identity)
    if MODE == "standin":
        args["BASE_IMAGE"] = BASE_IMAGE
        try:
            docker_client.images.get(BASE_IMAGE)
        except docker.errors.ImageNotFound:
            pytest.fail(f"base image {BASE_IMAGE} is missing; run: sudo scripts/setup-host.sh", pytrace=False)
    elif "BOTSTACK_TEST_BASE_IMAGE" in os.environ:
        args["BASE_IMAGE"] = BASE_IMAGE
    DockerImage(path=ROOT, tag=f"botstack:{TAG}-app", clean_up=False, target="app", buildargs=args,
                rm=True).build()
    return f"botstack:{TAG}-app"


@pytest.fixture(scope="session")
def emulator_image(app_image) -> str:
    """The Dockerfile's `emulator` target: the Bot API test double, never part of `app`."""
    args = {"BASE_IMAGE": BASE_IMAGE} if MODE == "standin" or "BOTSTACK_TEST_BASE_IMAGE" in os.environ else {}
    DockerImage(path=ROOT, tag=f"botstack:{TAG}-emulator", clean_up=False, target="emulator", buildargs=args,
                rm=True).build()
    return f"botstack:{TAG}-emulator"


@pytest.fixture(scope="session")
def stack_image(app_image, build_identity) -> str:
    if MODE == "real":
        args = dict(build_identity)
        if "BOTSTACK_TEST_BASE_IMAGE" in os.environ:
            args["BASE_IMAGE"] = BASE_IMAGE
        DockerImage(path=ROOT, tag=f"botstack:{TAG}-standalone", clean_up=False, target="standalone",
                    buildargs=args, rm=True).build()
        return f"botstack:{TAG}-standalone"
    if not (OFFLINE / "build" / "ferretdb").exists():
        pytest.fail("the FerretDB stand-in is not built; run: sudo scripts/setup-host.sh", pytrace=False)
    DockerImage(path=OFFLINE, tag=f"botstack:{TAG}-offline", clean_up=False,
                buildargs={"APP_IMAGE": app_image}, rm=True).build()
    return f"botstack:{TAG}-offline"


@pytest.fixture(scope="session")
def bot_token() -> str:
    return new_token()


@pytest.fixture(scope="session")
def bot_id(bot_token) -> str:
    return bot_token.split(":")[0]


class LogArchive:
    """Every container's output, kept for the whole run (the secrets test reads it all)."""

    def __init__(self) -> None:
        self.entries: dict[str, str] = {}
        LOG_DIR.mkdir(exist_ok=True)

    def add(self, name: str, text: str) -> None:
        self.entries[name] = text
        (LOG_DIR / f"{name}.log").write_text(text)

    def everything(self) -> str:
        return "\n".join(self.entries.values())


@pytest.fixture(scope="session")
def log_archive() -> LogArchive:
    return LogArchive()


def _archive(archive: LogArchive, name: str, container: DockerContainer) -> None:
    try:
        out, err = container.get_logs()
        archive.add(name, out.decode(errors="replace") + err.decode(errors="replace"))
    except Exception as exc:  # a container that never started has no logs
        archive.add(name, f"<no logs: {exc}>")


@pytest.fixture(scope="session")
def network(docker_client) -> Iterator[Network]:
    net = Network()
    net.create()
    yield net
    net.remove()


@pytest.fixture(scope="session")
def emulator(emulator_image, network, log_archive) -> Iterator[Emulator]:
    container = (
        DockerContainer(emulator_image)
        .with_command(["python", "-m", "services.emulator", "--host", "0.0.0.0", "--port", "8081",
                       "--plain-http-webhooks"])
        .with_network(network)
        .with_network_aliases("telegram")
        .with_exposed_ports(8081)
    )
    container.start()
    try:
        url = f"http://{container.get_container_host_ip()}:{container.get_exposed_port(8081)}"
        wait_until(lambda: http_get(f"{url}/_emulator/health").status_code == 200, 30, "the emulator")
        yield Emulator(container, url)
    finally:
        _archive(log_archive, "emulator", container)
        container.stop()


StartStack = Callable[..., Stack]


def _stack_container(image: str, network: Network, token: str, env: dict[str, str]) -> DockerContainer:
    container = (
        DockerContainer(image)
        .with_network(network)
        .with_exposed_ports(8000, 8080)
        .with_env("TELEGRAM_BOT_TOKEN", token)
        .with_env("TELEGRAM_API_BASE_URL", "http://telegram:8081/bot")
        .with_env("BOTSTACK_WEB_PASSWORD", WEB_PASSWORD)
    )
    for key, value in env.items():
        container.with_env(key, value)
    return container


@pytest.fixture
def start_stack(stack_image, network, emulator, log_archive, request) -> Iterator[StartStack]:
    """Start botstack containers wired to the emulator; each is archived and removed afterwards.
    A test's stacks share a bot of their own (unless given TELEGRAM_BOT_TOKEN): with the session's,
    the module's shared `stack` polled alongside them from its own database, took some of their
    updates, and answered one of them a second time (CI, a restore refused while users wrote)."""
    bot_token = new_token()
    started: list[tuple[str, DockerContainer]] = []

    def start(aliases: tuple[str, ...] = (), volumes: dict[str, str] | None = None,
              tmpfs: dict[str, str] | None = None, image: str | None = None, mem_limit: str | None = None,
              user: str | None = None, open_files: tuple[int, int] | None = None, **env: str) -> Stack:
        container = _stack_container(image or stack_image, network, bot_token, env)
        kwargs = {"user": user} if user else {}  # another user than the image's, as a platform assigns
        if open_files:  # (soft, hard), as the host's Docker sets it: 1024, 524288 since Docker 25
            kwargs["ulimits"] = [Ulimit(name="nofile", soft=open_files[0], hard=open_files[1])]
        if mem_limit:  # the container's memory limit, as a hosting plan sets it (no swap beyond it)
            kwargs |= {"mem_limit": mem_limit, "memswap_limit": mem_limit}
        container.with_kwargs(**kwargs)
        if aliases:
            container.with_network_aliases(*aliases)
        for volume, path in (volumes or {}).items():
            container.with_volume_mapping(volume, path, mode="rw")
        for path, size in (tmpfs or {}).items():
            container.with_tmpfs_mount(path, size=size)
        name = re.sub(r"\W+", "_", request.node.name)[:80] + f"-{len(started)}"
        started.append((name, container))
        container.start()
        token = env.get("TELEGRAM_BOT_TOKEN", bot_token)
        return Stack(container, bot_id=token.split(":")[0], local_db="MONGODB_URI" not in env,
                     user=user or "botstack")

    yield start
    for name, container in started:
        _archive(log_archive, name, container)
        container.stop()


@pytest.fixture(scope="module")
def stack(stack_image, network, emulator, bot_token, bot_id, log_archive) -> Iterator[Stack]:
    """One healthy stack shared by a module's read-only tests."""
    container = _stack_container(stack_image, network, bot_token, {})
    container.start()
    try:
        s = Stack(container, bot_id=bot_id)
        s.wait_healthy()
        yield s
    finally:
        _archive(log_archive, f"shared-stack-{uuid.uuid4().hex[:6]}", container)
        container.stop()


@dataclass
class ExternalDb:
    """A MongoDB of its own container on the test network, as Atlas would be to the stack."""

    uri: str
    container: DockerContainer
    host: str  # its name on the test network


@contextmanager
def _on_the_network(image: str, network: Network, log_archive: LogArchive, name: str,
                    command: list[str]) -> Iterator[tuple[DockerContainer, str]]:
    """A container of `image` running `command` on the test network, as `<name>-<random>`;
    its logs archived and it removed afterwards."""
    alias = f"{name}-{uuid.uuid4().hex[:6]}"
    container = DockerContainer(image).with_command(command).with_network(network).with_network_aliases(alias)
    container.start()
    try:
        yield container, alias
    finally:
        _archive(log_archive, alias, container)
        container.stop()


@pytest.fixture
def external_db(stack_image, network, log_archive) -> Iterator[ExternalDb]:
    """The image's own `mongod` (the stand-in offline, real MongoDB otherwise), listening on the
    test network, in a container of its own that a test may stop and start."""
    command = ["mongod", "--bind_ip", "0.0.0.0", "--port", "27017", "--dbpath", "/data/db"]
    with _on_the_network(stack_image, network, log_archive, "db", command) as (container, alias):
        yield ExternalDb(f"mongodb://{alias}:27017/?directConnection=true", container, alias)


@pytest.fixture
def far_db(external_db, stack_image, network, log_archive) -> Iterator[str]:
    """The external database 150 ms away each way (a hosted MongoDB in another region): a URI
    through a delaying proxy (delay_proxy.py) in a container of its own on the test network."""
    source = (ROOT / "tests" / "integration" / "delay_proxy.py").read_text()
    command = ["python", "-c", source, "27017", external_db.host, "27017", str(FAR_DB_DELAY_S)]
    with _on_the_network(stack_image, network, log_archive, "far", command) as (container, alias):
        wait_until(lambda: b"delaying" in container.get_wrapped_container().logs(), 30, "the delaying proxy")
        yield f"mongodb://{alias}:27017/?directConnection=true"


@pytest.fixture
def shared_db(external_db) -> str:
    """A database several stacks share (as an external MongoDB would be)."""
    return external_db.uri
