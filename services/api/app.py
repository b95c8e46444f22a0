"""The HTTP API: liveness, readiness, build info, metrics and stats from MongoDB."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from services.api import schema
from services.api.routes import admin, events, health, metrics, stats, webhook
from services.common.bodylimit import BodyLimit
from services.common.db import database, make_client
from services.common.extensions import hooks
from services.common.http import identity_router
from services.common.migrations import migrate_when_reachable
from services.common.settings import settings_or_exit

PROGRAM = "api"


def create_app() -> FastAPI:
    settings = settings_or_exit(PROGRAM)
    schema_version: dict[str, int] = {"api": 0}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The client connects lazily: /health answers even while MongoDB is unreachable.
        client = make_client(settings, PROGRAM)
        app.state.mongo = client
        app.state.db = database(client, settings)
        # Forwards webhooks to the bot on 127.0.0.1: straight there, never through a proxy set
        # for the way out (HTTP_PROXY/ALL_PROXY without NO_PROXY for loopback would swallow them).
        app.state.http = httpx.AsyncClient(timeout=10.0, trust_env=False)
        migrating = asyncio.create_task(
            migrate_when_reachable(app.state.db, PROGRAM, schema.STEPS, lambda v: schema_version.update(api=v))
        )
        try:
            yield
        finally:
            migrating.cancel()
            await app.state.http.aclose()
            await client.close()

    app = FastAPI(
        title="botstack API",
        version=settings.version,
        lifespan=lifespan,
        debug=settings.debug,
        docs_url="/docs" if settings.env == "development" else None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.include_router(identity_router(settings, PROGRAM, extra=lambda: {"schema": dict(schema_version)}))
    app.include_router(health.router)
    app.include_router(stats.router)
    app.include_router(events.router)
    app.include_router(admin.router)
    app.include_router(metrics.router)
    app.include_router(webhook.router)
    for _name, router in hooks(settings, "api_router"):  # your routes: services/common/extensions.py
        app.include_router(router)
    return app
