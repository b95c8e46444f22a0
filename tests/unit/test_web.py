"""services/web/: the dashboard lists what supervisord runs, still renders without it, and lets
nobody in without the password."""

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

from services.common.settings import load_settings
from services.web.app import create_app
from tests.unit.conftest import wait_until

PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
def web_password(monkeypatch):
    monkeypatch.setenv("BOTSTACK_WEB_PASSWORD", PASSWORD)
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:9/?directConnection=true")
    monkeypatch.setenv("BOTSTACK_MONGODB_TIMEOUT_MS", "200")


def logged_in(client: TestClient) -> TestClient:
    r = client.post("/login", data={"password": PASSWORD, "next": "/"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    return client


def _row(page: str, program: str) -> str | None:
    match = re.search(rf'<tr data-program="{re.escape(program)}">(.*?)</tr>', page, re.S)
    return match.group(1) if match else None


def test_page_renders_with_an_error_when_supervisord_is_absent(monkeypatch, tmp_path):
    monkeypatch.setenv("BOTSTACK_SUPERVISOR_SOCKET", str(tmp_path / "no-such.sock"))
    monkeypatch.delenv("SUPERVISOR_SERVER_URL", raising=False)

    with TestClient(create_app()) as client:
        r = logged_in(client).get("/")

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
        logged_in(client)

        def sleeper_running():
            row = _row(client.get("/").text, "sleeper")
            return row if row and '<td class="state RUNNING">RUNNING</td>' in row else None

        row = wait_until(sleeper_running, 10, what="sleeper RUNNING on the dashboard")
        page = client.get("/").text

    assert "supervisord is not answering" not in page
    pid = re.findall(r'<td class="pid">(\d+)</td>', row)
    assert pid and int(pid[0]) > 0


def test_without_a_session_pages_redirect_to_login_data_is_401_and_actions_403():
    with TestClient(create_app()) as client:
        for path in ("/", "/timeline", "/bot", "/operations", "/confirm?action=backup"):
            r = client.get(path, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
        assert client.get("/overview.json").status_code == 401
        r = client.post("/actions/restart", data={"target": "bot", "confirm": "yes"})
        assert r.status_code == 403
        assert client.get("/health").status_code == 200  # the probe's endpoint stays open


def test_a_wrong_password_is_refused_and_the_cookie_is_httponly_and_samesite():
    with TestClient(create_app()) as client:
        r = client.post("/login", data={"password": "wrong-password-123", "next": "/"}, follow_redirects=False)
        assert r.status_code == 401 and "Wrong password" in r.text
        r = client.post("/login", data={"password": PASSWORD, "next": "https://evil.example/"}, follow_redirects=False)
        assert r.headers["location"] == "/"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert client.get("/overview.json").status_code == 200
        client.post("/logout")
        assert client.get("/overview.json").status_code == 401


def test_an_action_needs_its_confirmation():
    with TestClient(create_app()) as client:
        logged_in(client)
        assert "Yes, restart bot" in client.get("/confirm?action=restart&target=bot").text
        r = client.post("/actions/restart", data={"target": "bot"})
        assert r.status_code == 400 and "not confirmed" in r.text


def test_an_oversized_form_is_413():
    with TestClient(create_app()) as client:
        r = client.post("/login", data={"password": "x" * 20000})
        assert r.status_code == 413


def test_production_without_credentials_refuses_to_start(monkeypatch, subprocess_env):
    env = subprocess_env(BOTSTACK_ENV="production")
    result = subprocess.run([sys.executable, "-c", "from services.web.app import create_app; create_app()"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    assert result.stderr.strip().startswith("web: configuration error: BOTSTACK_WEB_PASSWORD: is required")


def test_a_dashboard_without_credentials_is_named_by_the_others_not_called_a_crash(monkeypatch):
    """The sidecar, /ready and `botstack status` read config_problems: "web: configuration error:
    BOTSTACK_WEB_PASSWORD ..." (and the sidecar does not start it again for it), not "web: FATAL
    (crash loop)" retried with backoff."""
    for name in ("BOTSTACK_WEB_PASSWORD", "BOTSTACK_ADMIN_TOKEN", "BOTSTACK_WEB_READ_ONLY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BOTSTACK_ENV", "production")
    assert load_settings("healthcheck").config_problems["web"].startswith(
        "BOTSTACK_WEB_PASSWORD: is required by the web program in production (or set BOTSTACK_WEB_READ_ONLY=true")
    monkeypatch.setenv("BOTSTACK_WEB_READ_ONLY", "true")
    assert "web" not in load_settings("healthcheck").config_problems


def test_a_password_pasted_with_a_line_break_stops_only_the_dashboard_with_one_line(subprocess_env):
    env = subprocess_env(BOTSTACK_ENV="production", BOTSTACK_WEB_PASSWORD="correct horse battery\n")
    result = subprocess.run([sys.executable, "-m", "services.web"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 78
    assert result.stderr == ("web: configuration error: BOTSTACK_WEB_PASSWORD: starts or ends with a space or line "
                             "break (pasted with the password?): remove it, or the password typed at the login "
                             "never matches\n")


def test_read_only_mode_reads_without_login_and_never_acts(monkeypatch):
    monkeypatch.delenv("BOTSTACK_WEB_PASSWORD")
    monkeypatch.setenv("BOTSTACK_WEB_READ_ONLY", "true")
    with TestClient(create_app()) as client:
        assert client.get("/", follow_redirects=False).status_code == 200
        assert client.post("/actions/backup", data={"confirm": "yes"}).status_code == 403
