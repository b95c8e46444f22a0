"""`botstack deploy` with docker compose: deploy, judge the whole stack, roll back by itself,
walk back on request, one deploy at a time; users writing throughout lose nothing."""

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
from tests.integration.harness import PROXY_ENV, Emulator, Injector, all_answered, figure, http_get

pytestmark = pytest.mark.integration

VERSIONS = {
    "deploy-a": ("a" * 40, ""),
    "deploy-b": ("b" * 40, ""),
    "deploy-c": ("c" * 40, ""),
    # Deliberately broken: the API refuses its settings, so the stack never becomes ready.
    "deploy-x": ("e" * 40, "ENV MONGODB_URI=nonsense\n"),
    # Deliberately broken the quiet way: the API is fine, the bot dies at start, every time.
    "deploy-y": ("f" * 40, "ENV BOTSTACK_EXTENSIONS=botstack_crash_at_start\n"),
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
        "BOTSTACK_DEPLOY_STABLE_S": "8",
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
    # With a proxy set for the way out: deploy's checks of the new build on 127.0.0.1 must not use it.
    result = subprocess.run([sys.executable, "-m", "services.cli", "deploy", *args], cwd=ROOT,
                            env={**env, **PROXY_ENV}, capture_output=True, text=True, timeout=600)
    TIMES[f"{len(TIMES) + 1}. {' '.join(args)}"] = time.monotonic() - t0
    return result.returncode, result.stdout + result.stderr


def serving(env) -> str:
    port = subprocess.run(["docker", "compose", "port", "botstack", "8000"], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=True).stdout.strip().rsplit(":", 1)[1]
    return http_get(f"http://127.0.0.1:{port}/version").json()["git_sha"]


def users(env) -> tuple[Emulator, str]:
    """The stack's Bot API emulator, to write to the bot as users do, and the bot's id."""
    port = subprocess.run(["docker", "compose", "port", "telegram", "8081"], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=True).stdout.strip().rsplit(":", 1)[1]
    return Emulator(None, f"http://127.0.0.1:{port}"), env["BOTSTACK_TEST_TOKEN"].split(":")[0]


def deploy_while_users_write(env, tag: str, first_user: int) -> tuple[int, str]:
    """`botstack deploy` of `tag` while ten users write to the bot twice a second between them;
    afterwards every one of their updates is answered, once: a deploy stops the old container
    gracefully (the bot finishes its replies and hands its updates over)."""
    emulator, bot = users(env)
    with Injector(emulator, bot, first_user=first_user) as writing:
        code, out = deploy(env, "--no-build", "--tag", tag, "--sha", sha(tag))
    counts = all_answered(emulator, bot, writing.ids, 120)
    figure(f"deploy of {tag} ({'deployed' if code == 0 else 'failed, rolled back'}) while users wrote: "
           f"{len(counts)} updates, all answered, {sum(n - 1 for n in counts.values())} twice")
    assert set(counts.values()) == {1}, f"sent twice across a graceful stop: {[u for u, n in counts.items() if n > 1]}"
    return code, out


def history(env) -> list[dict]:
    path = os.path.join(env["BOTSTACK_DEPLOY_DIR"], "deploy-history.jsonl")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def sha(tag: str) -> str:
    return VERSIONS[tag][0]


def test_deploy_success_and_rollback(versions, deploy_env):
    env = deploy_env
    code, out = deploy(env, "--no-build", "--tag", "deploy-a", "--sha", sha("deploy-a"))
    assert code == 0 and serving(env) == sha("deploy-a"), out
    code, out = deploy_while_users_write(env, "deploy-b", 920_000)
    assert code == 0 and serving(env) == sha("deploy-b"), out
    emulator, bot = users(env)
    assert sha("deploy-b") in emulator.ask(bot, "/version"), "the old version still answers"
    assert "stability window (8 s) done" in out and "verify (API and bot report the SHA" in out, out
    b = history(env)[-1]
    assert b["result"] == "deployed" and b["from_sha"] == sha("deploy-a")
    assert b["backup"] and b["backup"].startswith("/data/backups/botstack-"), b
    assert [s["step"].split(" ")[0] for s in b["steps"]][:4] == ["preflight", "doctor", "backup", "up"], b["steps"]
    kept = subprocess.run(["docker", "compose", "exec", "-T", "botstack", "botstack", "deploys", "--json"], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    recorded = json.loads(kept.stdout.strip().splitlines()[-1])["deploys"]
    assert recorded and recorded[0]["to_sha"] == sha("deploy-b"), recorded  # the dashboard's copy

    # A broken version: the deploy fails, rolls back to B by itself, and says so.
    code, out = deploy_while_users_write(env, "deploy-x", 930_000)
    assert code == 1, out
    assert "rolling back to " + sha("deploy-b") in out
    assert serving(env) == sha("deploy-b")
    x = history(env)[-1]
    assert x["result"] == "failed, rolled back" and x["to_sha"] == sha("deploy-x")
    assert x["reason"] and x["backup"], x

    # Two deploys at once: the second refuses.
    with open(os.path.join(env["BOTSTACK_DEPLOY_DIR"], "deploy.lock"), "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, out = deploy(env, "--no-build", "--tag", "deploy-a", "--sha", sha("deploy-a"))
        assert code == 1 and "another deploy is running" in out, out
    assert serving(env) == sha("deploy-b")
    figure("deploy durations: " + "; ".join(f"{args}: {t:.1f} s" for args, t in TIMES.items()))


def test_deploy_rolls_back_a_crash_looping_bot(versions, deploy_env):
    env = deploy_env
    code, out = deploy(env, "--no-build", "--tag", "deploy-a", "--sha", sha("deploy-a"))
    assert code == 0, out
    t0 = time.monotonic()
    code, out = deploy_while_users_write(env, "deploy-y", 940_000)
    figure(f"deploy of a crash-looping bot, detected and rolled back in {time.monotonic() - t0:.0f} s")
    assert code == 1, out
    assert "rolling back to " + sha("deploy-a") in out
    assert serving(env) == sha("deploy-a")
    y = history(env)[-1]
    assert y["result"] == "failed, rolled back", y
    assert "bot" in y["reason"], y["reason"]
    code, out = deploy(env, "history")
    assert code == 0 and "failed, rolled back" in out and sha("deploy-y")[:12] in out, out


def test_rollback_walks_back(versions, deploy_env):
    env = deploy_env
    for tag in ("deploy-a", "deploy-b", "deploy-c"):
        code, out = deploy(env, "--no-build", "--tag", tag, "--sha", sha(tag))
        assert code == 0, out
    for back_to in ("deploy-b", "deploy-a"):
        t0 = time.monotonic()
        code, out = deploy(env, "--rollback")
        assert code == 0, out
        assert serving(env) == sha(back_to), f"--rollback should be at {back_to}"
        figure(f"rollback to {back_to}: {time.monotonic() - t0:.0f} s (stability window 8 s)")
    code, out = deploy(env, "--rollback")
    assert code == 1 and "no earlier good version" in out, out
    code, out = deploy(env, "--to", sha("deploy-c")[:12])
    assert code == 0, out
    assert serving(env) == sha("deploy-c")
    assert [e["result"] for e in history(env)][-3:] == ["rolled back", "rolled back", "switched"]
