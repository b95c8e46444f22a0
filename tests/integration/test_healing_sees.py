"""Healing that sees everything: crash cycles, a hung healer, a bad setting that stays in its
program, an external MongoDB, and alerts to the admins in Telegram.

Times are printed (`pytest -s`) for the issue's note.
"""

from __future__ import annotations

import json
import re
import secrets
import time

import httpx
import pytest

from tests.integration.harness import all_answered, figure, http_get, identities, new_token, remember, wait_until

pytestmark = pytest.mark.integration

ADMIN_CHAT = 424242
OTHERS = ("mongodb", "api", "web", "bot")
REFUSED = "TELEGRAM_BOT_TOKEN was refused by the Bot API (401 Unauthorized)"


def alerts(emulator, bot_id: str) -> list[str]:
    return [m["text"] for m in emulator.sent(bot_id) if m.get("chat_id") == ADMIN_CHAT and m.get("kind") == "message"]


def docker_health(stack) -> str:
    container = stack.container.get_wrapped_container()
    container.reload()
    return container.attrs["State"]["Health"]["Status"]


def settled(stack) -> dict:
    stack.wait_healthy()
    wait_until(lambda: stack.health()[1].startswith("healthy"), 60, "a healthy verdict")
    return stack.programs()


def alerting_stack(start_stack, **env):
    token = new_token()
    stack = start_stack(TELEGRAM_BOT_TOKEN=token, BOTSTACK_ALERT_CHAT_IDS=str(ADMIN_CHAT), **env)
    return stack, token


def test_crash_cycle_is_unhealthy(start_stack, emulator):
    """Killed every 7 s while users keep writing: unhealthy within a minute, one alert, and every
    update sent during the cycle answered, its note stored exactly once."""
    stack, token = alerting_stack(start_stack)
    settled(stack)
    t0 = time.monotonic()
    unhealthy_at = docker_unhealthy_at = None
    kills = 0
    ids: list[int] = []
    while time.monotonic() - t0 < 90 and docker_unhealthy_at is None:
        ids.append(remember(emulator, bot_id(token), len(ids)))
        if time.monotonic() - t0 >= kills * 7:
            stack.signal(stack.bot_pid(), "KILL")
            kills += 1
        code, out = stack.health()
        if unhealthy_at is None and code == 1 and re.search(r"bot: crash cycle: \d+ restarts", out):
            unhealthy_at = time.monotonic() - t0
            verdict = out
        if unhealthy_at is not None and docker_health(stack) == "unhealthy":
            docker_unhealthy_at = time.monotonic() - t0
        time.sleep(0.5)
    figure(f"crash cycle (bot SIGKILLed every 7 s): verdict unhealthy {unhealthy_at:.0f} s after the first "
          f"crash, Docker unhealthy after {docker_unhealthy_at:.0f} s, {kills} kills")
    assert unhealthy_at is not None and unhealthy_at <= 60, "the verdict never named the crash cycle"
    assert docker_unhealthy_at is not None and docker_unhealthy_at <= 90
    assert "(last: exited unexpectedly" in verdict, verdict
    wait_until(lambda: len([a for a in alerts(emulator, bot_id(token)) if "crash cycle" in a]) == 1, 20,
               "the crash-cycle alert")
    sent = alerts(emulator, bot_id(token))
    figure(f"alerts for {kills} crashes: {len(sent)}: {sent}")
    assert len([a for a in sent if "crash cycle" in a]) == 1
    assert len(sent) <= 3, sent
    repeated = sum(n - 1 for n in all_answered(emulator, bot_id(token), ids, 120).values())
    notes = stack.db("[len(d.get('notes', [])) for d in db.user_contexts.find({'_id': {'$gte': 7500000}})]")
    figure(f"crash cycle under traffic: {len(ids)} updates sent during {kills} kills, all answered, "
           f"{repeated} replies sent twice, notes {sum(notes)} in {len(notes)} users")
    assert len(notes) == len(ids) and set(notes) == {1}, "a note lost or stored twice"


def bot_id(token: str) -> str:
    return token.split(":")[0]


def answered_with_notes(stack, emulator, bot: str, ids: list[int]) -> tuple[int, list[int]]:
    """Once every update is answered (60 s at most): the replies sent twice, and how many notes
    each user who sent /remember has (1 each when nothing was lost or stored twice)."""
    repeated = sum(n - 1 for n in all_answered(emulator, bot, ids, 60).values())
    notes = stack.db("[len(d.get('notes', [])) for d in db.user_contexts.find({'_id': {'$gte': 7500000}})]")
    return repeated, notes


def test_hung_sidecar_is_healed(start_stack, emulator):
    """SIGSTOP the sidecar while users keep writing: a new sidecar within 15 s, nothing else
    restarted, and every update sent meanwhile answered, its note stored exactly once."""
    stack, token = alerting_stack(start_stack)
    before = settled(stack)
    old = before["healthcheck"]["pid"]
    ids = [remember(emulator, bot_id(token), n) for n in range(20)]
    t0 = time.monotonic()
    stack.signal(old, "STOP")

    def replaced() -> bool:
        ids.append(remember(emulator, bot_id(token), len(ids)))  # traffic all along
        return (p := stack.programs()["healthcheck"])["pid"] != old and p["statename"] in ("STARTING", "RUNNING")

    wait_until(replaced, 20, "a new sidecar process", interval_s=0.2)
    healed = time.monotonic() - t0
    repeated, notes = answered_with_notes(stack, emulator, bot_id(token), ids)
    figure(f"hung sidecar (SIGSTOP): a new sidecar after {healed:.1f} s; {len(ids)} updates sent around it, "
           f"all answered, {repeated} replies sent twice, notes {sum(notes)} in {len(notes)} users")
    assert healed <= 15
    assert len(notes) == len(ids) and set(notes) == {1}, "a note lost or stored twice"
    assert "restart program=healthcheck cause=watchdog" in stack.logs()
    wait_until(lambda: stack.db("db.health_events.count_documents({'cause': 'watchdog'})") == 1, 30,
               "the new sidecar to record its predecessor's kill")
    assert identities(stack.programs(), OTHERS) == identities(before, OTHERS), "another program was restarted"
    wait_until(lambda: stack.health()[1].startswith("healthy"), 30, "a fresh, healthy verdict")


