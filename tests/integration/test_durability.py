"""Safe change of a running system: an ordered, fast stop, and no acknowledged write lost.

Offline these run against the FerretDB stand-in (SQLite), which commits each write before it
answers: a write it acknowledged survives the server process being killed. That is the
guarantee asserted here. Journal semantics (j=true surviving a power loss, and mongod's
"unclean shutdown" recovery message) are only real with MongoDB: BOTSTACK_TEST_MONGOD=real.
"""

from __future__ import annotations

import re
import time
import uuid

import docker
import httpx
import pytest

from tests.integration.harness import figure, wait_until

pytestmark = pytest.mark.integration

STOP_ORDER = ("healthcheck", "bot", "web", "api", "mongodb")
GRACE_S = 120  # compose.yaml's stop_grace_period


@pytest.fixture
def volume(docker_client):
    """A named volume for /data/db that outlives the containers of one test (requested
    before start_stack, so it is removed after them)."""
    name = f"botstack-test-data-{uuid.uuid4().hex[:8]}"
    docker_client.volumes.create(name)
    yield name
    try:
        docker_client.volumes.get(name).remove(force=True)
    except docker.errors.APIError:  # already gone
        pass


def write_events(stack, prefix: str, n: int) -> None:
    with httpx.Client(base_url=stack.api, timeout=10) as client:
        for i in range(n):
            r = client.post("/api/v1/events", json={"key": f"{prefix}-{i}", "type": "test", "payload": {"i": i}})
            assert r.status_code == 201, r.text


def event_count(stack) -> int:
    return httpx.get(f"{stack.api}/api/v1/events/count", timeout=10).json()["events"]


def test_sigterm_stops_in_order_and_fast(volume, start_stack):
    stack = start_stack(volumes={volume: "/data/db"})
    stack.wait_healthy()
    mark = len(stack.logs())
    container = stack.container.get_wrapped_container()
    t0 = time.monotonic()
    container.stop(timeout=GRACE_S)
    elapsed = time.monotonic() - t0
    container.reload()
    figure(f"docker stop of a healthy stack: {elapsed:.1f} s")
    assert container.attrs["State"]["ExitCode"] == 0
    assert elapsed < GRACE_S
    after = stack.logs()[mark:]
    stopped = re.findall(r"stopped: (\w+) \(", after)
    assert tuple(stopped) == STOP_ORDER, stopped
    assert "SIGKILL" not in after, "a program had to be killed"

    again = start_stack(volumes={volume: "/data/db"})
    again.wait_healthy()
    assert "unclean shutdown" not in again.logs().lower()


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_acknowledged_writes_survive_restart(volume, start_stack, how):
    stack = start_stack(volumes={volume: "/data/db"})
    stack.wait_healthy()
    wait_until(lambda: httpx.get(f"{stack.api}/version").json()["schema"]["api"] >= 1, 30, "the API's migration")
    write_events(stack, how, 1000)
    container = stack.container.get_wrapped_container()
    if how == "stop":
        container.stop(timeout=GRACE_S)
    else:
        container.kill()  # SIGKILL to the whole container: no program gets to shut down

    again = start_stack(volumes={volume: "/data/db"})
    again.wait_healthy()
    assert event_count(again) == 1000
    # Retrying an acknowledged write (a client that lost the answer) stores nothing twice.
    with httpx.Client(base_url=again.api, timeout=10) as client:
        for i in (0, 499, 999):
            r = client.post("/api/v1/events", json={"key": f"{how}-{i}", "type": "test"})
            assert r.status_code == 200 and r.json()["created"] is False
    assert event_count(again) == 1000
