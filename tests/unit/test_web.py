"""services/web/app.py: the dashboard lists what supervisord runs, and still renders without it."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.web.app import create_app
from tests.unit.conftest import wait_until


def _row(page: str, program: str) -> str | None:
    match = re.search(rf'<tr data-program="{re.escape(program)}">(.*?)</tr>', page, re.S)
    return match.group(1) if match else None


def test_page_renders_with_an_error_when_supervisord_is_absent(monkeypatch, tmp_path):
    monkeypatch.setenv("BOTSTACK_SUPERVISOR_SOCKET", str(tmp_path / "no-such.sock"))
    monkeypatch.delenv("SUPERVISOR_SERVER_URL", raising=False)

    with TestClient(create_app()) as client:
        r = client.get("/")

    assert r.status_code == 200
    assert "supervisord is not answering" in r.text
    assert "<tr data-program=" not in r.text
    assert r.headers["cache-control"] == "no-store"


@pytest.fixture
def supervisord(tmp_path, subprocess_env):
    """A real supervisord on a private unix socket, running one program (`sleep 60`)."""
    sock_dir = Path(tempfile.mkdtemp(prefix="bs-sv-"))  # unix socket paths must stay short
    sock = sock_dir / "s.sock"
    conf = tmp_path / "supervisord.conf"
    conf.write_text(
        f"""
[supervisord]
nodaemon=true
logfile={tmp_path}/supervisord.log
pidfile={tmp_path}/supervisord.pid
childlogdir={tmp_path}

[unix_http_server]
file={sock}
chmod=0700

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:sleeper]
command=sleep 60
startsecs=0
autorestart=false
stopasgroup=true
killasgroup=true
stdout_logfile={tmp_path}/sleeper.log
redirect_stderr=true
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)],
        cwd=tmp_path, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: sock.exists() or proc.poll() is not None, 10, what="supervisord's socket")
        assert proc.poll() is None, (tmp_path / "supervisord.log").read_text()
        yield f"unix://{sock}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_page_lists_a_program_supervisord_runs(monkeypatch, supervisord):
    monkeypatch.setenv("SUPERVISOR_SERVER_URL", supervisord)
    monkeypatch.setenv("BOTSTACK_SUPERVISOR_SOCKET", "/nonexistent/ignored.sock")  # the URL wins

    with TestClient(create_app()) as client:

        def sleeper_running():
            row = _row(client.get("/").text, "sleeper")
            return row if row and '<td class="RUNNING">RUNNING</td>' in row else None

        row = wait_until(sleeper_running, 10, what="sleeper RUNNING on the dashboard")
        page = client.get("/").text

    assert "supervisord is not answering" not in page
    pid = re.findall(r"<td>(\d+)</td>", row)
    assert pid and int(pid[0]) > 0
