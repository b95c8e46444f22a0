"""Readiness: the API can serve, i.e. MongoDB answers a ping within a short timeout and takes a
write. A database that answers but refuses writes (a full disk, Atlas' free-tier quota) stalls
every update and reply while reads and pings look fine: it makes the API unready too, by name. A
write that is only slow (a busy database) does not.

Liveness (/health) is shared with every program (services/common/http.py) and never
touches the database, so a database outage never makes the API look dead. A program that
refuses to start on a bad setting of its own (the bot with a malformed token) does not make the
API unready; /ready names it under "problems" so the operator sees it where they look.
"""

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pymongo.errors import PyMongoError

from services.api.deps import ClientDep, SettingsDep
from services.common.db import database, ping, take_a_write, why

router = APIRouter(tags=["health"])


@router.get("/ready")
async def ready(client: ClientDep, settings: SettingsDep) -> JSONResponse:
    timeout_s = settings.ready_timeout_ms / 1000
    try:
        await ping(client, timeout_s)
    except TimeoutError:
        return _unavailable(f"mongodb: no answer to ping within {settings.ready_timeout_ms} ms", settings)
    except Exception as exc:  # any driver error means "not ready", with its reason
        return _unavailable(f"mongodb: {why(exc)}", settings)
    try:
        await take_a_write(database(client, settings), "api", timeout_s)
    except TimeoutError:
        pass  # it answered the ping: a slow write (a busy database) is not a refusal
    except PyMongoError as exc:
        return _unavailable(f"mongodb refuses writes: {why(exc)}", settings)
    return JSONResponse({"status": "ready", **_problems(settings)})


def _unavailable(reason: str, settings) -> JSONResponse:
    return JSONResponse({"status": "unavailable", "reason": reason, **_problems(settings)}, status_code=503)


def _problems(settings) -> dict:
    problems = [f"{program}: configuration error: {text}" for program, text in sorted(settings.config_problems.items())]
    return {"problems": problems} if problems else {}
