"""Named dependencies for the API's routes."""

from typing import Annotated

from fastapi import Depends, Request
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