def test_a_crash_while_the_sidecar_hangs_is_told_by_the_next_one(start_stack, emulator):
    """The bot is SIGKILLed while the sidecar is hung (SIGSTOP) and users keep writing:
    supervisord restarts the bot at once, nobody watching; the sidecar that replaces the hung
    one finds the bot's new pid against its predecessor's last verdict, records the crash and
    tells the admins. Every update answered, its note stored exactly once."""
    stack, token = alerting_stack(start_stack)
    before = settled(stack)
    sidecar, bot = before["healthcheck"]["pid"], before["bot"]["pid"]
    ids = [remember(emulator, bot_id(token), n) for n in range(10)]
    stack.signal(sidecar, "STOP")
    stack.signal(bot, "KILL")
    t0 = time.monotonic()

    def told() -> bool:
        ids.append(remember(emulator, bot_id(token), len(ids)))  # traffic all along
        return any("bot died (" in a and f"(pid {bot} -> " in a for a in alerts(emulator, bot_id(token)))

    wait_until(told, 45, "the next sidecar telling the crash it did not see", interval_s=0.5)
    told_s = time.monotonic() - t0
    assert stack.programs()["healthcheck"]["pid"] != sidecar
    wait_until(lambda: stack.db("db.health_events.count_documents({'program': 'bot', 'cause': 'crash'})") == 1,
               30, "the crash recorded in health_events")
    repeated, notes = answered_with_notes(stack, emulator, bot_id(token), ids)
    figure(f"crash while the sidecar hangs: told {told_s:.1f} s after the kill by the next sidecar; "
           f"{len(ids)} updates sent around it, all answered, {repeated} replies sent twice, "
           f"notes {sum(notes)} in {len(notes)} users")
    assert len(notes) == len(ids) and set(notes) == {1}, "a note lost or stored twice"
    wait_until(lambda: stack.health()[1].startswith("healthy"), 30, "a fresh, healthy verdict")


def crashes_seen(stack, program: str) -> int:
    """How many crashes of `program` the sidecar's latest verdict counts (its alert is queued by then)."""
    code, out = stack.exec(["cat", "/run/botstack/health.json"])
    return json.loads(out)["programs"][program]["restarts"]["crash"] if code == 0 else -1


def test_alerts_waiting_when_the_hung_sidecar_is_killed_are_sent_by_the_next_one(start_stack, emulator):
    """The alert channel is slow (its next POST answered 12 s late) when the bot crashes, and the
    web right after: the web's alert waits behind the bot's. Then the sidecar hangs (SIGSTOP) and
    its watchdog kills it, users writing all along. The bot's alert, already being delivered,
    arrives once; the web's, left waiting, is sent by the next sidecar, marked late. Every update
    answered, its note stored exactly once."""
    hook = f"admins{secrets.token_hex(3)}"
    token = new_token()
    stack = start_stack(TELEGRAM_BOT_TOKEN=token, BOTSTACK_ALERT_URLS=f"json://telegram:8081/_emulator/hooks/{hook}?rto=30")
    before = settled(stack)
    ids = [remember(emulator, bot_id(token), n) for n in range(5)]
    emulator.stall_hook(hook, 12)
    t0 = time.monotonic()
    for program in ("bot", "web"):
        stack.signal(before[program]["pid"], "KILL")
        wait_until(lambda: crashes_seen(stack, program) == 1, 10, f"the sidecar seeing the {program}'s crash",
                   interval_s=0.1)
    stack.signal(before["healthcheck"]["pid"], "STOP")

    def said(what: str) -> list[str]:
        ids.append(remember(emulator, bot_id(token), len(ids)))  # traffic all along
        return [h["message"] for h in emulator.hooks(hook) if h["message"].startswith(f"botstack: {what} died (")]

    late = wait_until(lambda: said("web"), 60, "the web's alert, from the next sidecar", interval_s=0.5)
    late_s = time.monotonic() - t0
    assert stack.programs()["healthcheck"]["pid"] != before["healthcheck"]["pid"]
    assert len(late) == 1 and "(sent late: queued by " in late[0], late
    # The next sidecar's lane is in order: a copy of the bot's alert would have come before the web's.
    assert not [m for m in said("bot") if "(sent late" in m], "the alert being delivered at the kill sent twice"
    delivered = wait_until(lambda: said("bot"), 30, "the bot's alert, finished by its notifier", interval_s=0.5)
    assert len(delivered) == 1, delivered
    repeated, notes = answered_with_notes(stack, emulator, bot_id(token), ids)
    figure(f"alerts at a watchdog kill (slow channel, 12 s): the waiting one sent late by the next sidecar "
           f"{late_s:.1f} s after the first crash, the one being delivered once; {len(ids)} updates, all "
           f"answered, {repeated} replies sent twice, notes {sum(notes)} in {len(notes)} users")
    assert len(notes) == len(ids) and set(notes) == {1}, "a note lost or stored twice"


