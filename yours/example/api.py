"""An API route that reads what the bot stored: a user's notes (/remember). Users' data, so it
asks for the admin token (the platform's AdminDep: 401 without it, 503 when none is set)."""

from fastapi import APIRouter, HTTPException
from pymongo.errors import PyMongoError

from services.api.deps import AdminDep, DbDep
from services.common.collections import CONTEXTS

api_router = APIRouter(prefix="/api/v1", tags=["example"])


@api_router.get("/notes/{user_id}")
async def notes(user_id: int, db: DbDep, _admin: AdminDep) -> dict[str, object]:
    try:
        doc = await db[CONTEXTS].find_one({"_id": user_id}) or {}
    except PyMongoError as exc:
        raise HTTPException(503, detail=f"mongodb: {type(exc).__name__}") from None
    return {"user_id": user_id, "notes": [n["text"] for n in doc.get("notes", []) if isinstance(n, dict)]}
