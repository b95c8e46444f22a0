"""Counts the dashboard and operators ask for first."""

from fastapi import APIRouter, HTTPException
from pymongo.errors import PyMongoError

from services.api.deps import DbDep
from services.common.collections import MESSAGES, USERS

router = APIRouter(prefix="/api/v1", tags=["stats"])


@router.get("/stats")
async def stats(db: DbDep) -> dict[str, int]:
    try:
        return {
            "users": await db[USERS].count_documents({}),
            "messages": await db[MESSAGES].count_documents({}),
        }
    except PyMongoError as exc:
        raise HTTPException(503, detail=f"mongodb: {type(exc).__name__}") from None