@pytest.mark.parametrize("token", ["", "not-a-token"], ids=["empty", "malformed"])
def test_bad_token_stops_only_the_bot(start_stack, token):
    stack = start_stack(TELEGRAM_BOT_TOKEN=token)
    wait_until(lambda: "bot: configuration error: TELEGRAM_BOT_TOKEN: " in stack.logs(), 60, "the bot's refusal")
    wait_until(lambda: "exited: bot (exit status 78" in stack.logs(), 30, "the bot to exit 78")

    def others_run():
        programs = stack.programs()
        return all(programs[n]["statename"] == "RUNNING" for n in ("mongodb", "api", "web", "healthcheck"))

    wait_until(others_run, 60, "api, web, mongodb and healthcheck RUNNING")
    wait_until(lambda: http_get(f"{stack.api}/health").status_code == 200, 30, "the api answering /health")
    ready = wait_until(lambda: (r := http_get(f"{stack.api}/ready")).status_code == 200 and r.json(), 60, "/ready")
    assert any(p.startswith("bot: configuration error: TELEGRAM_BOT_TOKEN: ") for p in ready["problems"]), ready
    code, out = wait_until(lambda: "bot: configuration error" in (r := stack.health())[1] and r, 60,
                           "the verdict naming the bot's configuration error")
    assert code == 1, out
    with stack.dashboard() as web:
        assert "bot: configuration error: TELEGRAM_BOT_TOKEN: " in web.get("/").text
    code, out = stack.exec(["botstack", "status"])
    assert "bot: configuration error: TELEGRAM_BOT_TOKEN: " in out, out
    assert others_run()


def test_token_refused_mid_run_stops_only_the_bot_and_says_why(start_stack, emulator):
    """The token is refused while the bot polls (revoked in @BotFather, or a passing 401): the bot
    stops with one line (exit 78), the verdict names it, nothing else restarts, and the sidecar's
    backoff brings the bot back once the token is taken again; updates sent meanwhile all answered."""
    token = new_token()
    bot = token.split(":")[0]
    stack = start_stack(TELEGRAM_BOT_TOKEN=token)
    before = settled(stack)
    emulator.fail_next(bot, method="getUpdates", error_code=401, description="Unauthorized")
    emulator.fail_next(bot, method="getMe", error_code=401, description="Unauthorized")  # the first start after
    ids = [remember(emulator, bot, 100)]  # ends the long poll in flight: the next one is refused
    t0 = time.monotonic()
    wait_until(lambda: "exited: bot (exit status 78" in stack.logs(), 60, "the bot to exit 78")
    code, out = wait_until(lambda: f"bot: EXITED with 78: {REFUSED}" in (r := stack.health())[1] and r, 30,
                           "the verdict naming the refusal")
    assert code == 1, out
    assert REFUSED in stack.logs()
    ids += [remember(emulator, bot, 101 + i) for i in range(3)]  # users keep writing
    wait_until(lambda: stack.health()[1].startswith("healthy"), 120, "the bot back and healthy")
    back_s = time.monotonic() - t0
    counts = all_answered(emulator, bot, ids, 60)
    others = ("mongodb", "api", "web", "healthcheck")
    assert identities(stack.programs(), others) == identities(before, others), "a program other than the bot restarted"
    figure(f"token refused mid-run: bot exited 78, named in the verdict; back {back_s:.0f} s later (sidecar backoff); "
           f"{len(ids)} updates around it all answered, {sum(n - 1 for n in counts.values())} twice")
    assert "Traceback" not in stack.logs()


def test_token_refused_while_replying_stops_the_bot_and_parks_nothing(start_stack, emulator):
    """Webhook mode, where no getUpdates would notice: a reply refused for the token stops the
    bot (exit 78) instead of charging the update an attempt; after the backoff it is answered."""
    token = new_token()
    bot = token.split(":")[0]
    alias = f"hook{secrets.token_hex(3)}"
    stack = start_stack(aliases=(alias,), TELEGRAM_BOT_TOKEN=token,
                        TELEGRAM_WEBHOOK_URL=f"https://{alias}:8000/telegram/webhook")
    settled(stack)
    wait_until(lambda: emulator.call(token, "getWebhookInfo")["result"]["url"], 30, "the webhook set")
    emulator.fail_next(bot, method="sendMessage", error_code=401, description="Unauthorized")
    emulator.fail_next(bot, method="getMe", error_code=401, description="Unauthorized")  # the first start after
    ids = [remember(emulator, bot, 200 + i) for i in range(5)]
    wait_until(lambda: "exited: bot (exit status 78" in stack.logs(), 60, "the bot to exit 78")
    wait_until(lambda: "bot: EXITED with 78" in stack.health()[1], 30, "the verdict naming the refusal")
    wait_until(lambda: stack.health()[1].startswith("healthy"), 120, "the bot back and healthy")
    counts = all_answered(emulator, bot, ids, 60)
    notes = stack.db("[len(d.get('notes', [])) for d in db.user_contexts.find({'_id': {'$gte': 7500200, '$lt': 7500205}})]")
    charged = stack.db(f"sum(d.get('attempts', 0) for d in db.inbox.find({{'_id': {{'$regex': '^{bot}:'}}}}))")
    figure(f"token refused while replying (webhook mode): bot exited 78; 5 updates answered after it, "
           f"{sum(n - 1 for n in counts.values())} twice, {charged} failed attempts charged")
    assert charged == 0, "an update was charged an attempt for the token"
    assert len(notes) == 5 and set(notes) == {1}


