"""The dashboard: health and programs (live), what happened and when, the bot's work and
failures, backups and safe actions — behind a login.

Pages render on the server and read without JavaScript; a small script of our own refreshes
the overview from /overview.json every 2 s. Every action (take a backup, restart a program,
retry or drop failed updates) goes through a confirmation page, needs a session, and is written
to the `audit` collection (who, what, when).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pymongo import WriteConcern
from starlette.middleware.sessions import SessionMiddleware

from services.common.bodylimit import BodyLimit
from services.common.buildinfo import build_info
from services.common.collections import AUDIT, DEPLOYS, HEALTH_EVENTS
from services.common.db import make_sync_client
from services.common.extensions import hooks
from services.common.http import identity_router
from services.common.logs import redact
from services.common.settings import refuse, settings_or_exit
from services.common.supervisor import programs, rpc
from services.common.verdict import read_verdict
from services.web import timeline
from services.web.auth import Access, safe_next

PROGRAM = "web"
log = logging.getLogger(__name__)
MAX_FORM_BYTES = 16 * 1024
RESTARTABLE = ("bot", "api", "mongodb")


def create_app() -> FastAPI:
    settings = settings_or_exit(PROGRAM)
    access = Access(settings)
    refusal = access.refusal(settings)
    if refusal:
        refuse(PROGRAM, refusal)
    templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
    app = FastAPI(title="botstack dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SessionMiddleware, secret_key=access.cookie_key(), session_cookie="botstack_session",
                       max_age=int(access.session_s), same_site="strict", https_only=settings.web_secure_cookie)
    app.include_router(identity_router(settings, PROGRAM))
    client = make_sync_client(settings, PROGRAM)
    db = client[settings.mongodb_db]

    app.add_middleware(BodyLimit, max_bytes=MAX_FORM_BYTES)

    def page(request: Request, name: str, context: dict, status: int = 200) -> HTMLResponse:
        context = {"who": access.who(request), "read_only": access.read_only, "build": build_info(settings, PROGRAM),
                   "nav": name.split(".")[0], **context}
        return templates.TemplateResponse(request, name, context, status_code=status,
                                          headers={"Cache-Control": "no-store"})

    def guard_page(request: Request) -> Response | None:
        if access.may_read(request):
            return None
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    def audit(request: Request, action: str, target: str, outcome: str) -> None:
        try:
            db.get_collection(AUDIT, write_concern=WriteConcern(w=1, j=True)).insert_one({
                "at": datetime.now(timezone.utc), "actor": f"web:{access.who(request)}", "action": action,
                "target": target, "outcome": outcome[:300],
                "client": request.client.host if request.client else None})
        except Exception as exc:  # the action happened; say that its record did not
            log.warning("audit entry not written (%s): %s %s", type(exc).__name__, action, target)

    # --- data -----------------------------------------------------------------------------------
    def overview() -> dict:
        try:
            rows, error = programs(rpc(settings.supervisor_socket)), None
        except Exception as exc:  # the page still renders, saying why the list is missing
            rows, error = [], f"{type(exc).__name__}: {exc}"
        health = read_verdict(settings.run_dir) or {"status": "unknown", "reasons": [], "programs": {}}
        listed = []
        for p in rows:
            h = health.get("programs", {}).get(p.name, {})
            listed.append({"name": p.name, "state": p.state, "pid": p.pid, "uptime_s": p.uptime_s,
                           "started_at": p.started_at.strftime("%Y-%m-%d %H:%M:%S") if p.started_at else None,
                           "restarts": h.get("restarts", {}), "last_reason": h.get("last_reason"),
                           "description": p.description})
        return {"health": {"status": health.get("status"), "reasons": health.get("reasons", [])},
                "bot": health.get("bot"), "programs": listed, "error": error,
                "build": build_info(settings, PROGRAM), "time": time.time()}

    def bot_data() -> dict:
        from services.bot.inbox import COLLECTION as INBOX
        from services.cli.inbox import counts, failed

        since = datetime.now(timezone.utc) - timedelta(minutes=60)
        per_minute: dict[str, int] = {}
        for doc in db[INBOX].find({"received_at": {"$gte": since}}, {"received_at": 1}):
            key = doc["received_at"].strftime("%H:%M")
            per_minute[key] = per_minute.get(key, 0) + 1
        return {"counts": counts(db[INBOX], settings.bot_id), "failed": failed(db[INBOX]),
                "users": db["users"].estimated_document_count(),
                "messages": db["messages"].estimated_document_count(), "per_minute": per_minute}

    # --- login ----------------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return page(request, "login.html", {"next": safe_next(next), "error": None})

    @app.post("/login")
    async def login(request: Request, password: str = Form(...), next: str = Form("/")) -> Response:
        if not access.check_password(password):
            audit(request, "login", "dashboard", "refused: wrong password")
            return page(request, "login.html", {"next": safe_next(next), "error": "Wrong password."}, status=401)
        access.login(request, "admin")
        audit(request, "login", "dashboard", "ok")
        return RedirectResponse(safe_next(next), status_code=303)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    # --- pages ----------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> Response:
        if (denied := guard_page(request)) is not None:
            return denied
        return page(request, "overview.html", await run_in_threadpool(overview))

    @app.get("/overview.json")
    async def overview_json(request: Request) -> Response:
        if not access.may_read(request):
            return JSONResponse({"error": "login required"}, status_code=401)
        return JSONResponse(await run_in_threadpool(overview), headers={"Cache-Control": "no-store"})

    @app.get("/timeline", response_class=HTMLResponse)
    async def timeline_page(request: Request, range: str = "24h") -> Response:
        if (denied := guard_page(request)) is not None:
            return denied
        span = timeline.RANGES.get(range, timeline.RANGES["24h"])
        now = datetime.now(timezone.utc)

        def load():
            since = now - span
            health = list(db[HEALTH_EVENTS].find({"time": {"$gte": since}}).sort("time", -1).limit(2000))
            actions = list(db[AUDIT].find({"at": {"$gte": since}}).sort("at", -1).limit(500))
            deploys = list(db[DEPLOYS].find({"recorded_at": {"$gte": since}}).limit(200))
            return timeline.events_from(health, actions, deploys)

        try:
            events, error = await run_in_threadpool(load), None
        except Exception as exc:
            events, error = [], f"the database did not answer ({type(exc).__name__})"
        return page(request, "timeline.html", {"events": events, "chart": timeline.svg(events, span, now),
                                               "range": range if range in timeline.RANGES else "24h",
                                               "error": error})

    @app.get("/bot", response_class=HTMLResponse)
    async def bot_page(request: Request) -> Response:
        if (denied := guard_page(request)) is not None:
            return denied
        try:
            data, error = await run_in_threadpool(bot_data), None
        except Exception as exc:
            data, error = {}, f"the database did not answer ({type(exc).__name__})"
        verdict = read_verdict(settings.run_dir) or {}
        return page(request, "bot.html", {"data": data, "error": error, "bot": verdict.get("bot")})

    @app.get("/operations", response_class=HTMLResponse)
    async def operations(request: Request) -> Response:
        if (denied := guard_page(request)) is not None:
            return denied
        from services.cli.backups import listing

        def load():
            return (listing(settings), list(db[AUDIT].find({}, {"_id": 0}).sort("at", -1).limit(30)),
                    list(db[DEPLOYS].find({}, {"_id": 0, "steps": 0}).sort("recorded_at", -1).limit(20)))

        try:
            backups, actions, deploys = await run_in_threadpool(load)
            error = None
        except Exception as exc:
            backups, actions, deploys, error = [], [], [], f"the database did not answer ({type(exc).__name__})"
        return page(request, "operations.html", {"backups": backups, "actions": actions, "deploys": deploys,
                                                 "error": error, "restartable": RESTARTABLE})

    # --- your pages (services/common/extensions.py), behind the same login ---------------------------
    def logged_in(request: Request) -> None:
        if not access.may_read(request):
            raise HTTPException(status_code=401, detail="log in to the dashboard first (/login)")

    for _name, router in hooks(settings, "web_router"):
        app.include_router(router, dependencies=[Depends(logged_in)])

    # --- actions: a confirmation page, then the POST -------------------------------------------------
    ACTIONS = {"restart": "Restart {target}", "backup": "Take a backup now",
               "retry": "Handle failed update {target} again", "drop": "Delete failed update {target}"}

    @app.get("/confirm", response_class=HTMLResponse)
    async def confirm(request: Request, action: str, target: str = "") -> Response:
        if (denied := guard_page(request)) is not None:
            return denied
        if action not in ACTIONS:
            return page(request, "message.html", {"title": "Unknown action", "text": action}, status=400)
        return page(request, "confirm.html", {"action": action, "target": target,
                                              "title": ACTIONS[action].format(target=target)})

    @app.post("/actions/{action}")
    async def act(request: Request, action: str, target: str = Form(""), confirm: str = Form("")) -> Response:
        if not access.may_act(request):
            return page(request, "message.html", {"title": "Not allowed",
                                                  "text": "Log in (and not in read-only mode) to act."}, status=403)
        if action not in ACTIONS or confirm != "yes":
            return page(request, "message.html", {"title": "Not done", "text": "The action was not confirmed."},
                        status=400)
        try:
            outcome = await run_in_threadpool(perform, action, target)
        except Exception as exc:
            outcome = f"failed: {type(exc).__name__}: {redact(str(exc))[:200]}"
        audit(request, action, target, outcome)
        return page(request, "message.html", {"title": ACTIONS[action].format(target=target), "text": outcome})

    def perform(action: str, target: str) -> str:
        if action == "restart":
            if target not in RESTARTABLE:
                raise ValueError(f"{target} may not be restarted from here")
            supervisor = rpc(settings.supervisor_socket, timeout_s=60).supervisor
            supervisor.stopProcess(target)
            supervisor.startProcess(target)
            return f"{target} restarted"
        if action == "backup":
            from services.cli.backups import backup

            path = backup(settings, out=lambda line: None)
            return f"backup {path.name} taken ({path.stat().st_size} bytes), verified"
        from argparse import Namespace

        from services.bot.inbox import COLLECTION as INBOX
        from services.cli.inbox import act as inbox_act

        selector = Namespace(all=target == "all", id=None if target == "all" else target)
        n = inbox_act(db[INBOX], settings, action, selector)
        return f"{n} failed update(s) {'will be handled again' if action == 'retry' else 'dropped'}"

    return app
