"""Which build answers, and since when."""

from fastapi import APIRouter, Request

from services.api.deps import SettingsDep
from services.common.buildinfo import build_info

router = APIRouter(tags=["version"])


@router.get("/version")
async def version(request: Request, settings: SettingsDep) -> dict[str, object]:
    return build_info(settings, request.app.state.program)
