"""Scheduled work runs once per interval across a bot restart; admin actions are audited."""

from __future__ import annotations

import json
import secrets
import time

import httpx
import pytest

from tests.integration.harness import wait_until

pytestmark = pytest.mark.integration

INTERVAL_S = 2
JOB_STATE = (
    "import json; from pymongo import MongoClient; "
    "db = MongoClient('mongodb://127.0.0.1:27017/?directConnection=true').botstack; "
    "runs = sorted(d['slot'] for d in db.job_runs.find()); "
    "stats = db.job_stats.find_one({'_id': 'expire_unpaid_orders'}) or {}; "
    "order = db.orders.find_one({'_id': 'o-1'}) or {}; "
    "print(json.dumps({'slots': runs, 'executions': stats.get('executions', 0), "
    "'order': order.get('status'), 'expired_at': str(order.get('expired_at'))}))"
)
OLD_UNPAID_ORDER = (
    "from datetime import datetime, timedelta, timezone; from pymongo import MongoClient; "
    "db = MongoClient('mongodb://127.0.0.1:27017/?directConnection=true').botstack; "
    "db.orders.insert_one({'_id': 'o-1', 'status': 'unpaid', "
    "'created_at': datetime.now(timezone.utc) - timedelta(hours=1)})"
)


def job_state(stack) -> dict:
    code, out = stack.exec(["python", "-c", JOB_STATE])
    assert code == 0, out
    return json.loads(out.strip().splitlines()[-1])


def test_periodic_job_runs_once_per_interval(start_stack):
    stack = start_stack(BOTSTACK_JOB_INTERVAL_S=str(INTERVAL_S))
    stack.wait_healthy()
    code, out = stack.exec(["python", "-c", OLD_UNPAID_ORDER])
    assert code == 0, out
    wait_until(lambda: job_state(stack)["order"] == "expired", 20, "the job to expire the unpaid order")
    expired_at = job_state(stack)["expired_at"]

    # Restart the bot twice inside the observation window.
    for _ in range(2):
        time.sleep(INTERVAL_S * 1.5)
        assert stack.rpc("stopProcess('bot')") == "True"
        assert stack.rpc("startProcess('bot')") == "True"
    wait_until(lambda: len(job_state(stack)["slots"]) >= 6, 40, "six runs")
    state = job_state(stack)
    assert state["executions"] == len(state["slots"]), "a slot's work ran more than once"
    assert len(state["slots"]) <= int(time.time() // INTERVAL_S) - state["slots"][0] + 1, state
    assert state["expired_at"] == expired_at, "the order was expired twice"


def test_admin_action_audited(start_stack, emulator):
    admin_token = secrets.token_hex(24)
    stack = start_stack(BOTSTACK_ADMIN_TOKEN=admin_token)
    stack.wait_healthy()
    emulator.reply_to(stack.bot_id, emulator.inject(stack.bot_id, "/start", user={"id": 5150, "first_name": "Bo"}))

    url = f"{stack.api}/api/v1/admin/users/5150/block"
    assert httpx.post(url, timeout=5).status_code == 401
    assert httpx.post(url, headers={"Authorization": "Bearer wrong-token-of-some-length"}, timeout=5).status_code == 401
    auth = {"Authorization": f"Bearer {admin_token}", "X-Admin-Actor": "alice"}
    assert httpx.get(f"{stack.api}/api/v1/admin/audit", headers=auth, timeout=5).json() == []

    r = httpx.post(url, headers=auth, timeout=5)
    assert r.status_code == 200 and r.json() == {"user_id": 5150, "blocked": True}
    trail = httpx.get(f"{stack.api}/api/v1/admin/audit", headers=auth, timeout=5).json()
    assert len(trail) == 1
    entry = trail[0]
    assert (entry["actor"], entry["action"], entry["target"]) == ("alice", "block_user", "5150")
    assert entry["at"] and entry["token"] and admin_token not in json.dumps(trail)
    assert admin_token not in stack.logs()