def test_revoked_token_mid_burst_alerts_through_another_channel_and_loses_nothing(start_stack, emulator):
    """The token revoked in @BotFather while users write: Telegram refuses everything with it,
    the admins' alert included. The alert still reaches them through BOTSTACK_ALERT_URLS (a JSON
    webhook here), says what to fix and shows no secret; once the token is taken again, every
    update sent meanwhile is answered once."""
    hook = f"admins{secrets.token_hex(3)}"
    stack, token = alerting_stack(start_stack, BOTSTACK_ALERT_URLS=f"json://telegram:8081/_emulator/hooks/{hook}")
    bot = token.split(":")[0]
    settled(stack)
    code, out = stack.exec(["botstack", "alert", "checking the channels"])  # what an operator does first
    assert code == 0 and out.strip() == f"delivered to telegram chat {ADMIN_CHAT}, json://...", out
    told_before = len(alerts(emulator, bot))
    ids = [remember(emulator, bot, 300 + i) for i in range(10)]
    t0 = time.monotonic()
    for method in ("getUpdates", "getMe", "sendMessage"):  # revoked: every call with it refused
        emulator.fail_next(bot, method=method, error_code=401, description="Unauthorized", times=1000)
    ids += [remember(emulator, bot, 310 + i) for i in range(10)]  # users keep writing
    told = wait_until(lambda: [h["message"] for h in emulator.hooks(hook) if "EXITED with 78" in h["message"]], 90,
                      "the alert through the other channel")
    alert_s = time.monotonic() - t0
    assert told[0].startswith(f"botstack: bot is EXITED with 78: {REFUSED}"), told
    wait_until(lambda: f"alert not delivered: telegram chat {ADMIN_CHAT}: 401 Unauthorized" in stack.logs(), 30,
               "the refused Telegram alert named in the log")
    assert len(alerts(emulator, bot)) == told_before, "Telegram took a message with a revoked token"

    for method in ("getUpdates", "getMe", "sendMessage"):  # the token taken again
        emulator.fail_next(bot, method=method, clear=True)
    counts = all_answered(emulator, bot, ids, 180)
    back_s = time.monotonic() - t0
    twice = sum(n - 1 for n in counts.values())
    notes = stack.db("[len(d.get('notes', [])) for d in "
                     "db.user_contexts.find({'_id': {'$gte': 7500300, '$lt': 7500320}})]")
    hooks = json.dumps(emulator.hooks(hook))
    figure(f"token revoked mid-burst, alerts to a JSON webhook: told after {alert_s:.1f} s (Telegram refused it); "
           f"{len(ids)} updates all answered {back_s:.0f} s after the revocation, {twice} twice; "
           f"{len(emulator.hooks(hook))} alerts on the other channel")
    assert twice == 0 and len(notes) == 20 and set(notes) == {1}
    assert token not in hooks and token.split(":")[1] not in stack.logs()
    assert "Traceback" not in stack.logs()


@pytest.mark.parametrize("mode", ["polling", "webhook"])
def test_bot_api_out_of_reach_mid_burst_is_told_and_loses_nothing(start_stack, emulator, mode):
    """Telegram out of reach while users write (every call a 502: a proxy or Telegram down; in
    webhook mode updates still arrive, the replies fail): the bot runs and beats, so only its
    status says so. The verdict turns degraded naming the error, the admins are told through the
    other channel (Telegram's own refuses too), nothing restarts, and the replies that failed are
    tried again without using up an attempt (2 here): nothing is parked. Once it answers, every
    update is answered once, soon, and the admins are told."""
    hook = f"ops{secrets.token_hex(3)}"
    env = {"BOTSTACK_ALERT_URLS": f"json://telegram:8081/_emulator/hooks/{hook}", "BOTSTACK_INBOX_MAX_ATTEMPTS": "2"}
    alias = f"hook{secrets.token_hex(3)}"
    if mode == "webhook":
        env["TELEGRAM_WEBHOOK_URL"] = f"https://{alias}:8000/telegram/webhook"
    stack, token = alerting_stack(start_stack, aliases=(alias,), **env)
    bot = token.split(":")[0]
    before = settled(stack)
    if mode == "webhook":
        wait_until(lambda: emulator.call(token, "getWebhookInfo")["result"]["url"], 30, "the webhook set")
    told_before = len(alerts(emulator, bot))
    t0 = time.monotonic()
    failing = ("getUpdates", "sendMessage") if mode == "polling" else ("sendMessage",)
    for method in failing:
        emulator.fail_next(bot, method=method, error_code=502, description="Bad Gateway", times=1000)
    ids = [remember(emulator, bot, 400 + i) for i in range(15)]  # polling: the first taken by the poll in flight
    code, out = wait_until(lambda: "bot: the Bot API has failed for" in (r := stack.health())[1] and r, 60,
                           "a degraded verdict naming the outage")
    degraded_s = time.monotonic() - t0
    assert code == 0 and out.startswith("degraded") and ": NetworkError: Bad Gateway)" in out, out
    told = wait_until(lambda: [h["message"] for h in emulator.hooks(hook) if "Bot API has failed" in h["message"]],
                      30, "the admins told of the outage")
    told_s = time.monotonic() - t0 - degraded_s
    assert told_s < 10, f"the other channel waited {told_s:.0f} s (for Telegram's own retries?)"
    wait_until(lambda: "the Bot API is out of reach (NetworkError: Bad Gateway): updates wait" in stack.logs(), 30,
               "a failed reply tried again")
    assert len(alerts(emulator, bot)) == told_before, "Telegram took a message through a 502"

    for method in failing:  # reachable again
        emulator.fail_next(bot, method=method, clear=True)
    reachable = time.monotonic()
    ids.append(remember(emulator, bot, 415))  # users keep writing: its reply is the first call that works
    counts = all_answered(emulator, bot, ids, 180)
    back_s, after_s = time.monotonic() - t0, time.monotonic() - reachable
    wait_until(lambda: stack.health()[1].startswith("healthy"), 60, "healthy again")
    wait_until(lambda: any("answers the bot again" in h["message"] for h in emulator.hooks(hook)), 30,
               "the admins told it is back")
    assert identities(stack.programs(), OTHERS) == identities(before, OTHERS), "a program was restarted"
    notes = stack.db("[len(d.get('notes', [])) for d in "
                     "db.user_contexts.find({'_id': {'$gte': 7500400, '$lt': 7500416}})]")
    inbox = stack.db(f"[(d['state'], d.get('attempts', 0), d.get('outages', 0)) for d in "
                     f"db.inbox.find({{'_id': {{'$regex': '^{bot}:'}}}})]")
    twice = sum(n - 1 for n in counts.values())
    retried = sum(o for _, _, o in inbox)
    figure(f"Bot API out of reach mid-burst ({mode} mode, 502 on {', '.join(failing)}): degraded after "
           f"{degraded_s:.0f} s, admins told through the other channel {told_s:.1f} s later: {told[0]!r}; "
           f"{len(ids)} updates all answered {back_s:.0f} s after it began ({after_s:.0f} s after Telegram "
           f"answered again), {twice} twice, "
           f"{retried} replies tried again uncharged, {sum(1 for s, _, _ in inbox if s == 'failed')} parked, "
           f"0 restarts")
    assert twice == 0 and len(notes) == 16 and set(notes) == {1}
    assert retried > 0, "no reply failed during the outage: nothing proven"
    assert all(state == "done" and attempts == 0 for state, attempts, _ in inbox), inbox
    assert after_s < 45, "what waited for the Bot API was not made due when it answered"
    told_in_log = stack.logs().count("the Bot API is out of reach (")
    assert told_in_log == 1, f"{told_in_log} lines for one outage of {retried} replies tried again: one is enough"
    assert "Traceback" not in stack.logs()


