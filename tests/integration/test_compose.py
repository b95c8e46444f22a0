"""The shipped compose.yaml: valid, and `docker compose up --wait` brings a healthy stack."""

import json
import os
import subprocess
import uuid

import pytest

from tests.integration.conftest import OFFLINE, ROOT
from tests.integration.harness import http_get

pytestmark = pytest.mark.integration


def compose(*args: str, env: dict | None = None, files=("compose.yaml",), timeout=300):
    cmd = ["docker", "compose", *(x for f in files for x in ("-f", str(f))), *args]
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def test_compose_file_is_valid():
    result = compose("config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_compose_up_wait_serves_a_healthy_stack(stack_image, emulator_image, bot_token, build_identity, log_archive):
    project = f"botstack-test-{uuid.uuid4().hex[:8]}"
    env = {
        "COMPOSE_PROJECT_NAME": project,
        "BOTSTACK_TAG": stack_image.split(":", 1)[1],
        "BOTSTACK_TEST_EMULATOR_IMAGE": emulator_image,
        "BOTSTACK_TEST_TOKEN": bot_token,
        # Random free host ports on loopback, so the test never collides with a running stack.
        "BOTSTACK_API_PUBLISH": "127.0.0.1:",
        "BOTSTACK_WEB_PUBLISH": "127.0.0.1:",
    }
    files = ("compose.yaml", OFFLINE / "compose.offline.yaml")
    try:
        up = compose("up", "--detach", "--wait", "--wait-timeout", "120", env=env, files=files)
        assert up.returncode == 0, up.stdout + up.stderr

        port = compose("port", "botstack", "8000", env=env, files=files).stdout.strip().rsplit(":", 1)[1]
        assert http_get(f"http://127.0.0.1:{port}/ready").status_code == 200
        assert http_get(f"http://127.0.0.1:{port}/version").json()["git_sha"] == build_identity["GIT_SHA"]

        ps = compose("ps", "--format", "json", "botstack", env=env, files=files).stdout
        service = json.loads(ps.splitlines()[0]) if ps.lstrip().startswith("{") else json.loads(ps)[0]
        assert service["Health"] == "healthy"
        inspect = json.loads(subprocess.run(["docker", "inspect", service["ID"]], capture_output=True,
                                            text=True, check=True).stdout)[0]
        mounts = {m["Destination"]: m for m in inspect["Mounts"]}
        assert mounts["/data/db"]["Type"] == "volume"
        assert mounts["/data/db"]["Name"] == f"{project}_botstack-data"
        assert inspect["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"

        # Read-only but for its volumes and tmpfs: the running stack cannot change its own image.
        assert inspect["HostConfig"]["ReadonlyRootfs"] is True
        touch = compose("exec", "-T", "botstack", "sh", "-c", "echo x >> /var/tmp/x", env=env, files=files)
        assert touch.returncode != 0 and "Read-only file system" in touch.stderr, touch.stderr  # 1777 in the image
        backup = compose("exec", "-T", "botstack", "botstack", "backup", env=env, files=files)
        assert backup.returncode == 0, backup.stdout + backup.stderr
    finally:
        log_archive.add(project, compose("logs", "--no-color", env=env, files=files).stdout)
        compose("down", "--volumes", "--timeout", "30", env=env, files=files)
