"""services/common/label_output.py: a non-Python program's lines name it; its status is kept."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.unit.conftest import ROOT

LABEL = [sys.executable, "-m", "services.common.label_output"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LABEL, *args], cwd=ROOT, capture_output=True, timeout=30)


def test_every_line_is_prefixed_and_exit_status_is_kept():
    result = _run("mongodb", "--", "sh", "-c", "echo one; echo two >&2; exit 3")

    assert result.returncode == 3
    assert result.stdout.decode().splitlines() == ["mongodb one", "mongodb two"]
    assert result.stderr == b""  # the child's stderr is labelled on stdout too


def test_child_killed_by_sigterm_gives_143():
    result = _run("mongodb", "--", "sh", "-c", "echo before; kill -TERM $$; echo after")

    assert result.returncode == 128 + signal.SIGTERM == 143
    assert result.stdout.decode().splitlines() == ["mongodb before"]


def test_sigterm_to_the_wrapper_is_forwarded_to_the_child(subprocess_env):
    wrapper = subprocess.Popen(
        [*LABEL, "mongodb", "--", "sh", "-c", "echo ready; exec sleep 30"],
        cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        # The first labelled line proves the child runs and the wrapper's handlers are installed.
        assert wrapper.stdout.readline() == b"mongodb ready\n"
        wrapper.send_signal(signal.SIGTERM)
        assert wrapper.wait(timeout=10) == 143
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait()