"""Readiness: the API can serve, i.e. MongoDB answers a ping within a short timeout.

Liveness (/health) is shared with every program (services/common/http.py) and never
touches the database, so a database outage never makes the API look dead. A program that
refuses to start on a bad setting of its own (the bot with a malformed token) does not make the
API unready; /ready names it under "problems" so the operator sees it where they look.
"""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.api.deps import ClientDep, SettingsDep
from services.common.db import ping

router = APIRouter(tags=["health"])


@router.get("/ready")
async def ready(client: ClientDep, settings: SettingsDep) -> JSONResponse:
    try:
        await ping(client, settings.ready_timeout_ms / 1000)
    except TimeoutError:
        reason = f"mongodb: no answer to ping within {settings.ready_timeout_ms} ms"
    except Exception as exc:  # any driver error means "not ready", with its reason
        reason = f"mongodb: {type(exc).__name__}: {exc}"[:300]
    else:
        return JSONResponse({"status": "ready", **_problems(settings)})
    return JSONResponse({"status": "unavailable", "reason": reason, **_problems(settings)}, status_code=503)


def _problems(settings) -> dict:
    problems = [f"{program}: configuration error: {text}" for program, text in sorted(settings.config_problems.items())]
    return {"problems": problems} if problems else {}
