"""Make it yours: the shipped example (`yours/example/`) deleted as a whole, and one file in
`yours/` that adds a bot command with a button, an API route that reads what the bot stored, a
dashboard page and an index — and no platform file is touched.

The test copies the project as git sees it, deletes the example, adds the file, builds the `app`
target of the copy (offline: with the FerretDB stand-in on top, as every test image), and talks
to all three.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess

import pytest
from testcontainers.core.image import DockerImage

from tests.integration.conftest import BASE_IMAGE, MODE, OFFLINE, ROOT, TAG
from tests.integration.harness import http_get, new_token, wait_until

pytestmark = pytest.mark.integration

PING = '''"""/ping: a command with a button, what it stored, and where the API and the dashboard show it."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

PINGS = "pings"


async def ping(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await context.bot_data["db"][PINGS].update_one({"_id": update.update_id},
                                                   {"$set": {"user": update.effective_user.id}}, upsert=True)
    button = InlineKeyboardMarkup([[InlineKeyboardButton("Again", callback_data="ping-again")]])
    await update.effective_message.reply_text("pong", reply_markup=button, do_quote=True)


async def again(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.callback_query.answer()
    await update.callback_query.edit_message_text("pong, again")


def install(application: Application) -> None:
    application.add_handler(CommandHandler("ping", ping))
    application.add_handler(CallbackQueryHandler(again, pattern="^ping-again$"))


api_router = APIRouter()


@api_router.get("/api/v1/pings")
async def pings(request: Request) -> dict:
    return {"pings": await request.app.state.db[PINGS].count_documents({})}


web_router = APIRouter()


@web_router.get("/pings", response_class=HTMLResponse)
async def page() -> str:
    return "<!doctype html><title>Pings</title><h1>Pings</h1><p>Your page, behind the dashboard's login.</p>"


async def _index(db) -> None:
    await db[PINGS].create_index("user")


SCHEMA_STEPS = [(1, _index)]
'''


def project_copy(target) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    for name in listed:
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)


def test_user_feature_in_its_own_place(tmp_path, build_identity, start_stack, emulator):
    copy = tmp_path / "project"
    project_copy(copy)
    shutil.rmtree(copy / "yours" / "example")
    (copy / "yours" / "ping.py").write_text(PING)
    changed = [str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file()
               and not (ROOT / p.relative_to(copy)).is_file()]
    assert changed == ["yours/ping.py"], changed
    missing = {str(p.relative_to(ROOT)).split("/")[1] for p in (ROOT / "yours").rglob("*.py")
               if not (copy / p.relative_to(ROOT)).exists()}
    assert missing == {"example"}, missing
    assert all(filecmp.cmp(copy / p, ROOT / p, shallow=False) for p in ("Dockerfile", "services/bot/handlers.py"))

    args = dict(build_identity)
    if MODE == "standin" or "BOTSTACK_TEST_BASE_IMAGE" in os.environ:
        args["BASE_IMAGE"] = BASE_IMAGE
    app = f"botstack:{TAG}-yours-app"
    DockerImage(path=copy, tag=app, clean_up=False, target="app", buildargs=args, rm=True).build()
    image = app
    if MODE == "standin":
        image = f"botstack:{TAG}-yours-offline"
        DockerImage(path=OFFLINE, tag=image, clean_up=False, buildargs={"APP_IMAGE": app}, rm=True).build()

    token = new_token()
    bot = token.split(":")[0]
    stack = start_stack(image=image, TELEGRAM_BOT_TOKEN=token)
    stack.wait_healthy()
    start = emulator.inject(bot, "/start", user={"id": 9100, "first_name": "You"})
    reply = emulator.reply_to(bot, emulator.inject(bot, "/ping", user={"id": 9100, "first_name": "You"}), 30)
    assert reply["text"] == "pong"
    press = emulator.inject_callback(bot, reply["message_id"], "ping-again", user={"id": 9100, "first_name": "You"})
    wait_until(lambda: any(m.get("kind") == "edit" and m["text"] == "pong, again"
                           for m in emulator.responses_to(bot, press)), 30, "the button's edit")
    assert http_get(f"{stack.api}/api/v1/pings").json() == {"pings": 1}
    assert http_get(f"{stack.web}/pings").status_code == 401, "your page skipped the dashboard's login"
    with stack.dashboard() as web:
        assert "<h1>Pings</h1>" in web.get("/pings").text
    indexes = stack.db("sorted(i['name'] for i in db.pings.list_indexes())")
    assert "user_1" in indexes
    # the example is gone, the platform is not: /start (the example's) is handled without a reply
    wait_until(lambda: stack.db(f"db.inbox.find_one({{'update_id': {start}}})['state']") == "done", 30,
               "/start handled")
    assert emulator.responses_to(bot, start) == []
    assert "git_sha" in emulator.ask(bot, "/version", timeout_s=30)
