"""`botstack deploy` with docker compose: deploy, verify, roll back by itself, one at a time."""

from __future__ import annotations

import fcntl
import io
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from tests.integration.conftest import OFFLINE, ROOT
from tests.integration.harness import http_get

pytestmark = pytest.mark.integration

VERSIONS = {
    "deploy-a": ("a" * 40, ""),
    "deploy-b": ("b" * 40, ""),
    # Deliberately broken: the API refuses its settings, so the stack never becomes ready.
    "deploy-c": ("c" * 40, "ENV MONGODB_URI=nonsense\n"),
}


@pytest.fixture(scope="module")
def versions(docker_client, stack_image):
    for tag, (sha, extra) in VERSIONS.items():
        dockerfile = f"FROM {stack_image}\nENV BOTSTACK_GIT_SHA={sha}\n{extra}"
        docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"botstack:{tag}", rm=True)
    yield
    for tag in VERSIONS:
        docker_client.images.remove(f"botstack:{tag}", force=True)


@pytest.fixture
def deploy_env(tmp_path, emulator_image, bot_token, log_archive):
    project = f"botstack-deploy-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "COMPOSE_FILE": os.pathsep.join(["compose.yaml", str(OFFLINE / "compose.offline.yaml")]),
        "COMPOSE_PROJECT_NAME": project,
        "BOTSTACK_TEST_EMULATOR_IMAGE": emulator_image,
        "BOTSTACK_TEST_TOKEN": bot_token,
        "BOTSTACK_API_PUBLISH": "127.0.0.1:",
        "BOTSTACK_WEB_PUBLISH": "127.0.0.1:",
        "BOTSTACK_DEPLOY_DIR": str(tmp_path / "state"),
        "BOTSTACK_DEPLOY_WAIT_S": "45",
    }
    yield env
    logs = subprocess.run(["docker", "compose", "logs", "--no-color"], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    log_archive.add(project, logs.stdout)
    subprocess.run(["docker", "compose", "down", "--volumes", "--timeout", "30"], cwd=ROOT, env=env,
                   capture_output=True)


TIMES: dict[str, float] = {}


def deploy(env, *args: str) -> tuple[int, str]:
    t0 = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "services.cli", "deploy", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    TIMES[f"{len(TIMES) + 1}. {' '.join(args)}"] = time.monotonic() - t0
    return result.returncode, result.stdout + result.stderr


def serving(env) -> str:
    port = subprocess.run(["docker", "compose", "port", "botstack", "8000"], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=True).stdout.strip().rsplit(":", 1)[1]
    return http_get(f"http://127.0.0.1:{port}/version").json()["git_sha"]


def history(env) -> list[dict]:
    path = os.path.join(env["BOTSTACK_DEPLOY_DIR"], "deploy-history.jsonl")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_deploy_success_and_rollback(versions, deploy_env):
    env = deploy_env
    for tag in ("deploy-a", "deploy-b"):
        code, out = deploy(env, "--no-build", "--tag", tag, "--sha", VERSIONS[tag][0])
        assert code == 0, out
        assert serving(env) == VERSIONS[tag][0]
    b = history(env)[-1]
    assert b["result"] == "deployed" and b["from_sha"] == VERSIONS["deploy-a"][0]
    assert b["backup"] and b["backup"].startswith("/data/backups/botstack-"), b

    # A broken version: the deploy fails, rolls back to B by itself, and says so.
    code, out = deploy(env, "--no-build", "--tag", "deploy-c", "--sha", VERSIONS["deploy-c"][0])
    assert code == 1, out
    assert "rolling back to " + VERSIONS["deploy-b"][0] in out
    assert serving(env) == VERSIONS["deploy-b"][0]
    c = history(env)[-1]
    assert c["result"] == "failed, rolled back" and c["to_sha"] == VERSIONS["deploy-c"][0]
    assert c["reason"] and c["backup"], c

    # Two deploys at once: the second refuses.
    with open(os.path.join(env["BOTSTACK_DEPLOY_DIR"], "deploy.lock"), "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, out = deploy(env, "--no-build", "--tag", "deploy-a", "--sha", VERSIONS["deploy-a"][0])
        assert code == 1 and "another deploy is running" in out, out
    assert serving(env) == VERSIONS["deploy-b"][0]

    # On demand: back to the version before B.
    code, out = deploy(env, "--rollback")
    assert code == 0, out
    assert serving(env) == VERSIONS["deploy-a"][0]
    assert history(env)[-1]["result"] == "rolled back by request"
    print("\ndeploy durations: " + "; ".join(f"{args}: {t:.1f} s" for args, t in TIMES.items()))