def test_a_flaky_bot_api_is_told_and_loses_nothing(start_stack, emulator):
    """A flaky proxy in front of Telegram while users keep writing (webhook mode): two replies in
    three fail with a 502 and every reply that goes through ends the bot's outage mark, so it
    never fails 15 s in a row. The sidecar judges the share of failing checks over a minute:
    degraded and told through the other channel, nothing restarted, every update answered
    once, nothing parked; told again when it answers steadily."""
    hook = f"ops{secrets.token_hex(3)}"
    alias = f"hook{secrets.token_hex(3)}"
    stack, token = alerting_stack(start_stack, aliases=(alias,), BOTSTACK_INBOX_MAX_ATTEMPTS="2",
                                  TELEGRAM_WEBHOOK_URL=f"https://{alias}:8000/telegram/webhook",
                                  BOTSTACK_ALERT_URLS=f"json://telegram:8081/_emulator/hooks/{hook}")
    bot = token.split(":")[0]
    before = settled(stack)
    wait_until(lambda: emulator.call(token, "getWebhookInfo")["result"]["url"], 30, "the webhook set")
    emulator.fail_next(bot, method="sendMessage", error_code=502, description="Bad Gateway", answer_every=3, times=400)
    t0 = time.monotonic()
    ids, verdict = [], ""
    while time.monotonic() - t0 < 90 and "the Bot API failed at" not in verdict:  # one user writes every 0.5 s
        ids.append(remember(emulator, bot, 700 + len(ids)))
        verdict = stack.health()[1]
        time.sleep(0.5)
    degraded_s = time.monotonic() - t0
    assert "bot: the Bot API failed at " in verdict and "(sendMessage: NetworkError: Bad Gateway)" in verdict, verdict
    told = wait_until(lambda: [h["message"] for h in emulator.hooks(hook) if "the Bot API failed at" in h["message"]],
                      30, "the admins told the Bot API fails often")
    emulator.fail_next(bot, method="sendMessage", clear=True)
    steady_at = time.monotonic()
    counts = all_answered(emulator, bot, ids, 120)
    wait_until(lambda: any("steadily again" in h["message"] for h in emulator.hooks(hook)), 90,
               "the admins told it answers steadily again")
    steady_s = time.monotonic() - steady_at
    wait_until(lambda: stack.health()[1].startswith("healthy"), 30, "healthy again")
    inbox = stack.db(f"[(d['state'], d.get('attempts', 0), d.get('outages', 0)) for d in "
                     f"db.inbox.find({{'_id': {{'$regex': '^{bot}:'}}}})]")
    notes = stack.db("[len(d.get('notes', [])) for d in "
                     f"db.user_contexts.find({{'_id': {{'$gte': 7500700, '$lt': {7500700 + len(ids)}}}}})]")
    figure(f"flaky Bot API (webhook mode, 2 of 3 sendMessage 502): degraded after {degraded_s:.0f} s, told: "
           f"{told[0]!r}; {len(ids)} updates all answered, {sum(n - 1 for n in counts.values())} twice, "
           f"{sum(o for _, _, o in inbox)} replies tried again uncharged, "
           f"{sum(1 for st, _, _ in inbox if st == 'failed')} parked; steady again told {steady_s:.0f} s after")
    assert identities(stack.programs(), OTHERS) == identities(before, OTHERS), "a program was restarted"
    assert all(state == "done" and attempts == 0 for state, attempts, _ in inbox), inbox
    assert len(notes) == len(ids) and set(notes) == {1}
    assert "Traceback" not in stack.logs()


