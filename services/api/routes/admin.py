"""Admin actions: token-protected, and each one leaves an audit record (who, what, when)."""

from datetime import datetime, timezone

from fastapi import APIRouter, HTTPException, Query, Request
from pymongo import WriteConcern
from pymongo.errors import PyMongoError

from services.api.deps import AdminDep, DbDep
from services.api.schema import AUDIT
from services.common.collections import USERS

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])
DURABLE = WriteConcern(w=1, j=True)


async def _audit(db, who: dict, action: str, target: str, request: Request) -> None:
    await db.get_collection(AUDIT, write_concern=DURABLE).insert_one({
        "at": datetime.now(timezone.utc), "actor": who["actor"], "token": who["token"],
        "action": action, "target": target, "client": request.client.host if request.client else None,
    })


@router.post("/users/{user_id}/block")
async def block_user(user_id: int, who: AdminDep, db: DbDep, request: Request) -> dict[str, object]:
    return await _set_blocked(user_id, True, who, db, request)


@router.post("/users/{user_id}/unblock")
async def unblock_user(user_id: int, who: AdminDep, db: DbDep, request: Request) -> dict[str, object]:
    return await _set_blocked(user_id, False, who, db, request)


async def _set_blocked(user_id: int, blocked: bool, who: dict, db, request: Request) -> dict[str, object]:
    try:
        await _audit(db, who, "block_user" if blocked else "unblock_user", str(user_id), request)
        result = await db[USERS].update_one({"_id": user_id}, {"$set": {"blocked": blocked}})
    except PyMongoError as exc:
        raise HTTPException(503, detail=f"mongodb: {type(exc).__name__}") from None
    if result.matched_count == 0:
        raise HTTPException(404, detail=f"no user {user_id}")
    return {"user_id": user_id, "blocked": blocked}


@router.get("/audit")
async def audit(who: AdminDep, db: DbDep, limit: int = Query(50, ge=1, le=500)) -> list[dict]:
    docs = await db[AUDIT].find({}, {"_id": 0}).sort("at", -1).limit(limit).to_list(limit)
    return [{**d, "at": d["at"].isoformat()} for d in docs]
