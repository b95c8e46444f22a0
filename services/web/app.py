"""The dashboard: what supervisord runs right now, how healthy it is, and which build it is."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from services.common.buildinfo import build_info
from services.common.http import identity_router
from services.common.supervisor import programs, rpc
from services.common.settings import settings_or_exit
from services.common.verdict import read_verdict

PROGRAM = "web"
log = logging.getLogger(__name__)


def create_app() -> FastAPI:
    settings = settings_or_exit(PROGRAM)
    templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
    app = FastAPI(title="botstack dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(identity_router(settings, PROGRAM))

    def read_programs():
        try:
            return programs(rpc(settings.supervisor_socket)), None
        except Exception as exc:  # the page still renders, saying why the list is missing
            log.warning("cannot read supervisord: %s", exc)
            return [], f"{type(exc).__name__}: {exc}"

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> HTMLResponse:
        rows, error = await run_in_threadpool(read_programs)
        return templates.TemplateResponse(
            request,
            "index.html",
            {
                "programs": rows,
                "error": error,
                "build": build_info(settings, PROGRAM),
                "health": read_verdict(settings.run_dir) or {"status": "unknown", "reasons": [], "programs": {}},
            },
            headers={"Cache-Control": "no-store"},
        )

    return app
