"""The stack comes up whole: five programs RUNNING, ready, listed, answering, identifiable."""

import re
from datetime import datetime

import httpx
import pytest

from tests.integration.harness import PROGRAMS, figure, http_get, identities, wait_until

pytestmark = pytest.mark.integration

SERVER_FAMILIES = (
    "from supervisor.options import ServerOptions; o = ServerOptions(); "
    "o.realize(['-c', '/app/supervisord.conf']); "
    "import socket; print(*[socket.AddressFamily(c['family']).name for c in o.server_configs])"
)


def test_every_program_runs_and_the_api_is_ready(stack):
    programs = stack.programs()
    assert {n: programs[n]["statename"] for n in PROGRAMS} == {n: "RUNNING" for n in PROGRAMS}
    assert http_get(f"{stack.api}/health").json() == {"status": "ok"}
    assert http_get(f"{stack.api}/ready").json() == {"status": "ready"}


def test_supervisord_starts_its_programs_at_once(stack):
    """Not after its first one-second wait for events (services/start.py ends that wait)."""
    def at(pattern: str) -> datetime:
        stamp = re.search(r"^(\S+ \S+) INFO " + pattern, stack.logs(), re.M).group(1)
        return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")

    gap = (at("spawned: 'mongodb'") - at("supervisord started with pid 1")).total_seconds()
    assert gap < 0.8, f"supervisord spawned its first program {gap:.3f} s after it started"


def test_version_reports_the_build_this_run_made(stack, build_identity):
    for base, program in ((stack.api, "api"), (stack.web, "web")):
        info = http_get(f"{base}/version").json()
        assert info["program"] == program
        assert info["git_sha"] == build_identity["GIT_SHA"]
        assert info["version"] == build_identity["VERSION"]
        assert info["build_time"] == build_identity["BUILD_TIME"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["started_at"])
        assert info["uptime_s"] >= 0


def test_dashboard_lists_every_program_with_the_build(stack, build_identity):
    with stack.dashboard() as web:
        page = web.get("/").text
    for name in PROGRAMS:
        row = re.search(rf'<tr data-program="{name}">(.*?)</tr>', page, re.S)
        assert row, f"{name} missing from the dashboard"
        assert "RUNNING" in row.group(1)
    assert build_identity["GIT_SHA"] in page


def test_bot_answers_version_with_the_built_sha(stack, emulator, build_identity):
    reply = emulator.ask(stack.bot_id, "/version")
    assert f"git_sha {build_identity['GIT_SHA']}" in reply
    assert "started_at " in reply and "uptime_s " in reply


def test_start_stores_the_user_and_greets(stack, emulator):
    before = http_get(f"{stack.api}/api/v1/stats").json()
    update_id = emulator.inject(stack.bot_id, "/start", user={"id": 4242, "first_name": "Grace"})
    assert emulator.reply_to(stack.bot_id, update_id)["text"].startswith("Hello, Grace!")
    after = http_get(f"{stack.api}/api/v1/stats").json()
    assert after["users"] == before["users"] + 1
    # the message is counted with the update's done mark, within the inbox's flush interval
    wait_until(lambda: http_get(f"{stack.api}/api/v1/stats").json()["messages"] == before["messages"] + 1, 5,
               "the message to be counted")


def test_programs_run_as_non_root(stack):
    for name, info in stack.programs().items():
        code, status = stack.exec(["cat", f"/proc/{info['pid']}/status"])
        uid = re.search(r"^Uid:\s+(\d+)", status, re.M).group(1)
        assert uid != "0", f"{name} runs as root"
    code, out = stack.exec(["cat", "/proc/1/status"])
    assert re.search(r"^Uid:\s+(\d+)", out, re.M).group(1) != "0", "supervisord runs as root"


def test_mongodb_listens_on_loopback_only(stack):
    code, out = stack.exec(["cat", "/proc/net/tcp", "/proc/net/tcp6"])
    listeners = [line.split() for line in out.splitlines()[1:] if line.split()[3:4] == ["0A"]]
    on_27017 = [fields[1] for fields in listeners if fields[1].endswith(":6989")]
    assert on_27017, "nothing listens on 27017"
    assert all(addr.startswith(("0100007F:", "00000000000000000000000001000000:")) for addr in on_27017), on_27017


def test_supervisord_is_controlled_only_through_a_private_unix_socket(stack):
    code, out = stack.exec(["stat", "-c", "%a %U %F", "/run/botstack/supervisor.sock"])
    assert out.split()[:2] == ["700", "botstack"] and "socket" in out
    code, out = stack.exec(["python", "-c", SERVER_FAMILIES])
    assert code == 0, out
    assert out.split() == ["AF_UNIX"], "supervisord serves its API on something other than one unix socket"


def rss_mib(stack, pid: int) -> float:
    code, status = stack.exec(["cat", f"/proc/{pid}/status"])
    return int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1)) / 1024


def streamed(total: int, piece: int = 1 << 16):
    """A body of `total` bytes sent in chunks, with no Content-Length to check beforehand."""
    for start in range(0, total, piece):
        yield b"x" * min(piece, total - start)


def test_an_oversized_body_is_refused_as_it_arrives(stack):
    before = stack.programs()
    api_rss = rss_mib(stack, before["api"]["pid"])
    json_type = {"content-type": "application/json"}
    for url, headers, total in ((f"{stack.api}/api/v1/events", json_type, 256 << 20),
                                (f"{stack.api}/telegram/webhook", json_type, 64 << 20),
                                (f"{stack.web}/login", {"content-type": "application/x-www-form-urlencoded"}, 8 << 20)):
        answer = httpx.post(url, content=streamed(total), headers=headers, timeout=60)
        assert answer.status_code == 413, (url, answer.status_code, answer.text[:200])
        assert "request body too large" in answer.json()["detail"]
    grown = rss_mib(stack, before["api"]["pid"]) - api_rss
    figure(f"oversized bodies: 256 MiB streamed to the API refused with 413; its memory grew {grown:.1f} MiB")
    assert grown < 16, f"the API's memory grew {grown:.1f} MiB: it read the body"
    assert identities(stack.programs()) == identities(before)
    assert http_get(f"{stack.api}/health").status_code == 200
