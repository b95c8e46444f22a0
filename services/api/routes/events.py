"""`POST /api/v1/events`: a write that is acknowledged only once it is durable.

The write concern asks for the journal (j=true): MongoDB answers after the write reached its
on-disk journal, so a success survives even a SIGKILL of mongod. The client's idempotency
`key` is unique: retrying after a lost answer never stores the event twice.
"""

import logging
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, Field
from pymongo import WriteConcern
from pymongo.errors import DuplicateKeyError, PyMongoError

from services.api.deps import DbDep
from services.api.schema import EVENTS
from services.common.db import unavailable, why

log = logging.getLogger("botstack.api.events")
router = APIRouter(prefix="/api/v1", tags=["events"])
DURABLE = WriteConcern(w=1, j=True)


class EventIn(BaseModel):
    key: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    type: str = Field(min_length=1, max_length=64)
    payload: dict[str, Any] = Field(default_factory=dict)


@router.post("/events", status_code=201)
async def create_event(event: EventIn, db: DbDep, response: Response) -> dict[str, object]:
    doc = {**event.model_dump(), "created_at": datetime.now(timezone.utc)}
    try:
        await db.get_collection(EVENTS, write_concern=DURABLE).insert_one(doc)
    except DuplicateKeyError:
        response.status_code = 200
        return {"key": event.key, "created": False}
    except PyMongoError as exc:  # the client retries with the same key: stored once, whenever it works
        log.warning("event %s not stored: %s", event.key, why(exc))
        raise HTTPException(503, detail=f"not stored: {unavailable(exc)}; retry with the same key",
                            headers={"Retry-After": "5"}) from None
    return {"key": event.key, "created": True}


@router.get("/events/count")
async def count_events(db: DbDep) -> dict[str, int]:
    try:
        return {"events": await db[EVENTS].count_documents({})}
    except PyMongoError as exc:
        log.warning("events not counted: %s", why(exc))
        raise HTTPException(503, detail=unavailable(exc, "the count"), headers={"Retry-After": "5"}) from None