def test_a_leak_is_killed_not_the_database_and_loses_nothing(start_stack, emulator):
    """A handler that leaks (/hog keeps 40 MiB per update) in a container with a memory limit,
    while users keep writing: the kernel kills the bot, which asked to go first, not mongod,
    supervisord or the sidecar; supervisord restarts it, the admins are told it was memory, and
    every update is answered, every note stored once."""
    hook = f"ops{secrets.token_hex(3)}"
    stack, token = alerting_stack(start_stack, mem_limit="420m", BOTSTACK_EXTENSIONS="botstack_testkit",
                                  BOTSTACK_ALERT_URLS=f"json://telegram:8081/_emulator/hooks/{hook}")
    bot = token.split(":")[0]
    before = settled(stack)
    pids = {name: info["pid"] for name, info in before.items()}
    adj = {name: stack.exec(["cat", f"/proc/{pid}/oom_score_adj"])[1].strip() for name, pid in pids.items()}
    adj["supervisord"] = stack.exec(["cat", "/proc/1/oom_score_adj"])[1].strip()
    assert adj == {"mongodb": "0", "api": "500", "web": "500", "bot": "600", "healthcheck": "0",
                   "supervisord": "0"}, adj

    ids, hogs = [], []
    for i in range(40):
        ids.append(remember(emulator, bot, 600 + i))
        if i % 5 == 4:
            hogs.append(emulator.inject(bot, "/hog 40", user={"id": 7_600_000 + i, "first_name": f"H{i}"}))
    t0 = time.monotonic()
    counts = all_answered(emulator, bot, ids + hogs, 240)
    answered_s = time.monotonic() - t0
    killed = wait_until(lambda: [h["message"] for h in emulator.hooks(hook) if "out of memory" in h["message"]], 60,
                        "the admins told the bot was killed for memory")
    after = stack.programs()
    notes = stack.db("[len(d.get('notes', [])) for d in "
                     "db.user_contexts.find({'_id': {'$gte': 7500600, '$lt': 7500640}})]")
    parked = stack.db(f"db.inbox.count_documents({{'bot': '{bot}', 'state': 'failed'}})")
    restarts = after["bot"]["pid"] != pids["bot"]
    figure(f"leak in a handler (8 x /hog 40 MiB among 40 /remember, container limit 420 MiB): the bot killed by the "
           f"kernel and restarted ({stack.logs().count('killed by the kernel: out of memory')} time(s)), mongod, "
           f"api, web, sidecar untouched; all {len(ids) + len(hogs)} answered within {answered_s:.0f} s, "
           f"{sum(n - 1 for n in counts.values())} twice, {parked} parked; told: {killed[0]!r}")
    assert restarts, "the leak never reached the limit: nothing proven"
    assert identities(after, ("mongodb", "api", "web", "healthcheck")) == identities(
        before, ("mongodb", "api", "web", "healthcheck")), "the kernel took another program than the leaking one"
    assert "bot died (killed by the kernel: out of memory (the container's limit is 420 MiB))" in killed[0], killed
    code, out = stack.exec(["botstack", "status"])
    assert re.search(r"memory: \d+ MiB resident in the programs; the container's limit is 420 MiB; [1-3] process\(es\) "
                     r"killed by the kernel for memory", out), out
    assert len(notes) == 40 and set(notes) == {1} and parked == 0
    assert "Traceback" not in stack.logs()


def test_a_slow_leak_is_restarted_gracefully_below_its_ceiling_and_nothing_is_sent_twice(start_stack, emulator):
    """The same leak, growing as leaks do (30 MiB every 4 s among users writing), with
    BOTSTACK_MEMORY_CEILING_MB=bot=160 in a 512 MiB container: the sidecar has supervisord stop
    the bot (SIGTERM, its stop budget) before the kernel would kill it, and starts it again.
    Unlike the kernel's SIGKILL, no reply is sent twice; no OOM kill at all."""
    hook = f"ops{secrets.token_hex(3)}"
    stack, token = alerting_stack(start_stack, mem_limit="512m", BOTSTACK_EXTENSIONS="botstack_testkit",
                                  BOTSTACK_MEMORY_CEILING_MB="bot=160",
                                  BOTSTACK_ALERT_URLS=f"json://telegram:8081/_emulator/hooks/{hook}")
    bot = token.split(":")[0]
    before = settled(stack)
    ids, hogs = [], []
    t0 = time.monotonic()
    for i in range(40):
        ids.append(remember(emulator, bot, 700 + i))
        if i % 4 == 3:
            hogs.append(emulator.inject(bot, "/hog 30", user={"id": 7_700_000 + i, "first_name": f"H{i}"}))
        time.sleep(1.0)
    counts = all_answered(emulator, bot, ids + hogs, 120)
    answered_s = time.monotonic() - t0
    told = wait_until(lambda: [h["message"] for h in emulator.hooks(hook) if "memory ceiling" in h["message"]], 30,
                      "the admins told the bot was restarted for its memory ceiling")
    wait_until(lambda: stack.health()[1].startswith("healthy"), 60, "a healthy verdict: the last bot below its ceiling")
    after = stack.programs()
    notes = stack.db("[len(d.get('notes', [])) for d in "
                     "db.user_contexts.find({'_id': {'$gte': 7500700, '$lt': 7500740}})]")
    parked = stack.db(f"db.inbox.count_documents({{'bot': '{bot}', 'state': 'failed'}})")
    code, status = stack.exec(["botstack", "status"])
    restarts = stack.logs().count("restarting it gracefully")
    figure(f"slow leak (10 x /hog 30 MiB, one every 4 s, among 40 /remember; ceiling bot=160 MiB, container 512 "
           f"MiB): {restarts} graceful restart(s), 0 OOM kills; all {len(ids) + len(hogs)} answered "
           f"{answered_s:.0f} s after the first, {sum(n - 1 for n in counts.values())} twice, {parked} parked; "
           f"told: {told[0]!r}")
    assert after["bot"]["pid"] != before["bot"]["pid"], "the leak never reached the ceiling: nothing proven"
    assert restarts >= 1 and "bot was above its memory ceiling" in told[0], told
    assert identities(after, ("mongodb", "api", "web", "healthcheck")) == identities(
        before, ("mongodb", "api", "web", "healthcheck")), "another program was restarted"
    assert "killed by the kernel" not in status and "killed by the kernel" not in stack.logs(), status
    assert re.search(r"bot +RUNNING .* memory [1-9]", status), status
    assert re.search(r"\nmemory: \d+ MiB resident in the programs; the container's limit is 512 MiB; restarted "
                     r"gracefully above bot 160 MiB\n", status), status
    assert set(counts.values()) == {1}, f"sent twice: {[u for u, n in counts.items() if n > 1]}"
    assert len(notes) == 40 and set(notes) == {1} and parked == 0
    assert "Traceback" not in stack.logs()


