"""Named dependencies for the API's routes."""

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.common.settings import Settings


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _db(request: Request) -> AsyncDatabase:
    return request.app.state.db


def _client(request: Request) -> AsyncMongoClient:
    return request.app.state.mongo


SettingsDep = Annotated[Settings, Depends(_settings)]
DbDep = Annotated[AsyncDatabase, Depends(_db)]
ClientDep = Annotated[AsyncMongoClient, Depends(_client)]


def _admin(settings: Annotated[Settings, Depends(_settings)],
           authorization: Annotated[str | None, Header()] = None,
           x_admin_actor: Annotated[str | None, Header()] = None) -> dict[str, str]:
    """Who is acting, for the audit trail; 401 without the admin token."""
    if settings.admin_token is None:
        raise HTTPException(503, detail="admin API disabled: set BOTSTACK_ADMIN_TOKEN")
    expected = settings.admin_token.get_secret_value()
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, detail="admin token required", headers={"WWW-Authenticate": "Bearer"})
    return {"actor": (x_admin_actor or "admin")[:64], "token": hashlib.sha256(expected.encode()).hexdigest()[:8]}


AdminDep = Annotated[dict[str, str], Depends(_admin)]
