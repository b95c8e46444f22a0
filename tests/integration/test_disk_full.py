"""The database's disk fills up during work (a VPS's disk, a MongoDB Atlas free-tier quota): no
update is lost, nothing is restarted for it, the operator is told why, and it all resumes on its
own once there is room again.

The data volume here is a 64 MiB tmpfs, filled by a file written next to the database.
"""

from __future__ import annotations

import re
import time
import uuid

import docker
import httpx
import pytest

from tests.integration.harness import all_answered, figure, http_get, identities, new_token, replies, wait_until

pytestmark = pytest.mark.integration

ADMIN_CHAT = 434343
RUNNING = ("mongodb", "api", "web", "bot", "healthcheck")


@pytest.fixture
def small_volume(docker_client):
    name = f"botstack-test-full-{uuid.uuid4().hex[:8]}"
    docker_client.volumes.create(name, driver="local", driver_opts={
        "type": "tmpfs", "device": "tmpfs", "o": "size=64m,uid=10001,gid=10001,mode=0750"})
    yield name
    try:
        docker_client.volumes.get(name).remove(force=True)
    except docker.errors.APIError:
        pass


def user(n: int) -> dict:
    return {"id": 8_000_000 + n, "first_name": f"Full{n}"}


def alerts(emulator, bot: str) -> list[str]:
    return [m["text"] for m in emulator.sent(bot) if m.get("chat_id") == ADMIN_CHAT and m.get("kind") == "message"]


def test_full_disk_mid_burst_loses_nothing_and_says_so(small_volume, start_stack, emulator):
    """Updates and API writes in flight when the disk fills: writes are refused (503, updates left
    at Telegram), none acknowledged is lost; degraded and one alert, nothing restarted; all of it
    answered exactly once after room is made."""
    token = new_token()
    bot = token.split(":")[0]
    stack = start_stack(volumes={small_volume: "/data/db"}, TELEGRAM_BOT_TOKEN=token,
                        BOTSTACK_ALERT_CHAT_IDS=str(ADMIN_CHAT))
    stack.wait_healthy()
    wait_until(lambda: stack.health()[1].startswith("healthy"), 60, "a healthy verdict")
    wait_until(lambda: stack.bot_status().get("role") == "active", 30, "the bot polling")
    before = stack.programs()

    ids = emulator.inject_many(bot, [(f"/remember f{i}", user(i)) for i in range(150)])
    wait_until(lambda: sum(1 for n in replies(emulator, bot, ids).values() if n) >= 10, 60, "10 replies",
               interval_s=0.1)
    code, out = stack.exec(["sh", "-c", "dd if=/dev/zero of=/data/db/ballast bs=1M 2>&1; df -h /data/db | tail -1"])
    assert "No space left on device" in out, out
    answered_at_full = sum(1 for n in replies(emulator, bot, ids).values() if n)
    t_full = time.monotonic()
    # The database keeps taking writes while its log has room left (SQLite reuses its WAL): API
    # clients write until it is used up, or a bounded 64 MiB.
    acked, refused = [], 0
    with httpx.Client(base_url=stack.api, timeout=10) as client:
        for i in range(256):
            r = client.post("/api/v1/events", json={"key": f"full-{i}", "type": "test", "payload": {"pad": "x" * 262_144}})
            if r.status_code == 201:
                acked.append(f"full-{i}")
            else:
                assert r.status_code == 503 and "not stored: the database" in r.text, r.text
                assert r.headers.get("retry-after") == "5"
                refused += 1
                if refused >= 3:
                    break
    assert refused, "the database took 64 MiB on a full disk"

    def refusing() -> str | None:
        code, out = stack.health()
        return out if out.startswith("degraded") and "refuses writes" in out else None

    verdict = wait_until(refusing, 30, "a degraded verdict naming the refused writes")
    assert "disk is full" in verdict, verdict
    ready = http_get(f"{stack.api}/ready")
    assert ready.status_code == 503 and "disk is full" in ready.json()["reason"], ready.text
    told = wait_until(lambda: next((a for a in alerts(emulator, bot) if "api not ready" in a), None), 40,
                      "the admins told")
    detected_s = time.monotonic() - t_full
    end = time.monotonic() + 20
    while time.monotonic() < end:  # users keep writing while the disk is full
        ids.append(emulator.inject(bot, f"/remember f{len(ids)}", user=user(len(ids))))
        time.sleep(2)
    answered_while_full = sum(1 for n in replies(emulator, bot, ids).values() if n)
    assert identities(stack.programs(), RUNNING) == identities(before, RUNNING), "a program was restarted"

    code, out = stack.exec(["rm", "/data/db/ballast"])
    assert code == 0, out
    t_room = time.monotonic()
    wait_until(lambda: stack.health()[1].startswith("healthy"), 60, "healthy again")
    counts = all_answered(emulator, bot, ids, 180)
    resumed_s = time.monotonic() - t_room
    wait_until(lambda: any("api is ready again" in a for a in alerts(emulator, bot)), 30, "the all-clear")
    notes = stack.db(f"[len(d.get('notes', [])) for d in db.user_contexts.find("
                     f"{{'_id': {{'$gte': 8000000, '$lt': {8_000_000 + len(ids)}}}}})]")
    kept = stack.db(f"db.events.count_documents({{'key': {{'$in': {acked}}}}})")
    twice = sum(n - 1 for n in counts.values())
    logs = stack.logs()
    figure(f"disk full mid-burst: {answered_at_full} of 150 answered when the disk filled; {len(acked)} API writes "
           f"of 256 KiB acknowledged, then refused (503); degraded and alerted {detected_s:.1f} s after the fill; "
           f"{answered_while_full} of {len(ids)} updates answered by the end of 20 s full, all {len(ids)} "
           f"{resumed_s:.1f} s after room was made, {twice} twice; notes {sum(notes)} in {len(notes)} users; "
           f"acknowledged writes kept {kept} of {len(acked)}; 0 restarts; alert: {told[:150]!r}")
    assert identities(stack.programs(), RUNNING) == identities(before, RUNNING), "a program was restarted"
    assert "restart program=" not in logs
    assert kept == len(acked), "an acknowledged write was lost"
    assert len(notes) == len(ids) and set(notes) == {1}, "a note lost or stored twice"
    assert re.search(r"(inbox unavailable|lease renewal failed|lease unavailable) \(\w+: database or disk is full", logs), "the bot's log says why"
    assert httpx.get(f"{stack.api}/ready", timeout=5).status_code == 200