def test_a_ceiling_below_what_the_api_needs_is_said_not_a_restart_loop(start_stack, emulator):
    """BOTSTACK_MEMORY_CEILING_MB=api=64: the API holds more than that once started. Restarting
    it would start it above the ceiling again; it is named instead, and left running, serving:
    the API's requests and the users' messages meanwhile are all answered, once."""
    stack = start_stack(BOTSTACK_MEMORY_CEILING_MB="api=64")
    stack.wait_healthy()
    code, verdict = wait_until(lambda: (r := stack.health())[0] == 0 and r[1].startswith("degraded") and r, 60,
                               "every program up, the verdict degraded")
    before = stack.programs()
    assert re.search(r"api: memory ceiling too low: \d+ MiB resident once started, ceiling 64 MiB; not "
                                   r"restarted for it \(raise BOTSTACK_MEMORY_CEILING_MB\)", verdict), verdict
    ids, requests, failed = [], 0, []
    end = time.monotonic() + 10
    while time.monotonic() < end:  # two checks a second would restart it by now
        assert identities(stack.programs()) == identities(before), "a program was restarted"
        ids.append(remember(emulator, stack.bot_id, 900 + len(ids)))
        for _ in range(20):
            requests += 1
            try:
                if (status := http_get(f"{stack.api}/api/v1/stats").status_code) != 200:
                    failed.append(status)
            except httpx.HTTPError as exc:
                failed.append(type(exc).__name__)
    repeated, notes = answered_with_notes(stack, emulator, stack.bot_id, ids)
    figure(f"ceiling below the api's need (api=64 MiB): not restarted for 10 s of traffic; {requests} API "
           f"requests, {len(failed)} failed; {len(ids)} updates answered, {repeated} twice")
    assert identities(stack.programs()) == identities(before), "a program was restarted"
    assert not failed, failed
    assert repeated == 0 and len(notes) == len(ids) and set(notes) == {1}, notes
    assert stack.ready() and "restarting it gracefully" not in stack.logs()


def test_a_stop_during_a_crash_loop_still_tells_the_crashes_counted(start_stack, emulator):
    """The bot killed three times while users write, then `docker stop`: the first crash was told
    at once, the next two were counted into their group (sent as one line after 5 min), and the
    stop came first. The count is told at the stop, not lost with the sidecar; every update
    answered before the stop."""
    hook = f"ops{secrets.token_hex(3)}"
    stack, token = alerting_stack(start_stack, BOTSTACK_ALERT_URLS=f"json://telegram:8081/_emulator/hooks/{hook}")
    bot = token.split(":")[0]
    settled(stack)
    ids = []
    for kill in range(3):
        pid = stack.programs()["bot"]["pid"]
        ids += [remember(emulator, bot, 800 + kill * 5 + i) for i in range(5)]
        stack.signal(pid, "KILL")
        wait_until(lambda: (p := stack.programs()["bot"])["statename"] == "RUNNING" and p["pid"] != pid, 30,
                   "the bot restarted")
    counts = all_answered(emulator, bot, ids, 60)
    wait_until(lambda: stack.logs().count("restart program=bot cause=crash") == 3, 30, "three crashes recorded")
    told = [h["message"] for h in emulator.hooks(hook)]
    assert len([t for t in told if "bot died" in t]) == 1, told
    t0 = time.monotonic()
    stack.container.get_wrapped_container().stop(timeout=60)
    stopped_s = time.monotonic() - t0
    summary = wait_until(lambda: [h["message"] for h in emulator.hooks(hook) if "more of the same" in h["message"]],
                         10, "the counted crashes told at the stop")
    figure(f"docker stop during a crash loop (3 kills, 15 updates, all answered, "
           f"{sum(n - 1 for n in counts.values())} twice): stopped in {stopped_s:.1f} s, told at the stop: "
           f"{summary[0]!r}")
    assert summary[0].startswith("botstack: 2 more of the same in the last 5 min; the last one: bot died"), summary


def test_bad_port_names_the_variable_set(start_stack):
    stack = start_stack(PORT="abc")
    wait_until(lambda: "exited: api (exit status 78" in stack.logs(), 60, "api to exit 78")
    lines = [line for line in stack.logs().splitlines() if line.startswith("api: ")]
    assert lines and all(line.startswith("api: configuration error: PORT: ") for line in lines), lines
    wait_until(lambda: all(stack.programs()[n]["statename"] == "RUNNING"
                           for n in ("mongodb", "web", "bot", "healthcheck")), 60, "the other programs RUNNING")


