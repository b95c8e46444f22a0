"""services/mongodb/run: mongod's lines name it, mongod is the process supervisord signals, and a
stop of the whole process group keeps mongod's shutdown lines."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from tests.unit.conftest import ROOT

RUN = ["bash", str(ROOT / "services" / "mongodb" / "run")]

# A `mongod` that says hello, and on SIGTERM takes a moment to shut down, saying so.
FAKE_MONGOD = """#!/bin/sh
trap 'sleep 0.3; echo "shutdown complete" >&2; exit 0' TERM
echo "started with $*"
echo "warning on stderr" >&2
case "$1" in --fail) exit 3 ;; esac
while :; do sleep 0.05; done
"""


def _env(tmp_path) -> dict[str, str]:
    fake = tmp_path / "mongod"
    fake.write_text(FAKE_MONGOD)
    fake.chmod(0o755)
    (tmp_path / "db").mkdir(exist_ok=True)
    return {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "BOTSTACK_RUN_DIR": str(tmp_path)}


def test_every_line_is_prefixed_and_exit_status_is_kept(tmp_path):
    result = subprocess.run([*RUN, "--fail", "--dbpath", str(tmp_path / "db")], env=_env(tmp_path),
                            capture_output=True, timeout=30)

    assert result.returncode == 3
    assert result.stdout.decode().splitlines() == [f"mongodb started with --fail --dbpath {tmp_path / 'db'}",
                                                   "mongodb warning on stderr"]
    assert result.stderr == b""  # stderr is labelled on stdout too


def test_a_data_folder_it_cannot_use_is_one_line_exit_78_and_said_to_the_sidecar(tmp_path):
    """No mongod started: one line naming the folder and the fix, exit 78 (a setting, not a
    crash), and the line left in the run folder for the sidecar's verdict; gone once it starts.
    (A folder this user cannot write: test_settings.py's integration test, as the image's user.)"""
    missing = tmp_path / "nowhere"
    result = subprocess.run([*RUN, "--fail", "--dbpath", str(missing)], env=_env(tmp_path),
                            capture_output=True, timeout=30)

    assert result.returncode == 78 and result.stdout == b""
    line = result.stderr.decode()
    assert line.count("\n") == 1 and line.startswith(f"mongodb: configuration error: {missing}: does not exist ("), line
    assert "chown -R 10001:0" in line and "mount an empty volume there" in line, line
    assert (tmp_path / "mongodb.refused").read_text() == line

    missing.mkdir()
    subprocess.run([*RUN, "--fail", "--dbpath", str(missing)], env=_env(tmp_path), capture_output=True, timeout=30)
    assert not (tmp_path / "mongodb.refused").exists(), "a refusal still told once mongod started"


def test_a_stop_of_the_process_group_keeps_mongods_last_lines(tmp_path):
    # supervisord's stopasgroup: SIGTERM to every process of the group, the labeller included.
    proc = subprocess.Popen([*RUN, "--port", "1", "--dbpath", str(tmp_path / "db")], env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert proc.stdout.readline() == f"mongodb started with --port 1 --dbpath {tmp_path / 'db'}\n".encode()
        deadline = time.monotonic() + 10
        while os.path.basename(os.readlink(f"/proc/{proc.pid}/exe")) == "bash" and time.monotonic() < deadline:
            time.sleep(0.02)  # until the script has exec'd into mongod
        assert "mongod" in open(f"/proc/{proc.pid}/cmdline", "rb").read().decode(), "supervisord would signal a wrapper"
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        lines = proc.stdout.read().decode().splitlines()  # the shell may report its killed `sleep`
        assert lines[-1] == "mongodb shutdown complete" and all(line.startswith("mongodb ") for line in lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
