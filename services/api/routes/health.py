"""Liveness is not readiness: /health never touches the database, /ready does."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.api.deps import ClientDep, SettingsDep
from services.common.db import ping

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(client: ClientDep, settings: SettingsDep) -> JSONResponse:
    try:
        await ping(client, settings.ready_timeout_ms / 1000)
    except TimeoutError:
        return JSONResponse(
            {"status": "unavailable", "reason": f"mongodb: no answer to ping within {settings.ready_timeout_ms} ms"},
            status_code=503,
        )
    except Exception as exc:  # any driver error means "not ready", with its reason
        return JSONResponse(
            {"status": "unavailable", "reason": f"mongodb: {type(exc).__name__}: {exc}"[:300]},
            status_code=503,
        )
    return JSONResponse({"status": "ready"})