def test_a_bad_http_setting_stops_only_the_api_and_the_dashboard_while_the_bot_answers(start_stack, emulator):
    """BOTSTACK_REQUEST_TIMEOUT is the two HTTP servers' alone: a bad value stops them with one
    line each (exit 78), and nothing else: the bot answers meanwhile and the verdict names it
    (it stopped every program, the bot and the sidecar included)."""
    stack = start_stack(BOTSTACK_REQUEST_TIMEOUT="soon")
    for program in ("api", "web"):
        wait_until(lambda p=program: f"exited: {p} (exit status 78" in stack.logs(), 60, f"{program} to exit 78")
    lines = [line for line in stack.logs().splitlines() if line.startswith(("api: ", "web: "))]
    assert lines and all(": configuration error: BOTSTACK_REQUEST_TIMEOUT: " in line for line in lines), lines
    wait_until(lambda: all(stack.programs()[n]["statename"] == "RUNNING" for n in ("mongodb", "bot", "healthcheck")),
               60, "mongodb, the bot and the sidecar RUNNING")
    ids = [remember(emulator, stack.bot_id, 300 + i) for i in range(5)]
    counts = all_answered(emulator, stack.bot_id, ids, 60)
    code, out = wait_until(lambda: "api: configuration error: BOTSTACK_REQUEST_TIMEOUT: " in (r := stack.health())[1]
                           and r, 60, "the verdict naming the API's refusal")
    assert code == 1 and "web: configuration error: BOTSTACK_REQUEST_TIMEOUT: " in out, out
    figure(f"bad BOTSTACK_REQUEST_TIMEOUT: api and web exited 78, named in the verdict; {len(ids)} updates "
           f"answered meanwhile, {sum(n - 1 for n in counts.values())} twice")


def test_external_mongodb_down_restarts_nothing(start_stack, external_db, app_image, emulator):
    stack = start_stack(image=app_image, MONGODB_URI=external_db.uri, BOTSTACK_ALERT_CHAT_IDS=str(ADMIN_CHAT))
    running = ("api", "web", "bot", "healthcheck")

    def up():
        programs = stack.programs()
        return all(programs[n]["statename"] == "RUNNING" for n in running) and stack.ready() and programs

    before = wait_until(up, 90, "the app target's programs RUNNING and /ready 200")
    assert before["mongodb"]["statename"] == "STOPPED" and not before["mongodb"]["pid"], "a local mongod started"
    wait_until(lambda: stack.health()[1].startswith("healthy"), 60, "a healthy verdict")
    assert "git_sha" in emulator.ask(stack.bot_id, "/version", timeout_s=30)

    mark = len(stack.logs())
    ids = [remember(emulator, stack.bot_id, 0)]
    external_db.container.get_wrapped_container().stop(timeout=10)
    code, out = wait_until(lambda: (r := stack.health())[1].startswith("degraded") and r, 30, "a degraded verdict")
    assert code == 0 and "mongodb" in out, out
    end = time.monotonic() + 20  # longer than any probe's detection time
    while time.monotonic() < end:  # users keep writing through the outage
        assert identities(stack.programs(), running) == identities(before, running), "a program was restarted"
        ids.append(remember(emulator, stack.bot_id, len(ids)))
        time.sleep(2)
    assert stack.programs()["mongodb"]["statename"] == "STOPPED"
    assert "restart program=" not in stack.logs()[mark:]
    told = wait_until(lambda: [a for a in alerts(emulator, stack.bot_id) if "not ready for" in a], 30,
                      "the admins told of the outage (after 15 s)")

    external_db.container.get_wrapped_container().start()
    wait_until(lambda: stack.health()[1].startswith("healthy"), 90, "healthy again")
    wait_until(lambda: [a for a in alerts(emulator, stack.bot_id) if "ready again" in a], 30,
               "the admins told it is back")
    assert identities(stack.programs(), running) == identities(before, running)
    repeated = sum(n - 1 for n in all_answered(emulator, stack.bot_id, ids, 120).values())
    result = external_db.container.get_wrapped_container().exec_run(
        ["python", "-c", "import json; from pymongo import MongoClient; db = MongoClient('mongodb://127.0.0.1:27017/"
         "?directConnection=true').botstack; print(json.dumps([len(d.get('notes', [])) for d in "
         "db.user_contexts.find({'_id': {'$gte': 7500000}})]))"])
    notes = json.loads(result.output.decode().strip().splitlines()[-1])
    figure(f"external MongoDB down 20 s: {len(ids)} updates sent around the outage, all answered after it, "
           f"{repeated} replies sent twice, notes {sum(notes)} in {len(notes)} users, 0 restarts; "
           f"alerted: {told[0]!r}")
    assert len(notes) == len(ids) and set(notes) == {1}, "a note lost or stored twice"
    assert "mongodb" in told[0] and len(told) == 1, told


def test_alerts(start_stack, emulator):
    stack, token = alerting_stack(start_stack, BOTSTACK_HEAL_CYCLE_WINDOW_S="30")
    bot = bot_id(token)
    settled(stack)

    stack.signal(stack.bot_pid(), "STOP")
    hang = wait_until(lambda: next((a for a in alerts(emulator, bot) if "bot was hung" in a), None), 30,
                      "the hang alert")
    assert "restarted" in hang
    settled(stack)

    before = len(alerts(emulator, bot))
    t0 = time.monotonic()
    for _ in range(20):  # 20 crashes in a minute
        pid = stack.bot_pid()
        stack.signal(pid, "KILL")
        wait_until(lambda: stack.programs()["bot"]["pid"] not in (0, pid), 20, "the bot back", interval_s=0.2)
        time.sleep(max(0.0, 2.5 - (time.monotonic() - t0) % 2.5))
    during = alerts(emulator, bot)[before:]
    figure(f"20 crashes in {time.monotonic() - t0:.0f} s: {len(during)} alert message(s): {during}")
    assert len(during) <= 3, during
    assert any("bot is in a crash cycle" in a for a in during), during

    wait_until(lambda: any("healthy again" in a for a in alerts(emulator, bot)), 120, "the recovery alert")
    everything = alerts(emulator, bot)
    assert all(token not in a and token.split(":")[1] not in a for a in everything)
    code, out = stack.exec(["sh", "-c", "cat /run/botstack/*.json"])
    assert httpx.get(f"{stack.api}/metrics", timeout=5).status_code == 200
